"""Padding efficiency of E2E batches: real audio samples / padded samples, with and without length grouping.

wav2vec2 inputs are padded to the longest waveform of their batch, so every padded sample is compute spent on
silence. Over the demo's training examples (transcript and translation of each segment) and five shuffles:
- ours: the Trainer's `LengthGroupedSampler`, which 04 uses (`train_sampling_strategy="group_by_length"`);
- reference: the random batches of the example script's default.

    python -m bench.padding
"""
from __future__ import annotations

import numpy as np
import torch

from bench import common
from lib.audio import SAMPLE_RATE

SHUFFLES = 5


def efficiency(lengths: list[int], order: list[int], batch_size: int) -> float:
    real = padded = 0
    for first in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[first:first + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return real / padded


def main() -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    params = common.bench_params("padding", fresh=False)
    batch_size = params.e2e.batch_size
    segments = common.split_segments(params, ("train",))
    lengths = [int(s.duration * SAMPLE_RATE) for s in segments] + [
        int(s.duration * SAMPLE_RATE) for s in segments if s.translation]
    grouped, shuffled = [], []
    for seed in range(SHUFFLES):
        generator = torch.Generator().manual_seed(seed)
        grouped.append(efficiency(lengths, list(LengthGroupedSampler(batch_size, lengths=lengths,
                                                                     generator=generator)), batch_size))
        shuffled.append(efficiency(lengths, torch.randperm(len(lengths), generator=generator).tolist(), batch_size))
    common.report("padding", [common.Row(f"E2E padding efficiency ({len(lengths)} examples, batch {batch_size})",
                                         "% real samples", 100 * np.mean(grouped), 100 * np.mean(shuffled))],
                  {"per_shuffle": {"grouped": grouped, "random": shuffled}})


if __name__ == "__main__":
    main()
