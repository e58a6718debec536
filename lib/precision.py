"""The params' precision (`fp32`, `fp16`, `bf16`) as torch and the Trainer take it. On a GPU, as asked. On a CPU,
bf16 where the CPU computes bfloat16 itself (AVX512-BF16 or AMX): training autocasts over fp32 weights (a whisper-base
step 1.6x faster on a 2-core AMD EPYC) and 05 decodes in it (whisper-base's encoder 1.8x faster there); fp32
elsewhere (emulated bf16 would be slower; fp16 needs a GPU), with a warning where training asked for less."""
from __future__ import annotations

import logging

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

log = logging.getLogger("lib.precision")


def dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a model decodes in on `device`: on a GPU as asked; on a CPU bf16 where asked and the CPU computes
    it itself (`native_cpu_bf16`), else fp32."""
    if device.type == "cuda" or (precision == "bf16" and native_cpu_bf16()):
        return DTYPES[precision]
    return torch.float32


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 itself (torch's checks for AVX512-BF16 and AMX)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def trainer_flags(computed: str) -> dict[str, bool]:
    """Seq2SeqTrainingArguments flags (`fp16=True` or `bf16=True`) for a precision `training` gave."""
    return {computed: True} if computed != "fp32" else {}


def training(precision: str) -> str:
    """The precision training computes in here (see the module's docstring)."""
    if precision == "fp32":
        return precision
    if torch.cuda.is_available():
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("precision bf16: this GPU does not support bfloat16; use fp16 in the params")
        return precision
    if precision == "bf16" and native_cpu_bf16():
        return precision
    log.warning("%s needs a GPU%s; training in fp32 on the CPU", precision,
                " or a CPU with native bfloat16 (AVX512-BF16, AMX)" if precision == "bf16" else "")
    return "fp32"
