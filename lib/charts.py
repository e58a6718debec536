"""Charts, drawn with seaborn in a colour-blind-safe palette and saved as PNG under `outputs/<profile>/charts/`."""
from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
import pandas as pd
import seaborn as sns

from lib import atomic, families, metrics, stored
from lib.config import SPLITS

PALETTE = "colorblind"
MIN_SEGMENTS = 5  # a bin with fewer segments gets no bar: its interval would say nothing


def colour(name: str, untrained: bool = False) -> tuple:
    """The one colour of a model in every chart: family `name` fine-tuned, or as it started (`untrained`), by the
    family's place among the registered ones (fine-tuned models first in the palette, starting models after)."""
    names = families.names()
    return sns.color_palette(PALETTE, 2 * len(names))[names.index(name) + (len(names) if untrained else 0)]


def save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure as PNG atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic.write_bytes(path, buffer.getvalue())


def split_durations(segments: pd.DataFrame, out: Path) -> plt.Figure:
    """Histogram of segment durations per split, from a frame with `split` and `duration` columns."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(segments, x="duration", hue="split", hue_order=SPLITS, element="step", fill=False, stat="percent",
                 common_norm=False, bins=30, ax=ax)
    ax.set(title="Segment durations per split", xlabel="segment duration (s)", ylabel="segments in the split (%)")
    save(fig, out)
    return fig


def split_code_mixing(segments: pd.DataFrame, out: Path) -> plt.Figure:
    """Code-mixing index per segment, per split (0: one language; 50: both equally)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(segments, x="code_mixing_index", hue="split", hue_order=SPLITS, element="step", fill=False,
                 stat="percent", common_norm=False, binwidth=5, binrange=(0, 50), ax=ax)
    ax.set(title="Code-mixing index per split", xlabel="code-mixing index (0 = monolingual, 50 = evenly mixed)",
           ylabel="segments in the split (%)")
    save(fig, out)
    return fig


def label_lengths(examples: pd.DataFrame, out: Path, title: str) -> plt.Figure:
    """Label tokens and audio duration per example, by task (from `prepare.Prepared.examples`)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fig.suptitle(title)
    sns.histplot(examples, x="label_tokens", hue="task", element="step", fill=False, bins=30, ax=axes[0])
    axes[0].set(title="Label length per task", xlabel="label tokens (prefix and end token included)",
                ylabel="examples")
    sns.histplot(examples[examples.task == "transcribe"], x="duration", hue="split",  # one per kept segment
                 hue_order=SPLITS, element="step", fill=False, bins=30, ax=axes[1])
    axes[1].set(title="Audio duration per split", xlabel="segment duration (s)", ylabel="segments")
    save(fig, out)
    return fig


def training_curves(params, name: str, history: list[dict], out: Path) -> plt.Figure:
    """Training loss per logging step, and val loss of each task at each checkpoint (from trainer log history), of
    family `name` in its colour (`colour`), the curves told apart by line and marker."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    _loss_panel(ax, history, name, textwrap.fill(f"{families.model_label(params, name)}: fine-tuning", 70))
    save(fig, out)
    return fig


# --- 06_charts: the run at a glance --------------------------------------------------------------------------------

