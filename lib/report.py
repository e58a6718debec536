"""What 05_evaluate shows a reader: score tables against the targets, the worst utterances with audio players, the
frequent substitutions, and (in JupyterLab) a browser of the errors by speaker or by code-mixing bin; and the table
style every report uses (`styled`: numbers to their own precision)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lib import audio, config, manifest as manifest_io, metrics, split as splitting, stored

GENERALIZATION_OVERLAP = 50  # percent of word trigrams seen in training below which a set's wording counts as new
PASS_COLOUR, FAIL_COLOUR = "#cfe3f5", "#f9d9b8"  # blue and orange from the colour-blind palette, lightened


def score_table(results: dict[str, dict]):
    """Headline scores per model (WER, CER, BLEU, chrF) with intervals, and the targets marked pass or fail."""
    rows = []
    for model_type, summary in results.items():
        checks = {(t["task"], t["metric"]): t for t in summary["targets"]}
        for task, scored in summary["tasks"].items():
            for metric in ("wer", "cer", "bleu", "chrf"):
                if metric not in scored["metrics"]:
                    continue
                score = scored["metrics"][metric]
                check = checks.get((task, metric))
                rows.append({"model": model_type, "task": task, "metric": metric.upper(), "value": score["value"],
                             "95 % interval": _interval(score), "segments": scored["samples"],
                             "target": check["target"] if check else "",
                             "result": ("pass" if check["pass"] else "fail") if check else ""})
    frame = pd.DataFrame(rows).set_index(["model", "task", "metric"])
    return frame.style.format({"value": "{:.2f}"}, na_rep="–").map(
        lambda v: f"background-color: {PASS_COLOUR if v == 'pass' else FAIL_COLOUR}" if v in ("pass", "fail")
        else "", subset=["result"])


SET_LABELS = {"test": "test split", "heldout": "held-out set", "voiceshift": "voice-shift set"}


def generalization_table(params: config.Params):
    """Every model on every set it was scored on, fine-tuned and as it started, with what each set measures: whether
    its speakers are new, and how much of its wording (word trigrams) occurs in the training transcripts. Only a set
    with new speakers and new wording measures generalization."""
    report = json.loads((params.paths.splits / "split_report.json").read_text(encoding="utf-8"))
    overlap = splitting.trigram_overlap(report)
    new_speakers = {"test": True, **{name: not report.get(name, {}).get("shared_speakers")
                                     for name in ("heldout", "voiceshift")}}
    rows = []
    for split in params.eval_sets:
        for name, untrained, summary in stored.metrics(params, split):
            scores = {metric.upper(): f"{_value(score)} {_interval(score)}"
                      for task, metric in (("transcribe", "wer"), ("translate", "bleu"))
                      if (score := summary["tasks"].get(task, {}).get("metrics", {}).get(metric))}
            rows.append({"model": summary["label"],
                         "weights": "as it started" if untrained else "fine-tuned", "set": SET_LABELS[split],
                         "segments": summary["segments"], **scores,
                         "new speakers": "yes" if new_speakers[split] else "no",
                         "trigrams seen in training (%)": overlap[split],
                         "measures generalization": "yes" if new_speakers[split] and overlap[split] is not None
                         and overlap[split] < GENERALIZATION_OVERLAP else "no"})
    return styled(pd.DataFrame(rows))


def retention_table(params: config.Params):
    """What fine-tuning cost: per model and retention set (`evaluation.retention`, plain speech in one language), the
    starting model against the fine-tuned one, WER of the transcripts and BLEU of the translations where the set has
    them, each with its 95 % interval, and the change (fine-tuned minus starting; for WER, above 0 is a loss) with
    its paired interval over the same segments."""
    rows, hp = [], params.evaluation
    for name in params.family_names:
        for retained, split in zip(hp.retention, params.retention_splits):
            found = {untrained: params.paths.metrics(name, split, untrained) for untrained in (True, False)}
            if not all(path.exists() for path in found.values()):
                continue
            start, tuned = (json.loads(found[u].read_text(encoding="utf-8")) for u in (True, False))
            for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
                if task not in tuned["tasks"]:
                    continue
                before, after = (s["tasks"][task]["metrics"][metric] for s in (start, tuned))
                predictions = [stored.predictions(params.paths.results, config.result_name(name, split, u), task)
                               for u in (True, False)]
                change = metrics.paired_difference(predictions[0]["reference"].tolist(),
                                                   predictions[0]["hypothesis"].tolist(),
                                                   predictions[1]["hypothesis"].tolist(), metric,
                                                   hp.bootstrap_resamples, params.seed).to_dict()
                rows.append({"model": tuned["label"], "set": f"{retained.name} ({retained.language})",
                             "forced": tuned["decoding"]["forced"][task], "segments": tuned["tasks"][task]["samples"],
                             "metric": metric.upper(), "as it started": f"{_value(before)} {_interval(before)}",
                             "fine-tuned": f"{_value(after)} {_interval(after)}",
                             "change": f"{change['value']:+.1f} {_interval(change)}"})
    return styled(pd.DataFrame(rows))


def recordings_table(params: config.Params):
    """Each trained model on the honest set's recordings, handed whole to `lib.transcribe` (05's `recordings`): WER
    and BLEU beside the same segments scored one by one, and the real-time factor of the whole call."""
    split = params.honest_split
    rows = []
    for name, untrained, summary in stored.metrics(params, split):
        if "recordings" not in summary:
            continue
        found, short = summary["recordings"], summary["tasks"]
        row = {"model": summary["label"], "set": SET_LABELS[split], "recordings": found["files"],
               "audio (s)": found["audio_seconds"]}
        for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
            if task in found["tasks"] and found["tasks"][task]["samples"]:
                whole, alone = found["tasks"][task]["metrics"][metric], short[task]["metrics"][metric]
                row |= {f"{metric.upper()}, recordings": f"{_value(whole)} {_interval(whole)}",
                        f"{metric.upper()}, segments": f"{_value(alone)} {_interval(alone)}"}
        rows.append(row | {"real-time factor": found["decoding"]["real_time_factor"], "outputs": found["outputs"]})
    return styled(pd.DataFrame(rows))


def transcribed_recording(params: config.Params, name: str | None = None) -> pd.DataFrame:
    """The first recording `recordings_table` scored, as `lib.transcribe` wrote it for family `name` (the run's first
    by default): the timed segments of its transcript (its JSON) beside the recording's reference segments."""
    from itertools import zip_longest

    name = name or params.family_names[0]
    split = params.honest_split
    found = json.loads(params.paths.metrics(name, split).read_text(encoding="utf-8"))["recordings"]
    first = found["transcripts"][0]
    written = json.loads((params.paths.results / found["outputs"] / f"{first['name']}.json").read_text("utf-8"))
    segments = manifest_io.read(params.paths.splits / f"{split}.tsv").segments
    reference = manifest_io.by_recording(segments)[Path(first["audio"])]
    cues = [c for c in written["transcribe"]["segments"] if c["text"]]
    print(f"{Path(first['audio']).name}: {len(cues)} timed segment(s) written, {len(reference)} in the reference")
    return pd.DataFrame([{"written (s)": f"{c['start']:.2f}-{c['end']:.2f}" if c else "",
                          "transcript": c["text"] if c else "",
                          "reference (s)": f"{r.start:.2f}-{r.end:.2f}" if r else "",
                          "reference transcript": r.transcript if r else ""} for c, r in zip_longest(cues, reference)])


