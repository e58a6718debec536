"""The run's verdict, written from its metrics files and nothing else: per model, the honest set first (held-out when
the params name one, then the voice-shift set and test), each score with its interval against the targets, what fine-tuning gained,
non-speech, whole recordings and retention in a line each, and what to try next. 05 and 06 open with it; the run
keeps it as `outputs/<profile>/summary.md`, so no figure of a run is ever copied by hand.
"""
from __future__ import annotations

import datetime as dt
import json

from lib import atomic, config, families, split as splitting

SET_DESCRIPTIONS = {"heldout": "Held-out set (new speakers, new sentences)",
                    "voiceshift": "Voice-shift set (new sentences; voices, pitch, rate and channels unlike training's)",
                    "test": "Test split (new speakers)"}
OUTPUTS = {"transcribe": "transcripts", "translate": "translations"}
GAP = 5.0  # WER points between the honest set and test past which the model learned its sentences more than speech
RETENTION_COST = 5.0  # WER points a retention set may lose before fine-tuning is said to cost plain speech


def write(params: config.Params) -> str:
    """The verdict as Markdown, written to `outputs/<profile>/summary.md` (atomically) and returned."""
    text = verdict(params)
    atomic.write_text(params.paths.root / "summary.md", text)
    return text


def verdict(params: config.Params) -> str:
    """The run's verdict in Markdown, from the metrics files 05 wrote."""
    hp, paths = params.evaluation, params.paths
    report = json.loads((paths.splits / "split_report.json").read_text(encoding="utf-8"))
    overlap = splitting.trigram_overlap(report)
    lines = [f"# What the {params.profile} run shows", "",
             f"Written from the metrics files on {dt.date.today().isoformat()}. Targets: WER below "
             f"{hp.target_wer:g} %, BLEU above {hp.target_bleu:g}. Each score with its 95 % bootstrap interval and "
             "the segments it was computed on; the honest set (new speakers and new sentences) first."]
    for name in params.family_names:
        found = {split: json.loads(path.read_text(encoding="utf-8")) for split in params.eval_sets
                 if (path := paths.metrics(name, split)).exists()}
        if found:
            lines += ["", f"## {families.model_label(params, name)}", "", *_model(params, name, found, overlap)]
    return "\n".join(lines) + "\n"


def _model(params: config.Params, name: str, found: dict[str, dict], overlap: dict) -> list[str]:
    hp = params.evaluation
    sets = [s for s in reversed(params.eval_sets) if s in found]  # the honest set first
    lines = [f"- **{SET_DESCRIPTIONS[s]}**{_seen(overlap[s])}: " + "; ".join(
        _check(found[s], task, metric, target) for task, metric, target in
        (("transcribe", "wer", hp.target_wer), ("translate", "bleu", hp.target_bleu)) if task in found[s]["tasks"])
        for s in sets]
    exported = {s: found[s]["export"] for s in sets if found[s].get("export", {}).get("decoded")}
    if exported:
        export = next(iter(exported.values()))
        parity = export["parity_on_test"]
        parts = [f"the {SET_DESCRIPTIONS[s].split(' set')[0].lower()} set's {' and '.join(e['decoded'])}"
                 for s, e in exported.items()]
        segments = "" if any("segments" in e["decoded"] for e in exported.values()) else (
            f"; the segments by the model itself, which decoded the test split's faster "
            f"({parity['hf_segments_per_second']:.2f} against {parity['segments_per_second']:.2f} a second)")
        lines.append(f"- **Decoded by** its {export['runtime']} export ({export['dtype']}): {', '.join(parts)} (the "
                     f"starting model likewise){segments}. On the test split, decoded by the model itself, the export "
                     f"differed by {parity['delta_wer']:+.2f} WER and {parity['delta_bleu']:+.2f} BLEU on "
                     f"{parity['segments']} segments.")
    if getattr(params.section(name), "build_tiny", False):
        return lines + ["- Built with random weights and trained briefly: these scores check that the pipeline runs, "
                        "not what the model can do. Nothing to conclude."]
    honest, test = found[sets[0]], found.get("test")
    starting = params.paths.metrics(name, sets[0], untrained=True)
    if starting.exists():
        before = json.loads(starting.read_text(encoding="utf-8"))
        lines.append(f"- **What fine-tuning gained** on the {SET_DESCRIPTIONS[sets[0]].split(' (')[0].lower()}: "
                     + "; ".join(f"{metric.upper()} {_number(before, task, metric)} → {_number(honest, task, metric)}"
                                 for task, metric in (("transcribe", "wer"), ("translate", "bleu"))
                                 if task in honest["tasks"] and task in before["tasks"])
                     + (" (the starting model's outputs read from an earlier run's decode of the same model, inputs "
                        "and settings: `evaluation.reuse_starting_decodes`)." if before["decoding"].get("reused")
                        else "."))
    quiet = (test or honest)["hallucination"].get("nonspeech")
    if quiet:
        written = " and ".join(f"{round(quiet['clips'] * shares['with_text_gated'] / 100)} {OUTPUTS[task]}"
                               for task, shares in quiet["tasks"].items())
        lines.append(f"- **Non-speech** ({quiet['clips']} clips of silence, noise and music; any text is made up): "
                     f"text in {written}, the no-speech gate on.")
    long_form = (test or {}).get("long_form")
    if long_form:
        whole = long_form["tasks"]["transcribe"]["metrics"]["wer"]
        pauses = sum(long_form["hallucination"][t]["words_in_pauses"] for t in long_form["hallucination"])
        lines.append(f"- **Long-form** (test segments joined with pauses of silence or noise, {long_form['files']} "
                     f"recordings): WER {_score(whole)} against {_score(test['tasks']['transcribe']['metrics']['wer'])}"
                     f" one segment at a time; {pauses} word(s) written in the pauses.")
    recordings = honest.get("recordings")
    if recordings:
        whole = recordings["tasks"]["transcribe"]["metrics"]["wer"]
        lines.append(f"- **Whole files through `lib.transcribe`** ({recordings['files']} files of the "
                     f"{SET_DESCRIPTIONS[sets[0]].split(' (')[0].lower()}): WER {_score(whole)}, real-time factor "
                     f"{recordings['decoding']['real_time_factor']:g}.")
    costs = _retention(params, name)
    if costs:
        lines.append("- **Retention** (plain speech, WER as it started → fine-tuned): " + "; ".join(
            f"{set_name} {before:.1f} → {after:.1f}" for set_name, before, after in costs) + ".")
    return lines + ["- **What to try next**: " + " ".join(_next(params, honest, test, found.get("voiceshift"), quiet,
                                                                costs))]


