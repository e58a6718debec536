"""Speaker-disjoint, duration-balanced, stable train/val/test split.

How a speaker (or, without a speaker column, a recording) gets its split:
- Speakers already listed in `<splits_dir>/assignments.tsv` keep their split. This ledger is what makes the split
  stable: adding speakers to the manifest never moves an existing one, so an earlier run's test set stays the test set.
  Speakers that leave the manifest stay in the ledger, so they come back to the same split.
- New speakers are taken in an order drawn from the seed, and each goes to the split furthest below its target share of
  the total audio duration. The result is deterministic for a seed, and each split ends within about one speaker's share
  of its target.
Delete the ledger (or use a new output folder) to draw a fresh split.
"""
from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import atomic, manifest as manifest_io, text
from lib.config import SPLITS, Params, SplitParams, resolve

LEDGER = "assignments.tsv"
REPORT = "split_report.json"
REJECTED = "rejected.tsv"
HELDOUT = "heldout"  # the held-out manifest's segments, beside the splits
VOICESHIFT = "voiceshift"  # the voice-shift manifest's segments, likewise
MIN_GROUPS_FOR_BALANCE = 20
RATIO_WARNING_POINTS = 5.0


@dataclass
class SplitResult:
    manifest: manifest_io.Manifest
    assignment: dict[str, str]  # group -> split, for the groups in this manifest
    report: dict
    kept_from_ledger: int  # groups whose split an earlier run had fixed

    def segments(self, split: str) -> list[manifest_io.Segment]:
        return [s for s in self.manifest.segments if self.assignment[s.group] == split]

    def table(self) -> pd.DataFrame:
        """One row per split: hours, segments, speakers, code-mixing, achieved against target share."""
        return pd.DataFrame(self.report["splits"]).T

    def segment_frame(self) -> pd.DataFrame:
        """One row per valid segment with its split, for plots."""
        return _segment_frame((self.assignment[s.group], s) for s in self.manifest.segments)

    def rejected_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"line": r.line, "reason": "; ".join(r.reasons), "row": r.raw}
                             for r in self.manifest.rejected], columns=["line", "reason", "row"])


def trigram_overlap(report: dict) -> dict[str, float | None]:
    """The share (%) of each scored set's word trigrams that occur in the training transcripts, from
    `split_report.json`: the test split, and the held-out and voice-shift sets (None without one)."""
    return {"test": report["splits"]["test"]["trigram_overlap_with_train"],
            **{name: report.get(name, {}).get("trigram_overlap_with_train") for name in (HELDOUT, VOICESHIFT)}}


def read_segment_frame(splits_dir: Path) -> pd.DataFrame:
    """`SplitResult.segment_frame` rebuilt from the written split files (for later stages)."""
    return _segment_frame((name, s) for name in SPLITS
                          for s in manifest_io.read(splits_dir / f"{name}.tsv", check_audio=False).segments)


def _segment_frame(pairs) -> pd.DataFrame:
    return pd.DataFrame([{"id": s.id, "split": split, "group": s.group, "duration": s.duration,
                          "code_mixing_index": s.code_mixing_index, "has_english": "en" in s.lang_tags}
                         for split, s in pairs])


def run(params: Params) -> SplitResult:
    """Stage 01: validate the manifest, split it, and write the split files, the ledger and the report; validate the
    held-out and the voice-shift manifests, when the params name them, into `heldout.tsv` and `voiceshift.tsv`, and
    each retention set into `retention-<name>.tsv`."""
    manifest = manifest_io.read(params.manifest_path, on_error=params.on_error)
    result = split_and_write(manifest, params.split, params.seed, params.paths.splits)
    for name, path in ((HELDOUT, params.heldout_manifest), (VOICESHIFT, params.voiceshift_manifest)):
        if path:
            result.report[name] = write_heldout(resolve(path), result, params.on_error, params.paths.splits, name)
    for retained, name in zip(params.evaluation.retention, params.retention_splits):
        result.report.setdefault("retention", {})[retained.name] = {
            **write_heldout(resolve(retained.manifest), result, params.on_error, params.paths.splits, name),
            "language": retained.language}
    if params.heldout_manifest or params.voiceshift_manifest or params.evaluation.retention:
        atomic.write_json(params.paths.splits / REPORT, result.report)
    return result


def write_heldout(path: Path, result: SplitResult, on_error: str, splits_dir: Path, name: str = HELDOUT) -> dict:
    """Validate a manifest kept apart from the split (held-out, or a retention set's) into `<name>.tsv` (its bad rows
    into `<name>_rejected.tsv`) and say how held out it is: the speakers and transcripts it shares with the manifest
    that is split, and how much of its wording (word trigrams) occurs in the train split."""
    heldout = manifest_io.read(path, on_error=on_error)
    if not heldout.segments:
        raise manifest_io.ManifestError(heldout.problems or [
            manifest_io.Problem(heldout.path, 0, None, None, f"no valid rows in the {name} manifest")])
    manifest_io.write_segments(splits_dir / f"{name}.tsv", heldout.columns, heldout.segments)
    manifest_io.write_rejected(splits_dir / f"{name}_rejected.tsv", heldout.columns, heldout.rejected)
    speakers = {s.group for s in result.manifest.segments}
    transcripts = {s.transcript for s in result.manifest.segments}
    return {**heldout.summary(), "shared_speakers": sorted({s.group for s in heldout.segments} & speakers),
            "shared_transcripts": sum(s.transcript in transcripts for s in heldout.segments),
            "trigram_overlap_with_train": text.ngram_overlap([s.transcript for s in result.segments("train")],
                                                             [s.transcript for s in heldout.segments])}