def long_form_table(params: config.Params):
    """Each model's test scores on the segments and on the same segments joined into recordings with pauses of
    silence or noise (long-form), with their ratio (a model that still works on whole recordings keeps WER near its
    segment WER), and the words it wrote inside the pauses (transcripts / translations)."""
    rows = []
    for name, untrained, summary in stored.metrics(params, "test"):
        if "long_form" not in summary:
            continue
        long, short = summary["long_form"]["tasks"], summary["tasks"]
        wer, long_wer = short["transcribe"]["metrics"]["wer"], long["transcribe"]["metrics"]["wer"]
        rows.append({"model": summary["label"], "weights": "as it started" if untrained else "fine-tuned",
                     "recordings": summary["long_form"]["files"], "audio (s)": summary["long_form"]["audio_seconds"],
                     "segment WER": f"{_value(wer)} {_interval(wer)}", "long-form WER": f"{_value(long_wer)} "
                     f"{_interval(long_wer)}", "ratio": round(long_wer["value"] / wer["value"], 2)
                     if wer["value"] and long_wer["value"] is not None else None,
                     "segment BLEU": _value(short["translate"]["metrics"]["bleu"]),
                     "long-form BLEU": _value(long["translate"]["metrics"]["bleu"]) if long["translate"]["samples"]
                     else "–", "pauses (s)": summary["long_form"]["pauses"]["seconds"],
                     "words written in pauses": " / ".join(str(summary["long_form"]["hallucination"][t][
                         "words_in_pauses"]) for t in ("transcribe", "translate")),
                     "decoding": summary["long_form"]["decoding"]["how"]})
    return styled(pd.DataFrame(rows))


