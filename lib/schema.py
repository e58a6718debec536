"""The leaf under lib.config and the model families: where a run's files go, the params every family section shares,
and the strict reading of params into frozen dataclasses. It imports nothing from lib, and nothing heavy.

Reading is strict: every field is required, unknown keys are errors, and every error names its key
(``whisper.learning_rate: expected a number, got str 'fast'``). YAML 1.1 reads ``1e-4`` as a string; a float field
takes it as a float all the same. Relative paths are relative to the project root (the folder holding ``params/``),
whatever the current directory, so a notebook opened in JupyterLab and the headless runner read the same files.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
SPLITS = ("train", "val", "test")

Precision = Literal["fp32", "fp16", "bf16"]
MayBeEmpty = Annotated[str, "may be empty"]  # a string the params may leave empty ("") to mean none


class ParamsError(ValueError):
    """Every problem found in a params file, one per line, each naming its key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid parameters:\n" + "\n".join(f"  - {p}" for p in problems))


def resolve(path: str | Path) -> Path:
    """A path from a params file, relative to the project root unless absolute."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes, under `outputs/<profile>/`."""

    root: Path

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def model(self, family: str) -> Path:
        """A model family's checkpoints and `final/`."""
        return self.root / family

    @property
    def results(self) -> Path:
        return self.root / "results"

    def metrics(self, family: str, split: str = "test", untrained: bool = False) -> Path:
        """05's metrics of a family's trained (or starting) model on a split."""
        return self.results / f"{result_name(family, split, untrained)}_metrics.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def charts(self) -> Path:
        return self.root / "charts"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        """Each stage's library messages (warnings, load reports), kept out of the executed reports."""
        return self.root / "logs"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"


def result_name(family: str, split: str = "test", untrained: bool = False) -> str:
    """How 05 names a model's results: `whisper` (trained, test split), `whisper_heldout`, `whisper_untrained_heldout`."""
    return family + ("_untrained" if untrained else "") + ("" if split == "test" else f"_{split}")


@dataclass(frozen=True)
class TrainingParams:
    """What every model family's section holds: batches, schedule, precision, checkpoints, decoding during training.
    A family's params dataclass adds the models it loads (see lib.families)."""

    build_tiny: bool  # build tiny random-weight models at the named folders if they do not exist (demo, tests)
    license: MayBeEmpty  # the model card's license ("": the base model's, the family's `license`)
    batch_size: int
    eval_batch_size: int
    grad_accum: int
    learning_rate: float
    warmup_ratio: float
    max_grad_norm: float  # gradients clipped to this norm (0: no clipping)
    epochs: float
    precision: Precision
    gradient_checkpointing: bool
    share_encoder: bool  # a segment's examples train on one encoder pass; batch_size then counts segments
    freeze_encoder: bool  # train the decoder only (fast and small; gives most acoustic adaptation away)
    lora_rank: int  # > 0: train LoRA adapters of this rank on lora_targets instead of the weights (peft)
    lora_alpha: float  # LoRA scaling (alpha / rank multiplies the adapters' output)
    lora_targets: tuple[str, ...]  # names of the modules that get adapters (q_proj, v_proj, ...)
    checkpoint_steps: int  # evaluate on val and save a checkpoint every this many optimizer steps
    logging_steps: int
    eval_segments: int  # val segments scored during training per task (0: all)
    max_length: int  # generated tokens at most when val is decoded, prefix included
    dataloader_workers: int
    resume: bool  # continue from the last complete checkpoint in the output folder
    nonspeech_share: float  # share of training inputs that are non-speech clips with the no-speech target (0: none)
    speed_perturbation: float  # s: each training input played at 1 - s, 1 or 1 + s (lib.augment; 0: off)
    additive_noise: float  # share of training inputs with non-speech noise mixed in at 10-20 dB SNR (0: off)
    spec_augment: float  # share of the input's frames and of its channels SpecAugment masks in training (0: off)
    voice_perturbation: float  # share of training inputs spoken by another voice: pitch, formants and rate (0: off)
    reverb: float  # share of training inputs heard in a simulated room (0: off)
    band_limit: float  # share of training inputs through a band-pass, telephone to laptop microphone (0: off)
    codec: float  # share of training inputs through a lossy codec: MP3, Opus, Vorbis or GSM (0: off)

    def check(self) -> list[str]:
        problems = [f"{name}: must be at least 1" for name in ("batch_size", "eval_batch_size", "grad_accum",
                    "checkpoint_steps", "logging_steps", "max_length") if getattr(self, name) < 1]
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio: must be in [0, 1)")
        if self.lora_rank < 0 or (self.lora_rank and not self.lora_targets):
            problems.append("lora_rank: must be 0 (no LoRA) or more, with lora_targets naming modules")
        if self.max_grad_norm < 0:
            problems.append("max_grad_norm: must be 0 or more")
        if self.epochs <= 0 or self.learning_rate <= 0:
            problems.append("epochs and learning_rate: must be above 0")
        if not 0 <= self.nonspeech_share < 1:
            problems.append("nonspeech_share: must be in [0, 1)")
        if not 0 <= self.speed_perturbation < 0.5:
            problems.append("speed_perturbation: must be in [0, 0.5) (0.1: the factors 0.9, 1.0, 1.1)")
        if not 0 <= self.additive_noise <= 1 or not 0 <= self.spec_augment < 0.5:
            problems.append("additive_noise: must be in [0, 1]; spec_augment: in [0, 0.5)")
        problems += [f"{key}: must be in [0, 1] (a share of the training inputs)"
                     for key in ("voice_perturbation", "reverb", "band_limit", "codec")
                     if not 0 <= getattr(self, key) <= 1]
        return problems