def split_and_write(manifest: manifest_io.Manifest, ratios: SplitParams, seed: int, splits_dir: Path) -> SplitResult:
    if not manifest.segments:
        raise manifest_io.ManifestError(manifest.problems or [
            manifest_io.Problem(manifest.path, 0, None, None, "no valid rows to split")])
    ledger_path = splits_dir / LEDGER
    ledger = read_ledger(ledger_path)
    durations = group_durations(manifest.segments)
    assignment = assign(durations, ratios, seed, ledger)
    result = SplitResult(manifest, assignment, {}, sum(g in ledger for g in durations))
    result.report = build_report(result, ratios, seed, durations)

    for name in SPLITS:
        manifest_io.write_segments(splits_dir / f"{name}.tsv", manifest.columns, result.segments(name))
    manifest_io.write_rejected(splits_dir / REJECTED, manifest.columns, manifest.rejected)
    write_ledger(ledger_path, {**ledger, **assignment})
    atomic.write_json(splits_dir / REPORT, result.report)
    return result


def group_durations(segments: list[manifest_io.Segment]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for seg in segments:
        totals[seg.group] += seg.duration
    return dict(totals)


def assign(durations: dict[str, float], ratios: SplitParams, seed: int, ledger: dict[str, str]) -> dict[str, str]:
    """Group -> split: ledger entries kept, new groups in seeded order to the split with the largest deficit."""
    total = sum(durations.values())
    target = {name: getattr(ratios, name) * total for name in SPLITS}
    filled = dict.fromkeys(SPLITS, 0.0)
    assignment = {}
    for group, seconds in durations.items():
        if group in ledger:
            assignment[group] = ledger[group]
            filled[ledger[group]] += seconds
    new = sorted((g for g in durations if g not in ledger), key=lambda g: _draw(seed, g))
    for group in new:
        best = max(SPLITS, key=lambda name: target[name] - filled[name])  # ties go to the earlier split
        assignment[group] = best
        filled[best] += durations[group]
    return assignment


def _draw(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\0{group}".encode("utf-8")).hexdigest()


def read_ledger(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    ledger = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        group, _, split = line.partition("\t")
        if split not in SPLITS:
            raise ValueError(f"{path}, line {number}: split {split!r} is not one of {', '.join(SPLITS)}")
        ledger[group] = split
    return ledger


def write_ledger(path: Path, ledger: dict[str, str]) -> None:
    atomic.write_tsv(path, ["group", "split"], sorted(ledger.items()))


def build_report(result: SplitResult, ratios: SplitParams, seed: int, durations: dict[str, float]) -> dict:
    """The contents of split_report.json: the same bytes for the same manifest, seed and ledger."""
    manifest = result.manifest
    total = sum(durations.values())
    per_split = {}
    train_transcripts = [s.transcript for s in result.segments("train")]
    for name in SPLITS:
        segs = result.segments(name)
        seconds = sum(s.duration for s in segs)
        per_split[name] = {
            "hours": round(seconds / 3600, 4),
            "segments": len(segs),
            "speakers": len({s.group for s in segs}),
            "with_translation": sum(bool(s.translation) for s in segs),
            "code_mixing_index_mean": round(statistics.fmean(s.code_mixing_index for s in segs), 2) if segs else 0.0,
            "segments_with_english": sum("en" in s.lang_tags for s in segs),
            "achieved_ratio": round(seconds / total, 4),
            "target_ratio": getattr(ratios, name),
            "trigram_overlap_with_train": None if name == "train" else
            text.ngram_overlap(train_transcripts, [s.transcript for s in segs]),
        }
    warnings = []
    groups = len(durations)
    kind = "speakers" if any(s.speaker for s in manifest.segments) else "recordings"
    if groups < MIN_GROUPS_FOR_BALANCE:
        warnings.append(f"only {groups} {kind}: split shares can be far from the targets "
                        f"(balance holds from {MIN_GROUPS_FOR_BALANCE} on)")
    for name, stats in per_split.items():
        off = 100 * abs(stats["achieved_ratio"] - stats["target_ratio"])
        if stats["target_ratio"] > 0 and stats["segments"] == 0:
            warnings.append(f"{name} is empty")
        elif off > RATIO_WARNING_POINTS:
            warnings.append(f"{name} holds {100 * stats['achieved_ratio']:.1f} % of the audio, "
                            f"{off:.1f} points from its target {100 * stats['target_ratio']:.0f} %")
        if stats["speakers"] == 1:
            warnings.append(f"{name} holds a single {kind[:-1]}: its scores will say more about that {kind[:-1]} "
                            "than about the model")
    largest = max(durations, key=durations.get)
    if durations[largest] / total > 0.1:
        warnings.append(f"one group holds {100 * durations[largest] / total:.0f} % of the audio: {largest}")
    if manifest.rejected:
        warnings.append(f"{len(manifest.rejected)} row(s) rejected: see {REJECTED}")
    return {
        "manifest": manifest.summary(),
        "manifest_sha256": manifest.sha256,
        "seed": seed,
        "disjoint_by": kind,
        "groups": groups,
        "splits": per_split,
        "notes": manifest.notes,
        "warnings": warnings,
    }