def hallucination_table(params: config.Params):
    """Per model and set: the share of hypotheses that loop or run far past their reference, and the share of 05's
    non-speech clips on which the model wrote anything, without and with the no-speech gate."""
    rows = []
    for split in params.eval_sets:
        for name, untrained, summary in stored.metrics(params, split):
            found = summary["hallucination"]
            quiet = found.get("nonspeech", {}).get("tasks", {})
            rows.append({"model": summary["label"], "weights": "as it started" if untrained else "fine-tuned",
                         "set": SET_LABELS[split], "looping transcripts (%)": found["transcribe"]["share"],
                         "looping translations (%)": found["translate"]["share"],
                         "long-form (%)": summary.get("long_form", {}).get("hallucination", {}).get(
                             "transcribe", {}).get("share", "–"),
                         **{f"non-speech, {task}s with text (%)": f"{shares['with_text']:g} → "
                            f"{shares['with_text_gated']:g} gated" for task, shares in quiet.items()}})
    return styled(pd.DataFrame(rows).fillna("–"), precision=1)


def nonspeech_table(params: config.Params):
    """Per model and kind of 05's non-speech clips: the share on which it wrote anything (both tasks), without and
    with the no-speech gate, and one thing it wrote; kinds training never sees are marked."""
    rows = []
    for split in params.eval_sets:
        for name, untrained, summary in stored.metrics(params, split):
            found = summary["hallucination"].get("nonspeech")
            if not found:
                continue
            frame = pd.DataFrame([{"kind": o["kind"], "held_out": o["held_out_kind"], "text": t["text"],
                                   "gated": t["gated"]} for o in found["outputs"] for t in o["tasks"].values()])
            for kind, clips in frame.groupby("kind", sort=False):
                written = clips[clips.text.str.strip().astype(bool)]
                rows.append({"model": summary["label"],
                             "weights": "as it started" if untrained else "fine-tuned",
                             "kind": kind + (" (never in training)" if clips.held_out.iloc[0] else ""),
                             "outputs": len(clips), "with text (%)": 100 * len(written) / len(clips),
                             "with text, gated (%)": 100 * clips.gated.str.strip().astype(bool).mean(),
                             "for example": written.text.iloc[0][:60] if len(written) else "(nothing)"})
    return styled(pd.DataFrame(rows), precision=0)


def parity_table(parity: dict):
    """A model's exports (evaluate.export_parity) against the model they came from, decoded by transformers, on the
    test segments: WER, BLEU, their differences with their paired 95 % intervals, and the decoding speed of both
    tasks."""
    rows = [{key: value for key, value in row.items() if not key.endswith("_ci95")} |
            {f"delta_{m}": _difference(row[f"delta_{m}"], row.get(f"delta_{m}_ci95")) for m in ("wer", "bleu")}
            for row in parity["rows"]]
    frame = pd.DataFrame(rows).rename(columns={
        "quantization": "export", "compute_type": "computed as", "size_mb": "size (MB)", "wer": "WER (%)",
        "hf_wer": "transformers WER (%)", "delta_wer": "WER difference", "bleu": "BLEU", "hf_bleu": "transformers BLEU",
        "delta_bleu": "BLEU difference", "same_transcripts": "same transcripts",
        "segments_per_second": "segments/s", "hf_segments_per_second": "transformers segments/s"})
    runtime = [f"{key} {value}" for key, value in parity.items() if key not in ("model", "split", "device", "decoding",
                                                                                   "rows")]
    return styled(frame, ", ".join(["test split", parity["device"], *runtime, "both tasks decoded per segment"]))


def _difference(value: float, interval: list | None) -> str:
    """A difference with its paired interval where the parity file has one (older ones do not)."""
    low, high = interval or (None, None)
    return f"{value:+.2f}" + (f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else "")


def views_table(results: dict[str, dict]) -> pd.DataFrame:
    """The code-switching views of the transcript, one column per model: rate [interval] (words)."""
    table = {}
    for model_type, summary in results.items():
        scored = summary["tasks"]["transcribe"]["metrics"]
        table[model_type] = {metrics.VIEW_LABELS[v]: f"{_value(scored[v])} {_interval(scored[v])} ({scored[v]['count']} "
                             "words)" for v in metrics.VIEWS}
    return pd.DataFrame(table).rename_axis("error rate (%) on")


def cmi_table(results: dict[str, dict]) -> pd.DataFrame:
    """WER per code-mixing-index bin, one column per model, with the segments in each bin."""
    table = {}
    for model_type, summary in results.items():
        for row in summary["tasks"]["transcribe"]["by_cmi"]:
            table.setdefault(row["bin"], {"segments": row["segments"]})[f"{model_type} WER (%)"] = (
                f"{_value(row)} {_interval(row)}")
    return pd.DataFrame(table).T.rename_axis("code-mixing index")


