"""Stage 05: score each trained model, for both tasks, on the test split and the held-out set (and each starting
model, where `evaluation.untrained` names the set).

Each model decodes the set's segments (all, or an `evaluation.segments` sample spread over the speakers) in batches
with the language and task forced (Whisper: `<|vi|>` + `<|transcribe|>` or `<|translate|>`; E2E: `vi_VN` or `en_XX`
as the first token), with the beam size, batch size and length of the params' `evaluation` section. Transcripts are
scored by WER, CER and the code-switching views, translations by BLEU and chrF (see lib.metrics), all with 95 %
bootstrap intervals; on the test split also whole recordings (long-form: the segments joined with pauses of silence
or noise, cut at speech by the VAD unless `evaluation.vad` is off, with the words written in the pauses counted) and
hallucinations (loops, run-aways, and what the model writes on 05's non-speech set, for the starting model too).
Whisper's two guards are applied to each model's one decode: the temperature fallback (`compression_ratio_threshold`,
`fallback_temperatures`) and the no-speech gate (`no_speech_threshold`, `logprob_threshold`); scores with and
without the gate are both reported. Writes, under `results/`:

- `<model>_metrics.json` (`<model>_heldout_metrics.json`, `<model>_untrained_heldout_metrics.json`, ...): one schema
  for every model (per task: metric value, interval and count; sample counts; decoding settings; model path; timing;
  long-form and hallucination entries; the targets marked pass or fail);
- `predictions_<model>_<task>.tsv` (and per set, likewise): every scored segment's reference and hypothesis with its
  errors;
- `<model>_<format>_parity.json` (`export_parity`): the trained model's exports (Whisper: CTranslate2, as
  `whisper.ct2_parity` asks) decoding the same test segments, against the model they came from.

From a shell (the params file gives the split, the decoding settings and the targets; `params/dev.yaml` by default):

    python -m lib.evaluate --model_dir outputs/dev/whisper/final --model_type whisper --output outputs/dev/results
    python -m lib.evaluate --params params/prod.yaml --model_type e2e
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from lib import atomic, audio, config, decoding, families, features, longform, manifest as manifest_io, metrics, \
    model_card, nonspeech, packing, precision, remember, stored, tasks, text
from lib.audio import SAMPLE_RATE
from lib.families.base import local_or_hub

log = logging.getLogger("lib.evaluate")


class ModelMissing(FileNotFoundError):
    """No trained model in the folder to evaluate."""


def evaluate(params: config.Params, name: str, model_dir: str | Path | None = None,
             output_dir: str | Path | None = None, split: str = "test", untrained: bool = False) -> dict:
    """Decode and score a split (`test`, or the held-out segments) with a model of the family `name`: the trained one
    in `model_dir` (default `<name>/final`), or with `untrained` the run's starting model. Writes its metrics JSON and
    predictions, named by `config.result_name`; returns the metrics."""
    hp, paths = params.evaluation, params.paths
    family = families.get(name)
    output_dir = Path(output_dir) if output_dir else paths.results
    began = time.perf_counter()
    own = paths.model(name) / "final"
    model_dir = None if untrained else Path(model_dir) if model_dir else own
    # the test split's decode is the reference an export's parity is checked against: the model itself decodes it
    reference = split == "test" and not untrained or (model_dir is not None and model_dir.resolve() != own.resolve())
    export = None if reference else evaluation_export(params, name)
    whole = loaded(params, name, model_dir, export["quantization"] if export else "")  # recordings, non-speech
    segmented = whole if export is None or export_decodes_segments(export) else loaded(params, name, model_dir)
    bundle, decoder, model_path, device, runtime, identity = segmented

    test = family.prepare_features(paths, bundle, splits=(split,))[split].load()
    chosen = sample(test["speaker"], hp.segments)
    inputs = test.with_format("numpy", columns=[family.input_column])
    columns = {c: test[c] for c in features.ROW_COLUMNS}
    rows = {c: [values[i] for i in chosen] for c, values in columns.items()}
    label = config.result_name(name, split, untrained)
    retained = hp.retention_set(split)
    language = retained.language if retained else tasks.SOURCE_LANGUAGE
    options = [decoding.DecodingOptions.for_test(task, hp, language) for task in tasks.TASKS
               if any(rows[tasks.TEXT_COLUMN[task]])]  # a set without translations (plain English) is transcribed
    over = [rows["id"][i] for i in decoding.over_limit(decoder, rows["duration"])]
    if over:
        raise decoding.DecodingError(f"{label}: {len(over)} segment(s) longer than the {decoder.input_limit:g} s the "
                                     f"model reads in one input ({', '.join(over[:5])}): cut them shorter in the "
                                     "manifest, or score the recordings whole (long-form)")
    found = remember.decode(identity, decoder, [inputs[i][family.input_column] for i in chosen], rows["duration"],
                            options)
    decoded, seconds = found.outputs, found.seconds
    log.info("%s: %d segments, both tasks from one encoder pass, in %.1f s%s", label, len(chosen), seconds,
             " (an earlier run's decode, read)" if found.reused else "")
    summary = {
        "model_type": name, "label": families.model_label(params, name),
        "model": "untrained" if untrained else "trained", "model_path": model_path,
        "split": split, "split_file": str(paths.splits / f"{split}.tsv"), "segments": len(chosen),
        "segments_in_split": len(test), "language": language,
        "decoding": {"num_beams": hp.num_beams, "batch_size": hp.batch_size, "max_length": hp.max_length,
                     "no_speech_threshold": hp.no_speech_threshold, "logprob_threshold": hp.logprob_threshold,
                     "compression_ratio_threshold": hp.compression_ratio_threshold,
                     "fallback_temperatures": list(hp.fallback_temperatures),
                     **runtime,
                     "forced": {o.task: family.forced_prefix(o.task, language) for o in options},
                     "seconds": round(seconds, 2), "segments_per_second": round(len(chosen) / seconds, 2),
                     "reused": found.reused},
        "bootstrap": {"resamples": hp.bootstrap_resamples, "seed": params.seed,
                      "interval": "95 % percentile bootstrap over utterances"},
        "device": str(device), "tasks": {}, "hallucination": {},
    }
    for o in options:
        frame, summary["tasks"][o.task], summary["hallucination"][o.task] = score(o.task, rows, decoded[o.task], o,
                                                                                  params)
        atomic.write_frame(output_dir / f"predictions_{label}_{o.task}.tsv", frame)
    if (split == "test" or (untrained and not retained)) and not left_to_parity(params, name, model_dir, output_dir,
                                                                                split):
        summary["hallucination"]["nonspeech"] = decoded_by(
            nonspeech_set(whole.decoder, options, paths.splits / f"{split}.tsv", whole.identity), whole)
    if split == "test" and hp.long_form_seconds:
        summary["long_form"] = long_form(decoder, rows, params, split, options)
    if split == params.honest_split and not untrained and hp.long_form_seconds:
        summary["recordings"] = decoded_by(recordings(name, whole.decoder, rows, params, split, options), whole)
    if export:  # what the export decoded of this set, and how it compared with the model on the test split
        parts = [part for part, done in (("segments", segmented is whole),
                                         ("non-speech clips", "nonspeech" in summary["hallucination"]),
                                         ("recordings", "recordings" in summary)) if done]
        summary["export"] = {**whole.runtime, "decoded": parts,
                             "parity_on_test": {k: export[k] for k in ("delta_wer", "delta_bleu", "segments",
                                                                       "segments_per_second",
                                                                       "hf_segments_per_second")}}
    summary["targets"] = targets(summary, hp)
    summary["seconds"] = round(time.perf_counter() - began, 1)
    summary["evaluated_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic.write_json(output_dir / f"{label}_metrics.json", summary)
    if not untrained and output_dir == paths.results and model_dir == paths.model(name) / "final":
        model_card.write(params, name)  # the run's own model: its card gets the scores
    return summary


def generalization(params: config.Params) -> dict[str, dict]:
    """Every family's trained model on the held-out and the voice-shift segments (those the params name), and every
    family's starting model on the sets of `evaluation.untrained`: result name -> metrics. The trained models'
    test-split metrics come from `evaluate`."""
    results = {}
    for name in params.family_names:
        for split in params.eval_sets[1:]:
            results[config.result_name(name, split)] = evaluate(params, name, split=split)
        for split in params.evaluation.untrained:
            results[config.result_name(name, split, True)] = evaluate(params, name, split=split, untrained=True)
    return results


def retention(params: config.Params) -> dict[str, dict]:
    """Every family's trained and starting model on each of `evaluation.retention`'s plain-language sets, the
    transcripts decoded in the set's language: result name -> metrics (what fine-tuning cost, `report.retention`)."""
    return {config.result_name(name, split, untrained): evaluate(params, name, split=split, untrained=untrained)
            for name in params.family_names for split in params.retention_splits for untrained in (False, True)}


