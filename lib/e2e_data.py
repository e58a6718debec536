"""The E2E model's training data: per-task examples over cached waveforms, the collator, and batched decoding.

A transcript's label is `vi_VN` + transcript + `</s>`, a translation's `en_XX` + translation + `</s>` (mBART-50's
target format); the model prepends `</s>` (decoder_start_token_id 2) when it shifts the labels. At generation the
task's language code is forced as the first token (`forced_bos_token_id`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.audio import SAMPLE_RATE
from lib.models import E2E_LANGUAGES, MBART_DECODER_START
from lib.whisper_data import Example, task_examples


def multitask_examples(dataset, tokenizer, max_label_tokens: int, split: str) -> tuple[list[Example], list[dict]]:
    """One example per segment and task (none for a missing translation); labels over the decoder's positions are
    left out and listed."""
    def tokenize(task, texts):
        tokenizer.tgt_lang = E2E_LANGUAGES[task]
        return tokenizer(text_target=texts).input_ids

    def reject(row, labels):
        if len(labels) > max_label_tokens:
            return f"label has {len(labels)} tokens, over the decoder's {max_label_tokens}"
        return None

    return task_examples(dataset, split, tokenize, reject)


class WaveformExamples(torch.utils.data.Dataset):
    """Examples over cached waveforms; `lengths` (samples) lets the Trainer group batches by length."""

    def __init__(self, dataset, examples: list[Example]):
        self.waves = dataset.with_format("numpy", columns=["input_values"])
        self.examples = examples
        durations = dataset["duration"]
        self.lengths = [int(durations[e.row] * SAMPLE_RATE) for e in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        return {"input_values": self.waves[example.row]["input_values"], "labels": example.labels}


@dataclass
class WaveformCollator:
    """Normalizes and pads waveforms with an attention mask (wav2vec2 inputs are not padded to a fixed length), and
    pads labels with -100 by their attention mask."""

    feature_extractor: object
    tokenizer: object

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        inputs = self.feature_extractor([np.asarray(b["input_values"], np.float32) for b in batch],
                                        sampling_rate=self.feature_extractor.sampling_rate, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
        padded = self.tokenizer.pad({"input_ids": [b["labels"] for b in batch]}, return_tensors="pt")
        labels = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), -100)
        return {"input_values": inputs["input_values"], "attention_mask": inputs["attention_mask"], "labels": labels}


def generation_kwargs(tokenizer, task: str) -> dict:
    """Start with </s> and force the task's language code as the first generated token."""
    return {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(E2E_LANGUAGES[task]),
            "decoder_start_token_id": MBART_DECODER_START, "use_cache": True}


def decode(model, feature_extractor, tokenizer, waves: list[np.ndarray], task: str, max_length: int,
           num_beams: int = 1, batch_size: int = 16) -> list[str]:
    """Generate for cached waveforms in the task's language; returns the decoded texts."""
    device = next(model.parameters()).device
    collator = WaveformCollator(feature_extractor, tokenizer)
    texts = []
    model.eval()
    for first in range(0, len(waves), batch_size):
        chunk = waves[first:first + batch_size]
        batch = collator([{"input_values": w, "labels": [MBART_DECODER_START]} for w in chunk])
        with torch.inference_mode():
            ids = model.generate(batch["input_values"].to(device, model.dtype), attention_mask=batch["attention_mask"].to(device),
                                 max_length=max_length, num_beams=num_beams, **generation_kwargs(tokenizer, task))
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in texts]