def substitutions(results: dict[str, dict], model_type: str):
    """A model's most frequent substitutions (as many as its metrics file keeps), captioned with the model."""
    frame = pd.DataFrame(results[model_type]["tasks"]["transcribe"]["top_substitutions"],
                         columns=["reference", "hypothesis", "count", "reference_language"])
    return styled(frame, results[model_type]["label"])


def worst_utterances(params: config.Params, model_type: str, task: str, count: int = 3) -> None:
    """Display the `count` worst test segments of a model and task (highest WER, or lowest sentence chrF for
    translations) with the reference, the hypothesis and an audio player."""
    from IPython.display import Audio, Markdown, display

    predictions = stored.predictions(params.paths.results, model_type, task)
    if task == "transcribe":
        worst = predictions.sort_values(["wer", "errors"], ascending=False).head(count)
    else:
        worst = predictions.sort_values("sentence_chrf").head(count)
    segments = {s.id: s for s in manifest_io.read(params.paths.splits / "test.tsv", check_audio=False).segments}
    for row in worst.itertuples():
        score = f"WER {row.wer:.0f} %" if task == "transcribe" else f"chrF {row.sentence_chrf:.1f}"
        display(Markdown(f"**{row.id}** (speaker {row.speaker}, {row.duration:.1f} s, {score})  \n"
                         f"reference: {row.reference}  \nhypothesis: {row.hypothesis or '(nothing)'}"))
        segment = segments[row.id]
        display(Audio(audio.load(segment.audio, segment.start, segment.end), rate=audio.SAMPLE_RATE))


def errors_by(params: config.Params, model_type: str, by: str):
    """WER of a model's transcripts per speaker (`by="speaker"`) or per code-mixing bin (`by="cmi_bin"`), worst
    first, as a table captioned with the model."""
    predictions = stored.predictions(params.paths.results, model_type, "transcribe")
    grouped = predictions[predictions.scored].groupby(by).agg(segments=("id", "size"),
                                                              words=("reference_words", "sum"),
                                                              errors=("errors", "sum"))
    grouped["WER (%)"] = 100 * grouped.errors / grouped.words
    return styled(grouped.sort_values("WER (%)", ascending=False), model_type, index=True, precision=1)


def error_browser(params: config.Params):
    """A JupyterLab widget: pick a model and a speaker or code-mixing bin, see its transcripts sorted by errors. In
    a kernel the runner started (`config.HEADLESS_ENV`), a line saying so instead: nobody can use the widget there,
    and a widget cell can stall papermill's client (jupyter/nbclient#312)."""
    from IPython.display import Markdown, display

    if os.environ.get(config.HEADLESS_ENV):
        return Markdown("*The error browser needs a live kernel (JupyterLab); this report ran headless.*")
    import ipywidgets as widgets

    frames = {m: stored.predictions(params.paths.results, m, "transcribe")
              for m in stored.test_metrics(params)}
    model = widgets.Dropdown(options=list(frames), description="model")
    by = widgets.Dropdown(options=[("speaker", "speaker"), ("code-mixing bin", "cmi_bin")], description="by")
    group = widgets.Dropdown(description="group")
    shown = widgets.Output()

    def groups(_=None):
        group.options = sorted(frames[model.value][by.value].astype(str).unique())

    def show(_=None):
        frame = frames[model.value]
        rows = frame[frame[by.value].astype(str) == group.value].sort_values("errors", ascending=False)
        shown.clear_output()
        with shown, pd.option_context("display.max_colwidth", None, "display.max_rows", 200):
            display(rows[["id", "speaker", "wer", "errors", "reference_words", "reference", "hypothesis"]])

    model.observe(groups, "value")
    by.observe(groups, "value")
    group.observe(show, "value")
    groups()
    show()
    return widgets.VBox([widgets.HBox([model, by, group]), shown])


def styled(frame: pd.DataFrame, caption: str | None = None, index: bool = False, precision: int | None = None):
    """A table as a report shows it: each number to its own precision (`number`), or with `precision` decimals;
    missing values as "–"; the index hidden unless `index`."""
    style = frame.style.format(number, na_rep="–") if precision is None else \
        frame.style.format(precision=precision, na_rep="–", thousands=",")
    style = style if index else style.hide(axis="index")
    return style.set_caption(caption) if caption else style


def number(value) -> str:
    """A cell as written: a float to four significant digits without padded zeros (76.1, 0.236, 3), whole numbers
    from 1,000 up with thousands separators; anything else as it is."""
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _value(score: dict) -> str:
    return "–" if score["value"] is None else f"{score['value']:.1f}"


def _interval(score: dict) -> str:
    low, high = score["ci95"]
    return "" if low is None else f"[{low:.1f}, {high:.1f}]"