def _next(params: config.Params, honest: dict, test: dict | None, shifted: dict | None, quiet: dict | None,
          costs: list) -> list[str]:
    """Advice read off the numbers."""
    hp = params.evaluation
    wer = honest["tasks"]["transcribe"]["metrics"]["wer"]["value"]
    advice = []
    if shifted is not None and shifted is not honest and wer is not None:
        gap = shifted["tasks"]["transcribe"]["metrics"]["wer"]["value"] - wer
        if gap > GAP:
            advice.append(f"The voice-shift WER is {gap:.1f} points above the held-out set's: voices and channels "
                          "unlike the training speakers' cost it; more speakers, or voice and channel variety in "
                          "training (`voice_perturbation`, `reverb`, `band_limit`, `codec`).")
    if test is not None and test is not honest and wer is not None:
        gap = wer - test["tasks"]["transcribe"]["metrics"]["wer"]["value"]
        if gap > GAP:
            advice.append(f"The held-out WER is {gap:.1f} points above the test split's: the model learned its "
                          "training sentences more than the speech; more varied data (speakers, sentences) or "
                          "augmentation.")
    if wer is not None and wer >= hp.target_wer:
        advice.append("The transcripts miss the WER target on the honest set: more training (epochs, data) or a "
                      "larger model.")
    bleu = honest["tasks"].get("translate", {}).get("metrics", {}).get("bleu", {}).get("value")
    if bleu is not None and bleu <= hp.target_bleu:
        advice.append("The translations miss the BLEU target: more segments with translations, or more training.")
    if quiet and any(shares["with_text_gated"] for shares in quiet["tasks"].values()):
        advice.append("It writes text on non-speech: raise `nonspeech_share` in training.")
    if any(after - before > RETENTION_COST for _, before, after in costs):
        advice.append("Fine-tuning cost plain speech: mix plain-language data into training or lower the learning "
                      "rate.")
    return advice or ["Both targets are met on the honest set: score it on real recordings next."]


def _retention(params: config.Params, name: str) -> list[tuple[str, float, float]]:
    """(set, WER as it started, WER fine-tuned) for each retention set both models were scored on."""
    costs = []
    for retained, split in zip(params.evaluation.retention, params.retention_splits):
        paths = [params.paths.metrics(name, split, untrained) for untrained in (True, False)]
        if all(p.exists() for p in paths):
            before, after = (json.loads(p.read_text(encoding="utf-8"))["tasks"]["transcribe"]["metrics"]["wer"]["value"]
                             for p in paths)
            costs.append((f"`{retained.name}`", before, after))
    return costs


def _check(summary: dict, task: str, metric: str, target: float) -> str:
    scored = summary["tasks"][task]
    score = scored["metrics"][metric]
    passed = score["value"] is not None and (score["value"] < target if metric == "wer" else score["value"] > target)
    missing = summary["segments"] - scored["samples"]
    segments = f"{scored['samples']} of {summary['segments']} segments" if missing else f"{scored['samples']} segments"
    if missing and task == "translate":
        segments += f" ({missing} {'has' if missing == 1 else 'have'} no reference translation)"
    return f"{metric.upper()} {_score(score)} on {segments}, **{'pass' if passed else 'fail'}**"


def _score(score: dict) -> str:
    low, high = score["ci95"]
    value = "–" if score["value"] is None else f"{score['value']:.1f}"
    return value if low is None else f"{value} [{low:.1f}, {high:.1f}]"


def _number(summary: dict, task: str, metric: str) -> str:
    value = summary["tasks"][task]["metrics"][metric]["value"]
    return "–" if value is None else f"{value:.1f}"


def _seen(overlap: float | None) -> str:
    return "" if overlap is None else f", {overlap:g} % of its word trigrams seen in training"
