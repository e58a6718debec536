"""The params' precision (`fp32`, `fp16`, `bf16`) as torch and the Trainer take it: half precision needs a GPU, so on
a CPU everything runs in fp32 (with a warning where training asked for less)."""
from __future__ import annotations

import logging

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

log = logging.getLogger("lib.precision")


def dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype to run a model in on `device`."""
    return DTYPES[precision] if device.type == "cuda" else torch.float32


def trainer_flags(precision: str) -> dict[str, bool]:
    """Seq2SeqTrainingArguments flags (`fp16=True` or `bf16=True`) for the precision."""
    if precision == "fp32":
        return {}
    if not torch.cuda.is_available():
        log.warning("%s needs a GPU; training in fp32 on the CPU", precision)
        return {}
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("precision bf16: this GPU does not support bfloat16; use fp16 in the params")
    return {precision: True}
