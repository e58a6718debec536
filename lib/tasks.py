"""The multitask core every model family shares: the two tasks, their examples and batches (decoding: lib.decoding).

Each segment gives one example per task that has its text: `transcribe` learns the code-switched transcript,
`translate` the English translation (none for a segment without one). A family (lib.families) decides how a task's
text becomes label tokens and how audio becomes model inputs; everything else here is the same for every family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lib.audio import SAMPLE_RATE

TASKS = ("transcribe", "translate")
SOURCE_LANGUAGE = "vi"  # the speech's language a decode forces, unless a set names another (a retention set's "en")
TEXT_COLUMN = {"transcribe": "transcript", "translate": "translation"}  # the manifest column each task learns


@dataclass
class Example:
    row: int  # index into the cached split
    task: str
    labels: list[int]
    prefix: int = 0  # leading label tokens (after a start token the model adds) given as input but not learned


def task_examples(dataset, split: str, tokenize: Callable[[str, list[int], list[str]], list[list[int]]],
                  reject: Callable[[int, list[int]], str | None]) -> tuple[list[Example], list[dict]]:
    """Per task, tokenize the rows that have its text (`tokenize(task, rows, texts)`), and keep each example unless
    `reject(row, labels)` gives a reason, in which case it is listed with the reason instead."""
    kept, filtered = [], []
    ids = dataset["id"]
    for task in TASKS:
        texts = dataset[TEXT_COLUMN[task]]
        wanted = [i for i, t in enumerate(texts) if t]
        labels = tokenize(task, wanted, [texts[i] for i in wanted]) if wanted else []
        for row, label in zip(wanted, labels):
            reason = reject(row, label)
            if reason:
                filtered.append({"split": split, "id": ids[row], "task": task, "reason": reason})
            else:
                kept.append(Example(row, task, label))
    return kept, filtered


class ExampleSet:
    """Examples over a cached split (a map-style dataset, as torch's DataLoader reads it): each item is the segment's
    model input (`column`) and the task's labels.

    `task` names the one task of a val set (None for a training set mixing both); `lengths` (samples at 16 kHz)
    lets the Trainer group batches by length without a pass over the data; `transform`, where given, makes each item
    what the model reads (training's augmentation, `Family.training_transform`)."""

    def __init__(self, dataset, examples: list[Example], column: str, task: str | None = None,
                 transform: Callable[[dict], dict] | None = None):
        self.inputs = dataset.with_format("numpy", columns=[column])
        self.examples = examples
        self.column = column
        self.task = task
        self.transform = transform
        durations = dataset["duration"]
        self.lengths = [int(durations[e.row] * SAMPLE_RATE) for e in examples]
        self.example_count = len(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        item = {self.column: self.inputs[example.row][self.column], "labels": example.labels,
                "prefix": example.prefix}
        return self.transform(item) if self.transform else item


class SegmentSet:
    """Training examples grouped by the input they share: each item is one cached input (`column`) with the labels
    of each of its tasks (`task_labels`), so that a batch runs the encoder once per input (see
    `families.base.share_encoder`). `lengths` and `transform` as for ExampleSet, one length per input."""

    def __init__(self, dataset, examples: list[Example], column: str, transform: Callable[[dict], dict] | None = None):
        self.inputs = dataset.with_format("numpy", columns=[column])
        self.column = column
        self.transform = transform
        grouped: dict[int, list[Example]] = {}
        for example in examples:
            grouped.setdefault(example.row, []).append(example)
        self.groups = list(grouped.values())
        self.example_count = len(examples)
        durations = dataset["duration"]
        self.lengths = [int(durations[group[0].row] * SAMPLE_RATE) for group in self.groups]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict:
        group = self.groups[index]
        item = {self.column: self.inputs[group[0].row][self.column], "task_labels": [e.labels for e in group],
                "task_prefixes": [e.prefix for e in group]}
        return self.transform(item) if self.transform else item


def val_sets(dataset, examples: list[Example], column: str, limit: int) -> dict[str, ExampleSet]:
    """One val set per task, each of its first `limit` examples (0: all)."""
    sets = {}
    for task in TASKS:
        chosen = [e for e in examples if e.task == task]
        sets[task] = ExampleSet(dataset, chosen[:limit] if limit else chosen, column, task)
    return sets


def pad_labels(tokenizer, labels: list[list[int]], decoder_start_token_id: int):
    """Labels padded with -100, masked by the attention mask rather than the pad id (Whisper's pad id is its EOS id,
    so the first EOS must stay), as a tensor. A leading decoder start token is stripped: the model prepends it when
    it shifts the labels right."""
    padded = tokenizer.pad({"input_ids": labels}, return_tensors="pt")
    labels = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), -100)
    if (labels[:, 0] == decoder_start_token_id).all():
        labels = labels[:, 1:]
    return labels


def with_prefixes(labels, prefixes: list[int], decoder_start_token_id: int, pad_token_id: int) -> dict:
    """`labels` and `decoder_input_ids` for rows whose first `prefixes[i]` labels are given but not learned: the
    decoder still reads them (the labels shifted right, as the model would shift them), and the loss skips them."""
    import torch

    inputs = torch.cat([torch.full_like(labels[:, :1], decoder_start_token_id), labels[:, :-1]], dim=1)
    learned = labels.clone()
    for row, prefix in enumerate(prefixes):
        learned[row, :prefix] = -100
    return {"labels": learned, "decoder_input_ids": inputs.masked_fill(inputs.eq(-100), pad_token_id)}
