"""The multitask core every model family shares: the two tasks, their examples, batches and decoding options.

Each segment gives one example per task that has its text: `transcribe` learns the code-switched transcript,
`translate` the English translation (none for a segment without one). A family (lib.families) decides how a task's
text becomes label tokens and how audio becomes model inputs; everything else here is the same for every family.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode one task: beam width, generated tokens at most (prefix included), segments per batch, and
    Whisper's two guards.

    - The no-speech rule: an output is emptied when its no-speech probability is above `no_speech_threshold` and its
      average log-probability below `logprob_threshold` (a family without a no-speech probability is never gated; a
      threshold of 1 turns the gate off).
    - The temperature fallback: an output that loops (its compression ratio above `compression_ratio_threshold`) is
      decoded again by sampling at each of `temperatures` in turn until it no longer does, unless the no-speech rule
      calls it silence (`with_fallback`; no temperatures: no fallback)."""

    task: str
    num_beams: int
    max_length: int
    batch_size: int
    no_speech_threshold: float = 1.0
    logprob_threshold: float = 0.0
    compression_ratio_threshold: float = 2.4
    temperatures: tuple[float, ...] = ()
    language: str = SOURCE_LANGUAGE  # of the speech, forced for the transcript (the translation is English)
    timestamps: bool = False  # the times of what is said inside each input, where the family gives them (Decoded.timed)

    @classmethod
    def for_test(cls, task: str, evaluation, language: str = SOURCE_LANGUAGE) -> "DecodingOptions":
        """A set scored in 05 (speech in `language`), from the params' `evaluation` section."""
        return cls(task, evaluation.num_beams, evaluation.max_length, evaluation.batch_size,
                   evaluation.no_speech_threshold, evaluation.logprob_threshold,
                   evaluation.compression_ratio_threshold, tuple(evaluation.fallback_temperatures), language)

    @classmethod
    def for_validation(cls, task: str, hp) -> "DecodingOptions":
        """Val scoring during training, from a family's params section: greedy, ungated and without fallback, so that
        scoring every checkpoint stays cheap; the kept checkpoint is decoded with the test settings in 05."""
        return cls(task, 1, hp.max_length, hp.eval_batch_size)