class Loaded(NamedTuple):
    """A model as 05 decodes it: its bundle (the export's runtime model, tokenizer and feature extractor for an
    export), its decoder, what its metrics call it, its device, the runtime its metrics record, and for a starting
    model whose decodes are kept (`evaluation.reuse_starting_decodes`) what they are kept by
    (`remember.model_identity`)."""

    bundle: families.Bundle
    decoder: decoding.Decoder
    path: str
    device: torch.device
    runtime: dict
    identity: str | None = None


def loaded(params: config.Params, name: str, model_dir: Path | None, export: str = "") -> Loaded:
    """The model 05 scores, on its device in the evaluation's precision, and its decoder: the trained one in
    `model_dir`, or the run's starting model (None); with `export` (a quantization), its export decoded by the
    export's runtime instead (the trained model's was written by `export_parity`, the starting model's is made
    here). Each is loaded once per process (05 scores one model on every set) and again only when its folder is
    written anew."""
    family, hp = families.get(name), params.section(name)
    names = family.model_names(hp)
    key = (name, str(model_dir.resolve()) if model_dir is not None else "untrained", export,
           _modified(model_dir / "config.json") if model_dir is not None else (tuple(names.values()), params.seed))
    if key not in _LOADED:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        path = ", ".join(names.values()) if model_dir is None else str(model_dir)
        if export:
            source, out = _export_paths(params, name, model_dir, export)
            decoder = family.load_export(out, device.type) if source is None else \
                family.export(source, out, export, device.type).decoder
            bundle = families.Bundle(decoder.model, decoder.tokenizer, decoder.extractor)
            runtime = {"runtime": family.export_runtime, "dtype": decoder.model.compute_type, "export": str(out)}
        else:
            bundle = family.starting_model(hp, params.paths, params.seed) if model_dir is None \
                else load(family, model_dir)
            bundle.model.to(device, precision.dtype(params.evaluation.precision, device))
            decoder = family.decoder(bundle)
            runtime = {"runtime": "transformers", "dtype": str(bundle.model.dtype).removeprefix("torch.")}
        older = [k for k in _LOADED if k[:3] == key[:3]]  # an older copy of the same folder
        for stale in older or list(_LOADED)[:max(0, len(_LOADED) + 1 - KEPT)]:  # or the longest kept
            del _LOADED[stale]
        identity = remember.model_identity(bundle.model, runtime | {"device": str(device)}) \
            if model_dir is None and params.evaluation.reuse_starting_decodes else None
        _LOADED[key] = Loaded(bundle, decoder, path, device, runtime, identity)
    return _LOADED[key]