def training_loss(histories: dict[str, list[dict]], labels: dict[str, str], out: Path) -> plt.Figure:
    """Training and val loss of each model side by side (from results/<model>_history.json), titled by `labels`, each
    panel in its model's colour (`colour`), the curves told apart by line and marker."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, axes = plt.subplots(1, len(histories), figsize=(6 * len(histories), 4.4), squeeze=False, layout="constrained")
    for ax, (model_type, history) in zip(axes[0], histories.items()):
        _loss_panel(ax, history, model_type, textwrap.fill(labels[model_type], 60))
    fig.suptitle("Training loss, and val loss per task at each checkpoint")
    save(fig, out)
    return fig


def score_comparison(params, task: str, metric: str, out: Path) -> plt.Figure:
    """Each fine-tuned model on each set 05 scored, the honest set (held-out) first, the voice-shift set dotted and the
    test split hatched, with 95 % intervals and the target as a dashed line; one colour per model (`colour`)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    sets = list(reversed(params.eval_sets))
    found = {split: {name: summary for name, untrained, summary in stored.metrics(params, split)
                     if not untrained} for split in sets}
    names = [name for name in params.family_names if name in found[sets[-1]]]
    scores = [[found[split].get(name, {}).get("tasks", {}).get(task, {}).get("metrics", {}).get(metric, _MISSING)
               for split in sets] for name in names]
    target = params.evaluation.target_wer if metric == "wer" else params.evaluation.target_bleu
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.9 * len(names) * len(sets)))
    styles = [SET_STYLES[split] for split in sets]
    _bars_with_intervals(ax, [textwrap.fill(found[sets[-1]][n]["label"], 34) for n in names], scores,
                         [SET_NAMES[split] for split in sets], [[colour(n) for n in names]] * len(sets),
                         horizontal=True, styles=styles, legend=False)
    sense = "below" if metric == "wer" else "above"
    line = ax.axvline(target, color="black", linestyle="--", linewidth=1.2, label=f"target: {sense} {target:g}")
    handles = [Patch(facecolor="0.65", edgecolor="0.3", label=SET_NAMES[split], **style)
               for split, style in zip(sets, styles)]
    ax.legend(handles=[*handles, line], loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.invert_yaxis()  # models top to bottom in the order given
    names_of = {"wer": "WER (%), lower is better", "bleu": "BLEU, higher is better"}
    ax.set(title=f"{metric.upper()} ({task}), with 95 % bootstrap intervals", xlabel=names_of[metric], ylabel="")
    ends = [(score["ci95"][1] or score["value"] or 0) for row in scores for score in row]
    ax.set_xlim(0, max(100 if metric == "wer" else 30, *[end * 1.15 for end in ends]))
    save(fig, out)
    return fig


SET_NAMES = {"test": "test split (new speakers)", "heldout": "held-out set (new speakers, new sentences)",
             "voiceshift": "voice-shift set (voices and channels\nunlike training's, new sentences)"}
SET_STYLES = {"heldout": {}, "voiceshift": {"hatch": "..", "alpha": 0.8}, "test": {"hatch": "//", "alpha": 0.55}}


def per_language_errors(results: dict[str, dict], out: Path) -> plt.Figure:
    """Error rate on each view of the transcript (all words, each language, English insertions, switch points)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    groups = [[s["tasks"]["transcribe"]["metrics"][v] for v in metrics.VIEWS] for s in results.values()]
    labels = {**metrics.VIEW_LABELS, "english_insertions": "English insertions\n(in mixed utterances)"}
    _bars_with_intervals(ax, [labels[v] for v in metrics.VIEWS], list(zip(*groups)),
                         [s["label"] for s in results.values()], [colour(m) for m in results])
    same = all(s["tasks"]["transcribe"]["metrics"]["wer_en"] == s["tasks"]["transcribe"]["metrics"][
        "english_insertions"] for s in results.values())
    ax.set(title="Transcript errors by language, on one alignment of each whole utterance" + (
        "\n(English insertions equal English words here: every English word sits in a mixed utterance)"
        if same else ""), xlabel="reference words scored", ylabel="error rate (%) with 95 % interval")
    save(fig, out)
    return fig


def wer_by_cmi(results: dict[str, dict], out: Path) -> plt.Figure:
    """WER per code-mixing-index bin for each model; each bin's label gives its segment count."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    bins = [[row if row["segments"] >= MIN_SEGMENTS else {**row, "value": None, "ci95": [None, None],
                                                          "note": "too few"}
             for row in s["tasks"]["transcribe"]["by_cmi"]] for s in results.values()]
    labels = [f"{row['bin']}\n{row['segments']} segments" for row in bins[0]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _bars_with_intervals(ax, labels, list(zip(*bins)), [s["label"] for s in results.values()],
                         [colour(m) for m in results])
    ax.set(title=f"WER by code-mixing index of the reference (test split; bins of under {MIN_SEGMENTS} segments "
                 "are too few to score)",
           xlabel="code-mixing index (0 = one language, 50 = evenly mixed)", ylabel="WER (%) with 95 % interval")
    save(fig, out)
    return fig


def generalization(params, out: Path) -> plt.Figure:
    """WER and BLEU of each model, fine-tuned and as it started, on each set 05 scored (test split, voice-shift set,
    held-out set)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    sets = {"test": "test split\n(new speakers)", "heldout": "held-out set\n(new speakers,\nnew sentences)",
            "voiceshift": "voice-shift set\n(new voices,\nchannels, sentences)"}
    series, colours, scores = [], [], {split: [] for split in params.eval_sets}
    for name in params.family_names:
        for untrained in (False, True):
            found = {split: json.loads(path.read_text(encoding="utf-8")) for split in params.eval_sets
                     if (path := params.paths.metrics(name, split, untrained)).exists()}
            if not found:
                continue
            series.append(f"{families.model_label(params, name)}, {'as it started' if untrained else 'fine-tuned'}")
            colours.append(colour(name, untrained))
            for split in params.eval_sets:
                tasks = found.get(split, {}).get("tasks", {})
                scores[split].append({metric: tasks.get(task, {}).get("metrics", {}).get(metric, _MISSING)
                                      for task, metric in (("transcribe", "wer"), ("translate", "bleu"))})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, metric, label in ((axes[0], "wer", "WER (%), lower is better"), (axes[1], "bleu", "BLEU, higher is better")):
        _bars_with_intervals(ax, [sets[s] for s in params.eval_sets],
                             [[row[metric] for row in scores[s]] for s in params.eval_sets], series, colours)
        ax.set(title=f"{metric.upper()} with 95 % intervals", xlabel="", ylabel=label)
        if metric == "wer":
            ax.get_legend().remove()
    fig.suptitle("What fine-tuning gained, on speakers and sentences it never trained on")
    save(fig, out)
    return fig


_MISSING = {"value": None, "ci95": [None, None]}


def hallucination(params, out: Path) -> plt.Figure:
    """Left: the share of hypotheses that loop or run far past their reference, per model and set. Right: the share
    of 05's non-speech clips on which each model wrote anything, per task, without and with the no-speech gate."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    loops, quiet, palette = [], [], {}
    for split in params.eval_sets:
        for name, untrained, found in stored.metrics(params, split):
            model = f"{found['label']}, {'as it started' if untrained else 'fine-tuned'}"
            palette[model] = colour(name, untrained)
            views = {"transcripts": found["hallucination"]["transcribe"]["share"],
                     "translations": found["hallucination"]["translate"]["share"]}
            if "long_form" in found:
                views["long-form\ntranscripts"] = found["long_form"]["hallucination"]["transcribe"]["share"]
            loops += [{"model": model, "what": f"{view}\n({split})", "share": share}
                      for view, share in views.items() if share is not None]
            for task, shares in found["hallucination"].get("nonspeech", {}).get("tasks", {}).items():
                quiet += [{"model": model, "what": f"{task}\n{gate}", "share": shares[key]}
                          for gate, key in (("gate off", "with_text"), ("gate on", "with_text_gated"))]
    models = list(dict.fromkeys(row["model"] for row in loops + quiet))
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for ax, rows, title, label in ((axes[0], loops, "Hypotheses that loop, or run past twice their reference",
                                    "hypotheses (%)"),
                                   (axes[1], quiet, "Text written on silence, noise and music (none is right)",
                                    "non-speech clips with text (%)")):
        if rows:
            sns.barplot(pd.DataFrame(rows), x="what", y="share", hue="model", hue_order=models, palette=palette,
                        saturation=1, ax=ax)  # the palette's colours as they are
            for container in ax.containers:
                ax.bar_label(container, fmt="%.0f", fontsize=8, padding=2)
        ax.set(title=title, xlabel="", ylabel=label, ylim=(0, 110))
        ax.tick_params(axis="x", labelsize=9)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="model", loc="upper center", ncol=min(2, len(models)),
               bbox_to_anchor=(0.5, -0.02))
    save(fig, out)
    return fig