def compression_ratio(text: str) -> float:
    """The text's UTF-8 length over its zlib-compressed length, as Whisper measures repetition (a loop compresses
    well: above 2.4 is Whisper's sign of one)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Decoded:
    """One task's outputs for a list of inputs: the texts as the model wrote them, whether the fallback decoded each
    again and the temperature of the attempt kept (above 0: a sampled one), and, where the family gives them, each
    output's no-speech probability (at the start of the transcript) and average log-probability per token, and with
    timestamps asked for, the timed stretches of each text (seconds from the input's start; an end of None: the
    input's end)."""

    texts: list[str]
    no_speech_prob: list[float] | None = None
    avg_logprob: list[float] | None = None
    temperature: list[float] = field(default_factory=list)
    retried: list[bool] = field(default_factory=list)  # decoded again by the fallback (whichever attempt was kept)
    timed: list[list[tuple[float, float | None, str]]] | None = None  # with timestamps: (start, end, text) per output

    def __post_init__(self):
        self.temperature = self.temperature or [0.0] * len(self.texts)
        self.retried = self.retried or [False] * len(self.texts)

    def silenced(self, options: DecodingOptions) -> list[bool]:
        """Which outputs the no-speech rule of `options` empties."""
        if self.no_speech_prob is None or self.avg_logprob is None:
            return [False] * len(self.texts)
        return [p > options.no_speech_threshold and lp < options.logprob_threshold
                for p, lp in zip(self.no_speech_prob, self.avg_logprob)]

    def gated(self, options: DecodingOptions) -> list[str]:
        """The texts a deployed model gives: emptied where the no-speech rule says."""
        return ["" if quiet else text for text, quiet in zip(self.texts, self.silenced(options))]

    def needs_fallback(self, options: DecodingOptions) -> list[bool]:
        """Which outputs the fallback decodes again: those that loop, unless the no-speech rule calls them silence
        (the gate empties those). openai/whisper also decodes unsure outputs again (average log-probability below
        `logprob_threshold`); on the demo that decoded 7 of 16 held-out translations again and doubled that set's
        decoding time, for no gain its intervals could show, so only loops are decoded again here."""
        silenced = self.silenced(options)
        return [compression_ratio(t) > options.compression_ratio_threshold and not quiet
                for t, quiet in zip(self.texts, silenced)]

    def select(self, order) -> "Decoded":
        """The outputs at the positions `order` gives, in that order."""
        no_speech_prob, avg_logprob, timed = [None if values is None else [values[i] for i in order]
                                              for values in (self.no_speech_prob, self.avg_logprob, self.timed)]
        return Decoded([self.texts[i] for i in order], no_speech_prob, avg_logprob,
                       [self.temperature[i] for i in order], [self.retried[i] for i in order], timed)

    def extend(self, other: "Decoded") -> None:
        """`other`'s outputs appended after these."""
        self.texts += other.texts
        self.temperature += other.temperature
        self.retried += other.retried
        if other.no_speech_prob is not None:
            self.no_speech_prob = (self.no_speech_prob or []) + other.no_speech_prob
            self.avg_logprob = (self.avg_logprob or []) + other.avg_logprob
        if other.timed is not None:
            self.timed = (self.timed or []) + other.timed


@dataclass
class Piece:
    """Text a model wrote for a stretch of a whole recording (seconds from its start): lib.longform; with the
    no-speech probability and average log-probability of its decode where the family gives them."""

    start: float
    end: float
    text: str
    no_speech_prob: float | None = None
    avg_logprob: float | None = None


def with_fallback(first: Decoded, again: Callable[[list[int], float], Decoded], options: DecodingOptions) -> Decoded:
    """Whisper's temperature fallback on `first` (one batch's outputs, decoded at temperature 0): the outputs that
    need it (`Decoded.needs_fallback`) decoded again by `again(rows, temperature)` at each of the options'
    temperatures in turn, until they pass. Where every attempt fails, the attempt kept is faster-whisper's choice:
    the most confident (highest average log-probability) of those that do not loop, or of all when every one loops
    (openai/whisper keeps the last, which after sampling at 1.0 is often the worst). The no-speech probability is
    the first decode's: it is read before any token is written."""
    attempts = {i: [(first.texts[i], first.avg_logprob[i] if first.avg_logprob else 0.0, 0.0,
                     first.timed[i] if first.timed else None)]
                for i, need in enumerate(first.needs_fallback(options)) if need}
    rows = list(attempts)
    for temperature in options.temperatures:
        if not rows:
            break
        retried = again(rows, temperature)
        if first.no_speech_prob is not None:
            retried.no_speech_prob = [first.no_speech_prob[i] for i in rows]
        for k, i in enumerate(rows):
            attempts[i].append((retried.texts[k], retried.avg_logprob[k] if retried.avg_logprob else 0.0,
                                temperature, retried.timed[k] if retried.timed else None))
        rows = [i for i, need in zip(rows, retried.needs_fallback(options)) if need]
    failed = set(rows)  # every row that needed it, when there were no temperatures to try
    for i, tried in attempts.items():
        if i in failed:
            plain = [a for a in tried if compression_ratio(a[0]) <= options.compression_ratio_threshold] or tried
            text, logprob, temperature, timed = max(plain, key=lambda a: a[1])
        else:
            text, logprob, temperature, timed = tried[-1]
        first.texts[i], first.temperature[i], first.retried[i] = text, temperature, True
        if first.avg_logprob is not None:
            first.avg_logprob[i] = logprob
        if first.timed is not None:
            first.timed[i] = timed
    return first