KEPT = 6  # models `loaded` keeps: a run's two families, trained and as they started, and an export of each
_LOADED: dict[tuple, Loaded] = {}  # `loaded`'s models, by family, folder and export, oldest first


def _export_paths(params: config.Params, name: str, model_dir: Path | None, export: str) -> tuple[str | None, Path]:
    """Where the `export` of a model lives, and what to convert it from (None: `export_parity` already wrote it, for
    the trained model in `model_dir`; the starting model's is converted anew beside the run's models)."""
    family, hp = families.get(name), params.section(name)
    if model_dir is not None:
        return None, family.export_folder(model_dir, export)
    family.make_missing(hp, params.paths, params.seed)
    (starting,) = family.model_names(hp).values()
    return local_or_hub(starting), params.paths.model(name) / f"untrained-{family.export_format}-{export}"


def evaluation_export(params: config.Params, name: str) -> dict | None:
    """The parity row of the export that decodes the family's sets after the test split (its section's
    `ct2_evaluate`, see `Family.evaluation_export`), when 05's parity check of it on the test split is newer than the
    trained model and its WER and BLEU are within `evaluation.export_tolerance` of the model's, or differ by more
    only within chance (the difference's paired 95 % interval holds zero: on a few segments one word moves a score
    by a point); None (the model itself decodes) otherwise, with a warning saying why."""
    wanted = families.get(name).evaluation_export(params.section(name))
    if not wanted:
        return None
    parity_file = stored.parity_path(params, name)
    final = params.paths.model(name) / "final" / "config.json"
    parity = parity_file.read_text(encoding="utf-8") \
        if parity_file.exists() and _modified(parity_file) >= _modified(final) else ""
    row = _holding_parity(name, wanted, parity, params.evaluation.export_tolerance)
    return dict(row) if row else None