def split_overview(segments: pd.DataFrame, out: Path) -> plt.Figure:
    """Hours per split, and minutes per speaker coloured by split (from `split.read_segment_frame`)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 3]})
    hours = segments.groupby("split").duration.sum().reindex(SPLITS).fillna(0) / 3600
    sns.barplot(x=hours.index, y=hours.values, hue=hours.index, hue_order=SPLITS, ax=axes[0], legend=False)
    for i, value in enumerate(hours.values):
        axes[0].text(i, value, f"{value:.2f} h\n{value / hours.sum():.0%}", ha="center", va="bottom", fontsize=9)
    axes[0].set(title="Audio per split", xlabel="split", ylabel="audio (hours)", ylim=(0, hours.max() * 1.25))
    per_group = (segments.groupby(["group", "split"]).duration.sum() / 60).reset_index()
    per_group = per_group.sort_values(["split", "duration"], key=lambda c: c.map(SPLITS.index)
                                      if c.name == "split" else -c)
    sns.barplot(per_group, x="group", y="duration", hue="split", hue_order=SPLITS, dodge=False, ax=axes[1])
    axes[1].set(title="Audio per speaker (each speaker in one split only)", xlabel="speaker",
                ylabel="audio (minutes)")
    axes[1].tick_params(axis="x", rotation=90, labelsize=7)
    axes[1].legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, out)
    return fig


def _loss_panel(ax, history: list[dict], name: str, title: str) -> None:
    """One model's loss curves in its colour (`colour`), told apart by line and marker, on whole optimizer steps."""
    sns.lineplot(_loss_rows(history), x="step", y="loss", style="curve", markers=True, color=colour(name),
                 markersize=7, ax=ax)
    ax.set(title=title, xlabel="optimizer step", ylabel="cross-entropy loss (nats per token)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _loss_rows(history: list[dict]) -> pd.DataFrame:
    rows = [{"step": h["step"], "loss": h["loss"], "curve": "train"} for h in history if "loss" in h]
    for h in history:
        for key, value in h.items():
            if key.startswith("eval_") and key.endswith("_loss"):
                rows.append({"step": h["step"], "loss": value, "curve": f"val {key[5:-5]}"})
    return pd.DataFrame(rows)


def _bars_with_intervals(ax, categories: list[str], scores: list[list[dict]], series: list[str | None],
                         colours: list, horizontal: bool = False, styles: list[dict] | None = None,
                         legend: bool = True) -> None:
    """Grouped bars: scores[category][series] holds {"value", "ci95"}, series k drawn in colours[k] (one colour, or
    one per category) with `styles[k]` (hatch, alpha); the interval is drawn as an error bar and the value written at
    the bar's end. A missing value is marked with its "note", else 'n/a' (no words in the view)."""
    import numpy as np

    width = 0.8 / len(series)
    for k, name in enumerate(series):
        positions = np.arange(len(categories)) + (k - (len(series) - 1) / 2) * width
        values = [scores[c][k]["value"] for c in range(len(categories))]
        heights = [v or 0 for v in values]
        errors = np.array([[v - (s[k]["ci95"][0] if s[k]["ci95"][0] is not None else v),
                            (s[k]["ci95"][1] if s[k]["ci95"][1] is not None else v) - v]
                           for v, s in zip(heights, scores)]).T
        draw = ax.barh if horizontal else ax.bar
        draw(positions, heights, width * 0.95, color=colours[k], label=name, **(styles[k] if styles else {}),
             **({"xerr": errors} if horizontal else {"yerr": errors}), capsize=3, ecolor="0.25")
        for position, value, error, score in zip(positions, values, errors[1], [s[k] for s in scores]):
            label = score.get("note", "n/a") if value is None else f"{value:.1f}"
            end = (value or 0) + error  # past the interval's cap
            if horizontal:
                ax.annotate(label, (end, position), xytext=(4, 0), textcoords="offset points", va="center",
                            fontsize=9)
            else:
                ax.annotate(label, (position, end), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8)
    ticks = np.arange(len(categories))
    (ax.set_yticks if horizontal else ax.set_xticks)(ticks, categories)
    if not horizontal:
        tops = [(s[k]["ci95"][1] or s[k]["value"] or 0) for s in scores for k in range(len(series))]
        ax.set_ylim(0, max(tops + [1]) * 1.12)
    if legend and any(series):
        ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1))
