"""Run parameters: load `params/<profile>.yaml`, validate strictly, deep-merge overrides.

A params file is a complete description of a run. Every key is required, unknown keys are errors, and every error
names the key (``whisper.learning_rate: expected a number, got 'fast'``). YAML 1.1 reads ``1e-4`` as a string; a float
field takes it as a float all the same.

Each model family (lib.families) brings its own section, validated by the dataclass the family declares on top of
`TrainingParams`; `params.whisper` reads the section of the family named `whisper`.

Relative paths in a params file are relative to the project root (the folder holding ``params/``), whatever the
current directory, so a notebook opened in JupyterLab and the headless runner read the same files.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")

Precision = Literal["fp32", "fp16", "bf16"]
MayBeEmpty = Annotated[str, "may be empty"]  # a string the params may leave empty ("") to mean none
EvalSet = Literal["test", "heldout"]  # the test split, and the held-out manifest's segments
Quantization = Literal["float16", "int8_float16", "int8"]


@dataclass(frozen=True)
class SplitParams:
    """Target shares of audio duration; they must add up to 1."""

    train: float
    val: float
    test: float

    def check(self) -> list[str]:
        problems = [f"{f.name}: must be between 0 and 1" for f in fields(self) if not 0 <= getattr(self, f.name) <= 1]
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            problems.append(f"train + val + test must be 1, got {total:g}")
        if self.train == 0:
            problems.append("train: must be above 0")
        return problems


@dataclass(frozen=True)
class TrainingParams:
    """What every model family's section holds: batches, schedule, precision, checkpoints, decoding during training.
    A family's params dataclass adds the models it loads (see lib.families)."""

    build_tiny: bool  # build tiny random-weight models at the named folders if they do not exist (demo, tests)
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
        return problems


@dataclass(frozen=True)
class EvaluationParams:
    """Decoding of the test split (05_evaluate), the bootstrap, and the targets the report marks pass or fail."""

    num_beams: int
    batch_size: int
    max_length: int  # generated tokens at most, prefix included
    precision: Precision  # of inference on a GPU (the CPU decodes in fp32)
    bootstrap_resamples: int  # for the 95 % intervals (0: no intervals)
    segments: int  # segments scored per set (0: all); fewer, taken from every speaker in turn, for a quick run
    long_form_seconds: float  # each speaker's scored test segments joined into recordings this long (0: none)
    target_wer: float  # percent; a model passes below it
    target_bleu: float  # a model passes above it
    untrained: tuple[EvalSet, ...]  # sets on which each family's starting model is scored too ([]: none)
    ct2_parity: tuple[Quantization, ...]  # CTranslate2 exports of Whisper checked against it on the test split

    def check(self) -> list[str]:
        problems = [f"{name}: must be at least 1" for name in ("num_beams", "batch_size", "max_length")
                    if getattr(self, name) < 1]
        if self.bootstrap_resamples < 0 or self.segments < 0 or self.long_form_seconds < 0:
            problems.append("bootstrap_resamples, segments and long_form_seconds: must be 0 or more")
        return problems