@functools.lru_cache(maxsize=8)
def _holding_parity(name: str, wanted: str, parity: str, tolerance: float) -> dict | None:
    """`evaluation_export`'s answer for one parity file's text (empty: none newer than the model), worked out and said
    once per process: 05 asks before every later set, and its report would repeat the same warning for each."""
    rows = json.loads(parity)["rows"] if parity else []
    row = next((r for r in rows if r["quantization"] == wanted), None)
    if row is None:
        log.warning("%s: no parity check of the %s export newer than the model (run export_parity first): the "
                    "model itself decodes every set", name, wanted)
        return None
    beyond = [metric for metric in ("wer", "bleu") if abs(row[f"delta_{metric}"]) > tolerance]
    shown = [metric for metric in beyond if not _within_chance(row.get(f"delta_{metric}_ci95"))]
    said = ", ".join(f"{row[f'delta_{m}']:+.2f} {m.upper()} {_interval(row.get(f'delta_{m}_ci95'))}"
                     for m in ("wer", "bleu"))
    if shown:
        log.warning("%s: the %s export differs from the model by %s on the test split (more than %g points, and "
                    "beyond chance: the paired interval excludes zero): the model itself decodes every set", name,
                    wanted, said, tolerance)
        return None
    if beyond:
        log.info("%s: the %s export differs from the model by %s on %d test segments: more than %g points, within "
                 "chance (the paired interval holds zero): it decodes the other sets", name, wanted, said,
                 row["segments"], tolerance)
    return row


def decoded_by(part: dict, model: Loaded) -> dict:
    """A set's part (its non-speech clips, its recordings) with the runtime that decoded it in its `decoding`."""
    return part | {"decoding": part["decoding"] | model.runtime}


def export_decodes_segments(row: dict) -> bool:
    """Whether the export that decodes a family's later sets (`evaluation_export`) decodes their segments too, or
    only their recordings and non-speech clips: where it decoded the test segments at least as fast as the model
    did. Whole recordings and non-speech clips go to the export either way: ctranslate2 writes long outputs, one
    window at a time, about three times as fast. On a CPU that computes bfloat16, the model's encoder (most of a
    short segment's cost) is the faster (docs/performance.md)."""
    faster = row["segments_per_second"] >= row["hf_segments_per_second"]
    if not faster:
        log.info("the %s export decoded the test segments slower than the model (%.2f against %.2f a second): the "
                 "model decodes the later sets' segments, the export their recordings and non-speech clips",
                 row["quantization"], row["segments_per_second"], row["hf_segments_per_second"])
    return faster


def _within_chance(interval: list[float] | None) -> bool:
    """Whether a paired 95 % interval of a difference holds zero (none given: the difference stands)."""
    return bool(interval) and None not in interval and interval[0] <= 0 <= interval[1]


def _interval(interval: list[float] | None) -> str:
    return f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval and None not in interval else "(no interval)"


def left_to_parity(params: config.Params, name: str, model_dir: Path | None, output_dir: Path, split: str) -> bool:
    """Whether the run's trained model leaves its non-speech set on the test split to `export_parity`, which decodes
    it with the export anyway: when the family's section names an export to evaluate with (`export_parity` has the
    model decode it when the export's parity fails)."""
    own = params.paths.model(name) / "final"
    return (split == "test" and model_dir is not None and model_dir.resolve() == own.resolve()
            and output_dir == params.paths.results and bool(families.get(name).evaluation_export(params.section(name))))


