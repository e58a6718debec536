"""Charts, drawn with seaborn in a colour-blind-safe palette and saved as PNG under `outputs/<profile>/charts/`."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib import atomic

PALETTE = "colorblind"
SPLIT_ORDER = ("train", "val", "test")


def save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure as PNG atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic.write_bytes(path, buffer.getvalue())


def split_durations(segments: pd.DataFrame, out: Path) -> plt.Figure:
    """Histogram of segment durations per split, from a frame with `split` and `duration` columns."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(segments, x="duration", hue="split", hue_order=SPLIT_ORDER, element="step", stat="percent",
                 common_norm=False, bins=30, ax=ax)
    ax.set(title="Segment durations per split", xlabel="segment duration (s)", ylabel="segments in the split (%)")
    save(fig, out)
    return fig


def split_code_mixing(segments: pd.DataFrame, out: Path) -> plt.Figure:
    """Code-mixing index per segment, per split (0: one language; 50: both equally)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(segments, x="code_mixing_index", hue="split", hue_order=SPLIT_ORDER, element="step",
                 stat="percent", common_norm=False, binwidth=5, binrange=(0, 50), ax=ax)
    ax.set(title="Code-mixing index per split", xlabel="code-mixing index (0 = monolingual, 50 = evenly mixed)",
           ylabel="segments in the split (%)")
    save(fig, out)
    return fig


def label_lengths(examples: pd.DataFrame, out: Path) -> plt.Figure:
    """Label tokens and audio duration per example, by task (from `whisper_data.label_table`)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.histplot(examples, x="label_tokens", hue="task", element="step", bins=30, ax=axes[0])
    axes[0].set(title="Label length per task", xlabel="label tokens (prefix and end token included)",
                ylabel="examples")
    sns.histplot(examples[examples.task == "transcribe"], x="duration", hue="split",  # one per kept segment
                 hue_order=SPLIT_ORDER, element="step", bins=30, ax=axes[1])
    axes[1].set(title="Audio duration per split", xlabel="segment duration (s)", ylabel="segments")
    save(fig, out)
    return fig


def training_curves(history: list[dict], out: Path, title: str) -> plt.Figure:
    """Training loss per logging step, and val loss of each task at each checkpoint (from trainer log history)."""
    sns.set_theme(style="whitegrid", palette=PALETTE)
    rows = [{"step": h["step"], "loss": h["loss"], "curve": "train"} for h in history if "loss" in h]
    for h in history:
        for key, value in h.items():
            if key.startswith("eval_") and key.endswith("_loss"):
                rows.append({"step": h["step"], "loss": value, "curve": f"val {key[5:-5]}"})
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.lineplot(pd.DataFrame(rows), x="step", y="loss", hue="curve", style="curve", markers=True, ax=ax)
    ax.set(title=title, xlabel="optimizer step", ylabel="cross-entropy loss (nats per token)")
    save(fig, out)
    return fig
