"""Stage 02: each model family's starting model and cached inputs, and the examples it will train on.

For every family the params name, the starting model is loaded (the demo's tiny models are built first), each
split's inputs are cached (lib.features; train as training reads it: segments, or packed windows), and the examples
are counted with their label lengths.
Examples a family cannot train on (audio longer than its window, labels over its decoder's positions) are listed
in `features/<family>_filtered.tsv` with the reason, never dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lib import atomic, config, families, features

FILTERED_COLUMNS = ["split", "id", "task", "reason"]


@dataclass
class Prepared:
    """One family's stage 02: its starting model, its caches, its examples and the ones left out."""

    family: families.Family
    bundle: families.Bundle
    cached: dict[str, features.CachedSplit]
    examples: pd.DataFrame  # split, task, duration, label_tokens, speech: one row per example
    filtered: pd.DataFrame  # split, id, task, reason: one row per example left out

    def describe(self) -> dict:
        """What a reader checks first: the model's size, its input window, its vocabulary, the examples kept."""
        train = self.examples[self.examples.split == "train"]
        return {**self.family.describe(self.bundle), "examples": len(self.examples),
                "non-speech examples": int((~train.speech).sum()), "filtered": len(self.filtered)}


def prepare(params: config.Params, name: str) -> Prepared:
    """Stage 02 for the family `name`: writes the caches and `features/<name>_filtered.tsv`."""
    family, hp, paths = families.get(name), params.section(name), params.paths
    bundle = family.starting_model(hp, paths, params.seed)
    cached = {"train": family.training_cache(hp, paths, bundle),  # what training draws from: segments or windows
              **family.prepare_features(paths, bundle, splits=config.SPLITS[1:])}
    rows, filtered = [], []
    for split, cache in cached.items():
        if split == "train":  # with the non-speech clips training adds
            dataset, kept, dropped = family.training_data(hp, paths, bundle, params.seed, params.noise_dir)
        else:
            dataset = cache.load()
            kept, dropped = family.examples(bundle, dataset, split)
        durations = dataset["duration"]
        texts = dataset["transcript"]
        rows += [{"split": split, "task": e.task, "duration": durations[e.row], "label_tokens": len(e.labels),
                  "speech": bool(texts[e.row])}
                 for e in kept]
        filtered += dropped
    prepared = Prepared(family, bundle, cached, pd.DataFrame(rows), pd.DataFrame(filtered, columns=FILTERED_COLUMNS))
    atomic.write_frame(paths.features / f"{name}_filtered.tsv", prepared.filtered)
    return prepared


def label_summary(prepared: Prepared) -> pd.DataFrame:
    """Examples per split and task, with their mean and longest label and their longest audio."""
    return prepared.examples.groupby(["split", "task"]).agg(
        examples=("label_tokens", "size"), mean_tokens=("label_tokens", "mean"), max_tokens=("label_tokens", "max"),
        max_seconds=("duration", "max")).round(1)