@dataclass(frozen=True)
class Params:
    """One run. Sections a notebook did not ask for (see `from_notebook`) are None; `models` holds the sections of
    the model families by family name, also readable as attributes (`params.whisper`)."""

    profile: str
    manifest: str
    heldout_manifest: MayBeEmpty  # segments kept out of `manifest` (other speakers, other sentences); "" for none
    output_dir: str
    seed: int
    on_error: Literal["fail", "skip"]
    split: SplitParams | None = None
    evaluation: EvaluationParams | None = None
    models: Mapping[str, TrainingParams] = field(default_factory=dict)

    def __getattr__(self, name: str):
        if name in _family_sections():
            return self.__dict__["models"].get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def section(self, family: str) -> TrainingParams:
        """The params section of a model family; ParamsError naming the key when it was not given."""
        if self.models.get(family) is None:
            raise ParamsError("params", [f"{family}: missing value"])
        return self.models[family]

    @property
    def manifest_path(self) -> Path:
        return resolve(self.manifest)

    @property
    def eval_sets(self) -> tuple[str, ...]:
        """What 05 scores: the test split, and the held-out segments when the params name a manifest of them."""
        return ("test", "heldout") if self.heldout_manifest else ("test",)

    @property
    def paths(self) -> "RunPaths":
        return RunPaths(resolve(self.output_dir))

    def to_dict(self) -> dict[str, Any]:
        """The params as a params file holds them: family sections at the top level."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        flat.update(self.models)
        plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in flat.items()
                 if v is not None}
        return json.loads(json.dumps(plain))  # lists, not tuples: papermill writes only plain values back


RUN_KEYS = ("profile", "manifest", "heldout_manifest", "output_dir", "seed", "on_error")


def _family_sections() -> dict[str, type]:
    """Family name -> its params dataclass. Imported here, not at the top: each family's dataclass builds on this
    module's TrainingParams."""
    from lib import families

    return {name: family.params_class for name, family in families.FAMILIES.items()}


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes, under `outputs/<profile>/` (the README's Outputs section)."""

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
    def provenance(self) -> Path:
        return self.root / "provenance.json"


def result_name(family: str, split: str = "test", untrained: bool = False) -> str:
    """How 05 names a model's results: `whisper` (trained, test split), `whisper_heldout`, `whisper_untrained_heldout`."""
    return family + ("_untrained" if untrained else "") + ("" if split == "test" else f"_{split}")


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


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read a params file, deep-merge `overrides` into it, and validate the result strictly."""
    path = resolve(path)
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw, source=str(path))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(str(path), ["file not found"]) from None
    except yaml.YAMLError as err:
        raise ParamsError(str(path), [f"not valid YAML: {err}"]) from None
    if not isinstance(data, dict):
        raise ParamsError(str(path), ["expected a mapping of keys at the top level"])
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`whisper.epochs=1` -> {"whisper": {"epochs": 1}}; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError("--set", [f"expected KEY=VALUE, got {text!r}"])
    nested: Any = yaml.safe_load(value) if value.strip() else ""  # `KEY=` sets an empty string
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """The `--set KEY=VALUE` options of a command line, merged into one override."""
    merged: dict[str, Any] = {}
    for item in items:
        merged = deep_merge(merged, parse_override(item))
    return merged


def validate(raw: Mapping[str, Any], source: str = "params", keys: tuple[str, ...] | None = None) -> Params:
    """Build `Params` from plain data; `keys` limits which top-level keys are required (all by default)."""
    hints = typing.get_type_hints(Params, include_extras=True)
    schema = {f.name: hints[f.name] for f in fields(Params) if f.name != "models"} | _family_sections()
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ParamsError(source, [f"top level: expected a mapping, got {_show(raw)}"])
    values = _build_fields(schema, raw, "", problems, keys if keys is not None else tuple(schema))
    evaluation = values.get("evaluation")
    if evaluation and "heldout" in evaluation.untrained and not values.get("heldout_manifest"):
        problems.append("evaluation.untrained: heldout needs a heldout_manifest")
    if problems:
        raise ParamsError(source, problems)
    models = {name: values.pop(name) for name in _family_sections() if name in values}
    return Params(**values, models=models)


def from_notebook(namespace: Mapping[str, Any], *sections: str) -> Params:
    """Validate a notebook's parameters: the run keys plus the named sections, taken from its globals()."""
    keys = RUN_KEYS + sections
    present = {k: namespace[k] for k in keys if k in namespace}
    return validate(present, source="notebook parameters", keys=keys)


def digest(params: Params) -> str:
    """A stable hash of the validated parameters (recorded in provenance)."""
    text = json.dumps(params.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _build(cls, raw: Any, prefix: str, problems: list[str]):
    """A params dataclass from a mapping, its own cross-field `check` included; None (and problems) if invalid."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix.rstrip('.')}: expected a mapping, got {_show(raw)}")
        return None
    hints = typing.get_type_hints(cls, include_extras=True)
    problems_before = len(problems)
    values = _build_fields({f.name: hints[f.name] for f in fields(cls)}, raw, prefix, problems)
    if len(problems) > problems_before:
        return None
    obj = cls(**values)
    if hasattr(obj, "check"):  # cross-field checks need valid fields
        problems.extend(f"{prefix}{p}" for p in obj.check())
    return obj


def _build_fields(schema: dict[str, Any], raw: Mapping[str, Any], prefix: str, problems: list[str],
                  required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Each key of `schema` (name -> type) read from `raw`; unknown, unexpected and missing keys are problems."""
    wanted = required if required is not None else tuple(schema)
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{prefix}{key}: unknown key{hint}")
        elif key not in wanted:
            problems.append(f"{prefix}{key}: not expected here")
    values = {}
    for name in schema:
        if name not in wanted:
            continue
        if name not in raw or raw[name] is None:
            problems.append(f"{prefix}{name}: missing value")
            continue
        values[name] = _coerce(raw[name], schema[name], f"{prefix}{name}", problems)
    return values


def _coerce(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        inner, *notes = typing.get_args(hint)
        return value if value == "" and "may be empty" in notes else _coerce(value, inner, key, problems)
    if origin is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return None
        return tuple(_coerce(item, typing.get_args(hint)[0], f"{key}[{i}]", problems) for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner[0], key, problems)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        problems.append(f"{key}: expected one of {', '.join(map(str, choices))}, got {_show(value)}")
        return None
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", problems)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {_show(value)}")
        return None
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{key}: expected an integer, got {_show(value)}")
        return None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)
        problems.append(f"{key}: expected a number, got {_show(value)}")
        return None
    if hint is str:
        if isinstance(value, str) and value.strip():
            return value
        problems.append(f"{key}: expected a non-empty string, got {_show(value)}")
        return None
    raise TypeError(f"{key}: unsupported type {hint!r} in the params schema")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def main(argv: list[str] | None = None) -> int:
    """`python -m lib.config check PARAMS.yaml [--set KEY=VALUE ...]`: validate a params file."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lib.config", description=main.__doc__)
    parser.add_argument("command", choices=["check"])
    parser.add_argument("path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    args = parser.parse_args(argv)
    try:
        params = load(args.path, parse_overrides(args.set))
    except ParamsError as err:
        print(err)
        return 2
    print(f"{args.path}: ok (profile {params.profile}, outputs in {params.paths.root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
