"""Whisper's training data: multitask examples over the cached features, the collator, and batched decoding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib import atomic, features

TASKS = ("transcribe", "translate")
SOURCE_LANGUAGE = "vi"
MAX_LABEL_TOKENS = 448  # Whisper's decoder positions


@dataclass
class Example:
    row: int  # index into the cached features
    task: str
    labels: list[int]


def task_examples(dataset, split: str, tokenize, reject) -> tuple[list[Example], list[dict]]:
    """The loop both model families share: per task, tokenize the segments that have its text (`tokenize(task,
    texts)`), and keep each example unless `reject(row, labels)` gives a reason, in which case it is listed."""
    kept, filtered = [], []
    ids = dataset["id"]
    for task in TASKS:
        texts = dataset["transcript" if task == "transcribe" else "translation"]
        wanted = [i for i, t in enumerate(texts) if t]
        labels = tokenize(task, [texts[i] for i in wanted]) if wanted else []
        for row, label in zip(wanted, labels):
            reason = reject(row, label)
            if reason:
                filtered.append({"split": split, "id": ids[row], "task": task, "reason": reason})
            else:
                kept.append(Example(row, task, label))
    return kept, filtered


def multitask_examples(dataset, tokenizer, window_seconds: float, split: str) -> tuple[list[Example], list[dict]]:
    """Two examples per segment (one without a translation gives one); segments longer than the model's window and
    labels over 448 tokens are left out and listed with the reason."""
    durations = dataset["duration"]

    def tokenize(task, texts):
        tokenizer.set_prefix_tokens(language=SOURCE_LANGUAGE, task=task, predict_timestamps=False)
        return tokenizer(texts).input_ids

    def reject(row, labels):
        if durations[row] > window_seconds:
            return f"audio {durations[row]:.1f} s is longer than the model's {window_seconds:.0f} s window"
        if len(labels) > MAX_LABEL_TOKENS:
            return f"label has {len(labels)} tokens, over Whisper's {MAX_LABEL_TOKENS}"
        return None

    return task_examples(dataset, split, tokenize, reject)


class WhisperExamples(torch.utils.data.Dataset):
    """Examples over cached features: the log-mel of the segment and the tokenized label of the task."""

    def __init__(self, dataset, examples: list[Example]):
        self.features = dataset.with_format("numpy", columns=["input_features"])
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        return {"input_features": self.features[example.row]["input_features"], "labels": example.labels}


@dataclass
class WhisperCollator:
    """Pads log-mels to the model's window and labels with -100.

    Whisper's pad id equals its EOS id, so labels are masked by the attention mask (which keeps the first EOS), not
    by the pad id. The leading `<|startoftranscript|>` is stripped: the model prepends it when it shifts the labels.
    """

    tokenizer: object
    decoder_start_token_id: int
    window_frames: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        input_features = torch.from_numpy(features.pad_log_mel([b["input_features"] for b in batch],
                                                               self.window_frames))
        padded = self.tokenizer.pad({"input_ids": [b["labels"] for b in batch]}, return_tensors="pt")
        labels = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), -100)
        if (labels[:, 0] == self.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": input_features, "labels": labels}


def label_table(cached: dict, processor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per example: split, task, duration and label tokens; and the filtered examples with their reasons."""
    window = processor.feature_extractor.chunk_length
    rows, filtered = [], []
    for name, split in cached.items():
        dataset = split.load()
        kept, dropped = multitask_examples(dataset, processor.tokenizer, window, name)
        durations = dataset["duration"]
        rows += [{"split": name, "task": e.task, "duration": durations[e.row], "label_tokens": len(e.labels)}
                 for e in kept]
        filtered += dropped
    return pd.DataFrame(rows), pd.DataFrame(filtered, columns=["split", "id", "task", "reason"])


def write_filtered(path, filtered: pd.DataFrame) -> None:
    atomic.write_tsv(path, list(filtered.columns), filtered.astype(str).values.tolist())


def generation_kwargs(model, task: str) -> dict:
    """Force the language and task, keep the KV cache, and suppress timestamp tokens: without timestamps asked for, a
    timestamp in the output (as an untrained model emits) would send Whisper's generate into its long-form seek loop."""
    config = model.generation_config
    timestamps = range(config.no_timestamps_token_id + 1, model.config.vocab_size)
    return {"language": SOURCE_LANGUAGE, "task": task, "use_cache": True,
            "suppress_tokens": sorted(set(config.suppress_tokens or []) | set(timestamps))}


def decode(model, processor, log_mels: list[np.ndarray], task: str, max_length: int, num_beams: int = 1,
           batch_size: int = 16) -> list[str]:
    """Generate for cached log-mels with the language and task forced; returns the decoded texts."""
    window = processor.feature_extractor.nb_max_frames
    device = next(model.parameters()).device
    texts = []
    model.eval()
    for first in range(0, len(log_mels), batch_size):
        batch = torch.from_numpy(features.pad_log_mel(log_mels[first:first + batch_size], window))
        with torch.inference_mode():
            ids = model.generate(batch.to(device, model.dtype), max_length=max_length, num_beams=num_beams,
                                 **generation_kwargs(model, task))
        texts += processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in texts]