# --- reading --------------------------------------------------------------------------------------------------------

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def build(cls, raw: Any, prefix: str, problems: list[str]):
    """A params dataclass from a mapping, its own cross-field `check` included; None (and problems) if invalid."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix.rstrip('.')}: expected a mapping, got {show(raw)}")
        return None
    hints = typing.get_type_hints(cls, include_extras=True)
    problems_before = len(problems)
    values = build_fields({f.name: hints[f.name] for f in fields(cls)}, raw, prefix, problems)
    if len(problems) > problems_before:
        return None
    obj = cls(**values)
    if hasattr(obj, "check"):  # cross-field checks need valid fields
        problems.extend(f"{prefix}{p}" for p in obj.check())
    return obj


def build_fields(schema: dict[str, Any], raw: Mapping[str, Any], prefix: str, problems: list[str]) -> dict[str, Any]:
    """Each key of `schema` (name -> type) read from `raw`; unknown and missing keys are problems."""
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{prefix}{key}: unknown key{hint}")
    values = {}
    for name, hint in schema.items():
        if name not in raw or raw[name] is None:
            problems.append(f"{prefix}{name}: missing value")
            continue
        values[name] = coerce(raw[name], hint, f"{prefix}{name}", problems)
    return values


def coerce(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """`value` as the type `hint` says, or None with a problem naming `key`."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        inner, *notes = typing.get_args(hint)
        return value if value == "" and "may be empty" in notes else coerce(value, inner, key, problems)
    if origin is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {show(value)}")
            return None
        return tuple(coerce(item, typing.get_args(hint)[0], f"{key}[{i}]", problems) for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return coerce(value, inner[0], key, problems)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        problems.append(f"{key}: expected one of {', '.join(map(str, choices))}, got {show(value)}")
        return None
    if dataclasses.is_dataclass(hint):
        return build(hint, value, f"{key}.", problems)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {show(value)}")
        return None
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{key}: expected an integer, got {show(value)}")
        return None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)
        problems.append(f"{key}: expected a number, got {show(value)}")
        return None
    if hint is str:
        if isinstance(value, str) and value.strip():
            return value
        problems.append(f"{key}: expected a non-empty string, got {show(value)}")
        return None
    raise TypeError(f"{key}: unsupported type {hint!r} in the params schema")


def show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