def _modified(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def load(family: families.Family, model_dir: Path) -> families.Bundle:
    """The trained model in `model_dir`; ModelMissing naming the stage to run when there is none."""
    if not (model_dir / "config.json").exists():
        raise ModelMissing(f"{model_dir}: no trained {family.name} model there; run {family.notebook} first")
    return family.load_trained(model_dir)


def score(task: str, rows: dict[str, list], decoded: list[decoding.Output], options: decoding.DecodingOptions,
          params: config.Params):
    """One task's scores on the rows that have its text, as the no-speech gate of `options` leaves the outputs: the
    predictions table (with the no-speech probability and average log-probability, where the decoder gives them), the
    metrics (with how many outputs the gate emptied) and the hallucination counts."""
    hp = params.evaluation
    column = tasks.TEXT_COLUMN[task]
    picked = [i for i, t in enumerate(rows[column]) if t]
    decoded = [decoded[i] for i in picked]
    hypotheses, silenced = [o.gated(options) for o in decoded], [o.silenced(options) for o in decoded]
    references = [rows[column][i] for i in picked]
    tags = [rows["lang_tags"][i].split() for i in picked]
    frame = pd.DataFrame({c: [rows[c][i] for i in picked] for c in ("id", "speaker", "duration")}).round(3)
    if task == "transcribe":
        scored = metrics.transcript_scores(references, hypotheses, tags, hp.bootstrap_resamples, params.seed)
        extra = {"top_substitutions": metrics.substitution_table(scored.substitutions).to_dict("records")}
    else:
        scored = metrics.translation_scores(references, hypotheses, hp.bootstrap_resamples, params.seed)
        frame["code_mixing_index"] = [round(text.code_mixing_index(t), 1) for t in tags]
        extra = {}
    frame = pd.concat([frame, scored.utterances], axis=1)
    written = [o.text for o in decoded]
    if decoded and decoded[0].no_speech_prob is not None:
        frame["no_speech_prob"] = np.round([o.no_speech_prob for o in decoded], 4)
        frame["avg_logprob"] = np.round([o.avg_logprob for o in decoded], 3)
        frame["silenced"] = silenced
        frame["written"] = [" ".join(t.split()) for t in written]  # before the gate
    frame["reference"], frame["hypothesis"] = references, [" ".join(h.split()) for h in hypotheses]
    ungated = ({"wer": metrics.wer(references, written)} if task == "transcribe" else
               {"bleu": metrics.bleu(references, written)})  # the same decode, the gate off
    gate = {"no_speech_threshold": options.no_speech_threshold, "logprob_threshold": options.logprob_threshold,
            "silenced": sum(silenced), "ungated": {k: round(v, 2) for k, v in ungated.items()},
            "fallback": {"decoded_again": sum(o.retried for o in decoded),
                         "sampled_kept": sum(o.temperature > 0 for o in decoded)}}
    return (frame, {"samples": len(picked), **scored.to_dict(), **extra, "gate": gate},
            metrics.hallucinations(references, hypotheses))


def _written(texts: list[str]) -> list[decoding.Output]:
    """Outputs of texts alone (a whole recording's, its pieces joined): scored as they are."""
    return [decoding.Output(t) for t in texts]


BABBLE_SEGMENTS = 12  # speech segments of the scored set mixed into the non-speech set's two babble kinds


def nonspeech_set(decoder: decoding.Decoder, options: list[decoding.DecodingOptions], split_file: Path,
                  identity: str | None = None) -> dict:
    """What the model writes, per task, on 05's non-speech set (lib.nonspeech.evaluation_set, its babble made from
    the first segments of `split_file`), where any text at all is made up: per clip the text as written and as the
    no-speech gate leaves it, and the share of clips with text, all kinds and the kinds training never sees. A clip
    longer than the model reads in one input is scored on its first `input_limit` seconds. With `identity`, an
    earlier run's decode of the same model is read (`remember.decode`)."""
    clips = nonspeech_clips(split_file)
    limit = decoder.input_limit
    waves = [c.wave[:int(limit * SAMPLE_RATE)] if limit else c.wave for c in clips]
    done = remember.decode(identity, decoder, [decoder.input(w) for w in waves],
                           [len(w) / SAMPLE_RATE for w in waves], options)
    decoded, seconds = done.outputs, done.seconds
    held_out = [c.kind in nonspeech.HELD_OUT_KINDS for c in clips]
    outputs = [{"kind": c.kind, "name": c.name, "held_out_kind": h, "tasks": {}} for c, h in zip(clips, held_out)]
    shares = {}
    for o in options:
        found = decoded[o.task]
        texts, gated = [f.text for f in found], [f.gated(o) for f in found]
        for row, output, shown in zip(outputs, found, gated):
            row["tasks"][o.task] = {"text": output.text, "gated": shown}
            if output.no_speech_prob is not None:
                row["tasks"][o.task] |= {"no_speech_prob": round(output.no_speech_prob, 4),
                                         "avg_logprob": round(output.avg_logprob, 3)}
        shares[o.task] = {"with_text": _share(texts), "with_text_gated": _share(gated),
                          "held_out_kinds_with_text_gated": _share([g for g, h in zip(gated, held_out) if h])}
    first = decoded[options[0].task]
    return {"clips": len(clips), "kinds": len({c.kind for c in clips}),
            "held_out_kinds": list(nonspeech.HELD_OUT_KINDS),
            "gated_by": {"no_speech_threshold": options[0].no_speech_threshold,
                         "logprob_threshold": options[0].logprob_threshold,
                         "applies": bool(first) and first[0].no_speech_prob is not None},
            "decoding": {"seconds": round(seconds, 2), "reused": done.reused}, "tasks": shares, "outputs": outputs}


def nonspeech_clips(split_file: Path) -> tuple[nonspeech.Clip, ...]:
    """05's non-speech set with its babble from the first segments of `split_file`: made once per version of the file,
    and shared by every model 05 scores on it."""
    return _clips_of(str(split_file), split_file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _clips_of(split_file: str, modified_ns: int) -> tuple[nonspeech.Clip, ...]:
    segments = manifest_io.read(split_file).segments[:BABBLE_SEGMENTS]
    return tuple(nonspeech.evaluation_set([audio.load(s.audio, s.start, s.end) for s in segments]))


def _share(texts: list[str]) -> float:
    """Percent of `texts` that are not empty."""
    return round(100 * sum(bool(t.strip()) for t in texts) / len(texts), 1) if texts else 0.0


PAUSE_SECONDS = (2.0, 10.0)  # the pauses of silence or noise between the segments long-form joins


def long_form(decoder: decoding.Decoder, rows: dict[str, list], params: config.Params, split: str,
              options: list[decoding.DecodingOptions]) -> dict:
    """The scored segments of each speaker, in order, joined into recordings of up to `evaluation.long_form_seconds`
    with a pause of PAUSE_SECONDS of silence or noise between each two; decoded whole (lib.longform: cut at speech by
    the VAD, or with `evaluation.vad` off window by window) and scored against the joined references: the same words
    as the segment scores, heard as whole recordings. Words written inside the pauses are counted."""
    hp = params.evaluation
    by_id = {s.id: s for s in manifest_io.read(params.paths.splits / f"{split}.tsv").segments}
    files = packing.pack([by_id[i] for i in rows["id"]], hp.long_form_seconds, stream=lambda seg: seg.group,
                         gap=PAUSE_SECONDS[1])
    recordings = [packing.join(f, SAMPLE_RATE, nonspeech.gap_filler(f"long-form-{f[0].id}", *PAUSE_SECONDS))
                  for f in files]
    pauses = [list(zip(ends[:-1], starts[1:])) for _, starts, ends in recordings]
    columns = [packing.window_columns(f) for f in files]
    joined = {c: [row[c] for row in columns] for c in ("id", "speaker", "transcript", "translation", "lang_tags")}
    joined["duration"] = [round(len(wave) / SAMPLE_RATE, 3) for wave, _, _ in recordings]
    began = time.perf_counter()
    decoded = longform.decode(decoder, [wave for wave, _, _ in recordings], options, hp.vad)
    seconds = time.perf_counter() - began
    result = {"files": len(files), "segments_joined": sum(len(f) for f in files),
              "audio_seconds": round(sum(joined["duration"]), 1), "seconds_at_most": hp.long_form_seconds,
              "longest_seconds": max(joined["duration"]),
              "pauses": {"count": sum(map(len, pauses)), "seconds": round(sum(e - s for p in pauses for s, e in p), 1),
                         "each_seconds": list(PAUSE_SECONDS)},
              "decoding": {"seconds": round(seconds, 2), "vad": hp.vad, "how": longform.HOW[hp.vad]},
              "tasks": {}, "hallucination": {}}
    for o in options:
        found = decoded[o.task]
        _, result["tasks"][o.task], result["hallucination"][o.task] = score(
            o.task, joined, _written([longform.text(p) for p in found]), o, params)
        result["hallucination"][o.task]["words_in_pauses"] = sum(
            longform.words_in_pauses(p, list(zip(starts, ends))) for p, (_, starts, ends) in zip(found, recordings))
    return result


def recordings(name: str, decoder: decoding.Decoder, rows: dict[str, list], params: config.Params, split: str,
               options: list[decoding.DecodingOptions]) -> dict:
    """The recordings that hold the scored segments, each handed whole to `lib.transcribe.transcribe` as a user
    would (both tasks, 05's decoding settings; JSON and SRT under `results/transcripts/<split>/<name>/`), scored
    against the recording's segments of the split joined in time order (speech the manifest leaves out of a
    recording would count as insertions)."""
    from lib import transcribe

    hp = params.evaluation
    segments = manifest_io.read(params.paths.splits / f"{split}.tsv").segments
    picked = set(rows["id"])
    files = list(dict.fromkeys(s.audio.resolve() for s in segments if s.id in picked))
    inside = manifest_io.by_recording(segments)
    out = params.paths.results / "transcripts" / split / name
    began = time.perf_counter()
    done = transcribe.transcribe(files, decoder, task="both" if len(options) > 1 else options[0].task,
                                 formats=("json", "srt"), out=out, vad=hp.vad, language=options[0].language,
                                 progress=False, **transcribe.evaluation_settings(hp))
    seconds = time.perf_counter() - began
    failed = [f"{r.source.path}: {r.error}" for r in done if r.error]
    if failed:
        raise audio.AudioError("; ".join(failed))
    by_file = {r.source.path: r for r in done}
    joined = [packing.window_columns(inside[f]) | {"duration": by_file[f].seconds} for f in files]
    columns = {c: [row[c] for row in joined] for c in joined[0]}
    audio_seconds = sum(columns["duration"])
    result = {"files": len(files), "segments_joined": sum(len(inside[f]) for f in files),
              "audio_seconds": round(audio_seconds, 1), "outputs": str(out.relative_to(params.paths.results)),
              "transcripts": [{"audio": str(f), "name": by_file[f].source.name.as_posix()} for f in files],
              "decoding": {"seconds": round(seconds, 2), "real_time_factor": round(seconds / audio_seconds, 3),
                           "vad": hp.vad, "how": longform.HOW[hp.vad]},
              "tasks": {}, "hallucination": {}}
    for o in options:
        texts = _written([longform.text(by_file[f].pieces[o.task]) for f in files])
        _, result["tasks"][o.task], result["hallucination"][o.task] = score(o.task, columns, texts, o, params)
    return result


def sample(speakers: list[str], limit: int) -> list[int]:
    """Row indices to score: all (`limit` 0), or `limit` of them taken from the speakers in turn, so that every
    speaker is in a small sample."""
    if not limit or limit >= len(speakers):
        return list(range(len(speakers)))
    by_speaker: dict[str, list[int]] = {}
    for i, speaker in enumerate(speakers):
        by_speaker.setdefault(speaker, []).append(i)
    queues = list(by_speaker.values())
    chosen = []
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def targets(summary: dict, hp: config.EvaluationParams) -> list[dict]:
    """The seed's targets (WER below, BLEU above), each marked pass or fail."""
    checks = [("transcribe", "wer", "<", hp.target_wer), ("translate", "bleu", ">", hp.target_bleu)]
    rows = []
    for task, metric, sense, target in checks:
        value = summary["tasks"].get(task, {}).get("metrics", {}).get(metric, {}).get("value")
        passed = value is not None and (value < target if sense == "<" else value > target)
        rows.append({"task": task, "metric": metric, "target": f"{sense} {target:g}", "value": value,
                     "pass": passed})
    return rows


def exports(params: config.Params) -> dict[str, dict]:
    """`export_parity` for every family of the run whose params section asks for exports: name -> the parity."""
    checked = {name: export_parity(params, name) for name in params.family_names}
    return {name: parity for name, parity in checked.items() if parity}


def export_parity(params: config.Params, name: str) -> dict | None:
    """05's deployment check: the trained model's exports (`Family.export_models`, as the family's section asks)
    decode the test segments 05 scored, as 05 decoded them (longest first, both tasks from one encoder pass, the same
    forced prompt, beam width and length), and are compared with the model they came from: WER and BLEU of each,
    their differences, transcripts that differ, decoding speed. Writes and returns
    `results/<name>_<export_format>_parity.json`; None when the family exports nothing."""
    family, hp, paths = families.get(name), params.evaluation, params.paths
    model_dir = paths.model(name) / "final"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    facts, converted = family.export_models(params.section(name), model_dir, device)
    if not converted:
        return None
    scored = {task: stored.predictions(paths.results, name, task) for task in tasks.TASKS}
    summary = json.loads(paths.metrics(name).read_text(encoding="utf-8"))
    bundle = loaded(params, name, model_dir)[0]  # its inputs are the exports' (same processor)
    test = family.prepare_features(paths, bundle, splits=("test",))["test"].load()
    by_id = {segment_id: i for i, segment_id in enumerate(test["id"])}
    cached = test.with_format("numpy", columns=[family.input_column])
    ids = scored["transcribe"]["id"].tolist()
    inputs = [cached[by_id[segment_id]][family.input_column] for segment_id in ids]
    translated = [ids.index(segment_id) for segment_id in scored["translate"]["id"]]
    references = {task: frame["reference"].tolist() for task, frame in scored.items()}
    own = {task: frame["hypothesis"].tolist() for task, frame in scored.items()}
    own_wer, own_bleu = metrics.wer(references["transcribe"], own["transcribe"]), \
        metrics.bleu(references["translate"], own["translate"])
    options = [decoding.DecodingOptions.for_test(task, hp) for task in tasks.TASKS]
    reference_quiet = summary["hallucination"].get("nonspeech")  # None: left to this check (one decode per model)
    rows, quiet_of = [], {}
    for export in converted:
        began = time.perf_counter()
        decoded = decoding.decode(export.decoder, inputs, scored["transcribe"]["duration"].tolist(), options)
        texts = {o.task: [output.gated(o) for output in decoded[o.task]] for o in options}
        seconds = time.perf_counter() - began
        quiet_of[export.facts["quantization"]] = nonspeech_set(export.decoder, options, paths.splits / "test.tsv")
        quiet = quiet_of[export.facts["quantization"]]["tasks"]
        translations = [texts["translate"][i] for i in translated]  # the segments with a reference translation
        wer = metrics.wer(references["transcribe"], texts["transcribe"])
        bleu = metrics.bleu(references["translate"], translations)
        paired = {metric: metrics.paired_difference(references[task], own[task], hyps, metric, hp.bootstrap_resamples,
                                                    params.seed)
                  for metric, task, hyps in (("wer", "transcribe", texts["transcribe"]),
                                             ("bleu", "translate", translations))}
        same = sum(text.normalize_for_scoring(a) == text.normalize_for_scoring(b)
                   for a, b in zip(texts["transcribe"], own["transcribe"]))
        rows.append({**export.facts, "wer": round(wer, 2), "hf_wer": round(own_wer, 2),
                     "delta_wer": round(wer - own_wer, 2), "bleu": round(bleu, 2), "hf_bleu": round(own_bleu, 2),
                     "delta_bleu": round(bleu - own_bleu, 2),
                     **{f"delta_{m}_ci95": d.to_dict()["ci95"] for m, d in paired.items()},
                     "same_transcripts": same, "segments": len(ids),
                     "segments_per_second": round(len(ids) / seconds, 2),
                     "hf_segments_per_second": summary["decoding"]["segments_per_second"],
                     **{f"nonspeech_{task}_with_text_gated": quiet[task]["with_text_gated"] for task in quiet},
                     **{f"hf_nonspeech_{task}_with_text_gated": shares["with_text_gated"]
                        for task, shares in (reference_quiet or {"tasks": {}})["tasks"].items()}})
        log.info("%s %s: WER %.2f (the model it came from %.2f), %d of %d transcripts the same", name,
                 export.facts, wer, own_wer, same, len(ids))
    parity = {"model": str(model_dir), "split": "test", "device": device, **facts, "decoding": summary["decoding"],
              "rows": rows}
    atomic.write_json(stored.parity_path(params, name), parity)
    if reference_quiet is None:
        summary["hallucination"]["nonspeech"] = _nonspeech_of_the_model(params, name, model_dir, quiet_of, options)
        atomic.write_json(paths.metrics(name), summary)
    return parity


def _nonspeech_of_the_model(params: config.Params, name: str, model_dir: Path, quiet_of: dict[str, dict],
                            options: list[decoding.DecodingOptions]) -> dict:
    """The trained model's non-speech result that its test decode left to `export_parity`: the export's, which decodes
    the sets after the test split (`evaluation_export`: its parity holds), or else the model's own, decoded now;
    either says which runtime wrote it."""
    export = evaluation_export(params, name)
    model = loaded(params, name, model_dir, export["quantization"] if export else "")  # what decodes the later sets
    quiet = quiet_of[export["quantization"]] if export else \
        nonspeech_set(model.decoder, options, params.paths.splits / "test.tsv")
    return decoded_by(quiet, model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model_type", required=True, choices=families.names(), help="the model family")
    parser.add_argument("--model_dir", help="a trained model folder (default: <output_dir>/<model_type>/final)")
    parser.add_argument("--output", help="where the metrics and predictions go (default: <output_dir>/results)")
    parser.add_argument("--params", default="params/dev.yaml", help="split, decoding settings and targets")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        params = config.load(args.params, config.parse_overrides(args.set))
        summary = evaluate(params, args.model_type, args.model_dir, args.output)
        if "nonspeech" not in summary["hallucination"]:  # left to the export's parity check, as in 05
            export_parity(params, args.model_type)
    except config.ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    except ModelMissing as err:
        print(err, file=sys.stderr)
        return 1
    for row in summary["targets"]:
        print(f"{args.model_type} {row['task']} {row['metric']}: {row['value']} (target {row['target']}: "
              f"{'pass' if row['pass'] else 'fail'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
