"""The starting model's decodes, kept per machine: no run changes the model a run starts from, so 05 decodes each of
its sets with it once, and later runs read what it wrote (`evaluation.reuse_starting_decodes`).

An entry is found by everything that decides its outputs: the model's weights (the export's `model.bin`, or the
parameters themselves), its runtime and dtype, the library versions, the inputs, their lengths, the decoding options
and the source of the code that decodes. Anything else decodes anew and is kept. Entries live in
`$VI_EN_CS_DECODES`, else `lib.ct2.cache_dir()/decodes/`; deleting the folder only costs time."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from lib import atomic, decoding

LIB = Path(__file__).resolve().parent
SOURCES = ("decoding.py", "whisper_tokens.py", "families/base.py", "families/whisper.py", "families/e2e.py")


def folder() -> Path:
    from lib import ct2

    return Path(os.environ.get("VI_EN_CS_DECODES") or ct2.cache_dir() / "decodes")


@functools.cache
def code_digest() -> str:
    """The decoding code's source and the versions of what runs it."""
    import ctranslate2
    import torch
    import transformers

    digest = hashlib.sha256(f"{torch.__version__} {transformers.__version__} {ctranslate2.__version__} "
                            f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}".encode())
    for name in SOURCES:
        digest.update((LIB / name).read_bytes())
    return digest.hexdigest()


def model_identity(model, runtime: dict) -> str:
    """What the model computes with: the export's `model.bin` where an export runtime decodes it, else its parameters
    and buffers, with the runtime, dtype and device `runtime` names."""
    import torch

    digest = hashlib.sha256(json.dumps({k: v for k, v in runtime.items() if k != "export"}, sort_keys=True).encode())
    if runtime.get("export"):
        with open(Path(runtime["export"]) / "model.bin", "rb") as weights:
            for block in iter(lambda: weights.read(1 << 24), b""):
                digest.update(block)
    else:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class Decoded:
    """A decode's outputs (task -> one per input), the seconds the decode that wrote them took, and whether they were
    read from an earlier run's."""

    outputs: dict[str, list[decoding.Output]]
    seconds: float
    reused: bool


def decode(identity: str | None, decoder: decoding.Decoder, inputs: list[np.ndarray], seconds: list[float],
           options: list[decoding.DecodingOptions]) -> Decoded:
    """`decoding.decode`, read from the entry of the same model, inputs, options and code when one is kept (with
    `identity`, a `model_identity`), else decoded and kept; without `identity`, decoded."""
    if identity is None:
        return _decoded(decoder, inputs, seconds, options)
    digest = hashlib.sha256(f"{identity} {code_digest()}".encode())
    digest.update(json.dumps([dataclasses.asdict(o) for o in options], sort_keys=True).encode())
    digest.update(json.dumps([round(s, 6) for s in seconds]).encode())
    for x in inputs:
        digest.update(f"{x.dtype} {x.shape}".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    entry = folder() / f"{digest.hexdigest()[:32]}.json"
    if entry.exists():
        kept = json.loads(entry.read_text(encoding="utf-8"))
        outputs = {task: [decoding.Output(**{**o, "timed": [tuple(t) for t in o["timed"]] if o["timed"] else None})
                          for o in found] for task, found in kept["outputs"].items()}
        return Decoded(outputs, kept["seconds"], True)
    found = _decoded(decoder, inputs, seconds, options)
    kept = {"seconds": found.seconds, "outputs": {task: [dataclasses.asdict(o) for o in outputs]
                                                  for task, outputs in found.outputs.items()}}
    atomic.write_text(entry, json.dumps(kept, default=lambda x: x.item() if isinstance(x, np.generic) else x,
                                        ensure_ascii=False))
    return found


def _decoded(decoder, inputs, seconds, options) -> Decoded:
    began = time.perf_counter()
    outputs = decoding.decode(decoder, inputs, seconds, options)
    return Decoded(outputs, time.perf_counter() - began, False)
