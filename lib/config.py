"""Run parameters: load `params/<profile>.yaml`, deep-merge overrides, validate strictly.

A params file is a complete description of a run: it is the one place where values live. The runner's `--set`,
papermill's `-p overrides` and a JupyterLab edit of a notebook's `overrides` all come through `load`. Every key is
required, unknown keys are errors, and every error names the key (see lib.schema).

`families` names the model families a run trains, evaluates and charts (lib.families); each brings its own section,
validated by the params dataclass the family declares on top of `schema.TrainingParams`, and `params.whisper` reads
the section of the family named `whisper`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from lib import families
from lib.schema import (PROJECT_ROOT, SPLITS, MayBeEmpty, ParamsError, Precision, RunPaths, TrainingParams,  # noqa: F401
                        build_fields, resolve, result_name, show)  # schema names callers read from config

EvalSet = Literal["test", "heldout", "voiceshift"]  # the test split, the held-out and the voice-shift manifests
RETENTION_PREFIX = "retention-"  # a retention set's split name: retention-<name>
HEADLESS_ENV = "VI_EN_CS_HEADLESS"  # set by lib.pipeline for the kernels it runs: no one is there to use a widget


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
class RetentionSet:
    """A manifest of plain speech in one language (a FLEURS or Common Voice export, say) on which 05 scores the
    trained and the starting model: what fine-tuning cost on what the model already knew."""

    name: str  # what reports call it; 01 writes it to splits/retention-<name>.tsv
    manifest: str  # in the manifest format (translations where it has them)
    language: Literal["vi", "en"]  # of the speech: forced for its transcripts (<|en|>, en_XX for English)

    def check(self) -> list[str]:
        return [] if re.fullmatch(r"[\w-]+", self.name) else [f"name: {self.name!r} must be letters, digits, - or _"]


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
    no_speech_threshold: float  # an output is emptied when its no-speech probability is above this (1: no gate) ...
    logprob_threshold: float  # ... and its average log-probability per token below this (Whisper's rule)
    compression_ratio_threshold: float  # loop guard: an output compressing better than this is decoded again ...
    fallback_temperatures: tuple[float, ...]  # ... by sampling at these temperatures in turn ([]: no fallback)
    vad: bool  # long-form: cut recordings at speech with Silero VAD before decoding (false: the family's own way)
    export_tolerance: float  # WER and BLEU points an export may differ from its model on the test split and still
    # decode the sets after it (a family's export to evaluate with: `whisper.ct2_evaluate`)
    reuse_starting_decodes: bool  # the starting models' decodes kept per machine and read by later runs (lib.remember)
    retention: tuple[RetentionSet, ...]  # plain-language sets scored for what fine-tuning cost ([]: none)

    def check(self) -> list[str]:
        problems = [f"{name}: must be at least 1" for name in ("num_beams", "batch_size", "max_length")
                    if getattr(self, name) < 1]
        if self.bootstrap_resamples < 0 or self.segments < 0 or self.long_form_seconds < 0:
            problems.append("bootstrap_resamples, segments and long_form_seconds: must be 0 or more")
        if any(not 0 < t <= 2 for t in self.fallback_temperatures) or list(self.fallback_temperatures) != sorted(
                self.fallback_temperatures):
            problems.append(f"fallback_temperatures: expected rising temperatures above 0 and at most 2, "
                            f"got {list(self.fallback_temperatures)}")
        if self.export_tolerance < 0:
            problems.append("export_tolerance: must be 0 or more (WER and BLEU points)")
        if self.compression_ratio_threshold <= 0:
            problems.append("compression_ratio_threshold: must be above 0")
        names = [r.name for r in self.retention]
        problems += [f"retention: {n} is named twice" for n in sorted({n for n in names if names.count(n) > 1})]
        return problems

    def retention_set(self, split: str) -> RetentionSet | None:
        """The retention set a split name (`retention-<name>`) stands for; None for another split."""
        return next((r for r in self.retention if split == f"{RETENTION_PREFIX}{r.name}"), None)


@dataclass(frozen=True)
class Params:
    """One run. `families` as the params file names them; `models` holds each named family's section by family
    name, also readable as an attribute (`params.whisper`)."""

    profile: str
    manifest: str
    heldout_manifest: MayBeEmpty  # segments kept out of `manifest` (other speakers, other sentences); "" for none
    voiceshift_manifest: MayBeEmpty  # held-out sentences spoken by voices and heard through channels unlike the
    # training speakers' (lib.demo_corpus --voiceshift); "" for none
    output_dir: str
    seed: int
    on_error: Literal["fail", "skip"]
    noise_dir: MayBeEmpty  # a folder of the user's noise recordings (any layout) for non-speech training clips
    families: tuple[str, ...]  # the families a run trains: names in lib/families, or dotted module paths
    split: SplitParams
    evaluation: EvaluationParams
    models: Mapping[str, TrainingParams] = field(default_factory=dict)

    def __getattr__(self, name: str):
        models = self.__dict__.get("models", {})
        if name in models:
            return models[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def family_names(self) -> tuple[str, ...]:
        """The run's families by section name, in the order of their training notebooks."""
        return tuple(self.models)

    def section(self, family: str) -> TrainingParams:
        """The params section of a family the run names; ParamsError naming the key when it names no such family."""
        if family not in self.models:
            raise ParamsError("params", [f"families: {family} is not one of the run's families "
                                         f"({', '.join(self.models)})"])
        return self.models[family]

    @property
    def manifest_path(self) -> Path:
        return resolve(self.manifest)

    @property
    def eval_sets(self) -> tuple[str, ...]:
        """What 05 scores: the test split, then the voice-shift and the held-out segments where the params name a
        manifest of them (the honest set last)."""
        return ("test",) + tuple(name for name, manifest in (("voiceshift", self.voiceshift_manifest),
                                                               ("heldout", self.heldout_manifest)) if manifest)

    @property
    def honest_split(self) -> str:
        """The set whose score says how a model generalizes: the held-out segments (new speakers, new sentences) when
        the params name them, else the voice-shift set, else the test split."""
        return self.eval_sets[-1]

    @property
    def retention_splits(self) -> tuple[str, ...]:
        """The split names of `evaluation.retention`'s sets (`retention-<name>`), which 05 scores both models on."""
        return tuple(f"{RETENTION_PREFIX}{r.name}" for r in self.evaluation.retention)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(resolve(self.output_dir))

    def to_dict(self) -> dict[str, Any]:
        """The params as a params file holds them: family sections at the top level."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        flat.update(self.models)
        plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in flat.items()}
        return json.loads(json.dumps(plain))  # plain lists and mappings, as YAML and JSON hold them


def load(path: str | Path, overrides: Mapping[str, Any] | str | None = None) -> Params:
    """Read a params file, deep-merge `overrides` into it, and validate the result strictly. `overrides` may also be
    YAML text (`papermill -p overrides '{whisper: {epochs: 1}}'` passes a string)."""
    path = resolve(path)
    raw = read_yaml(path)
    if isinstance(overrides, str):
        overrides = _overrides_text(overrides)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw, source=str(path))


def _overrides_text(text: str) -> dict[str, Any]:
    try:
        overrides = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        raise ParamsError("overrides", [f"not valid YAML: {err}"]) from None
    if not isinstance(overrides, dict):
        raise ParamsError("overrides", [f"expected a mapping of keys, got {show(overrides)}"])
    return overrides


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


def validate(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Build `Params` from plain data: the run keys, `split`, `evaluation`, and the section of every family that
    `families` names (each family found, or imported from its module path, through lib.families)."""
    if not isinstance(raw, Mapping):
        raise ParamsError(source, [f"top level: expected a mapping, got {show(raw)}"])
    problems: list[str] = []
    named = _named_families(raw.get("families"), problems)
    hints = typing.get_type_hints(Params, include_extras=True)
    schema = {f.name: hints[f.name] for f in fields(Params) if f.name != "models"}
    schema |= {family.name: family.params_class for family in named}
    # a section of a known family the run does not name is still checked (a typo there is an error), then left out
    idle = {name: families.get(name).params_class for name in families.names() if name in raw and name not in schema}
    values = build_fields(schema | idle, raw, "", problems)
    evaluation = values.get("evaluation")
    for name in ("heldout", "voiceshift"):
        if evaluation and name in evaluation.untrained and not values.get(f"{name}_manifest"):
            problems.append(f"evaluation.untrained: {name} needs a {name}_manifest")
    if problems:
        raise ParamsError(source, problems)
    ordered = sorted(named, key=lambda family: family.notebook)  # the order the stages train them
    models = {family.name: values.pop(family.name) for family in ordered}
    return Params(**{k: v for k, v in values.items() if k not in idle}, models=models)


def _named_families(entries: Any, problems: list[str]) -> list:
    """The families `entries` (the `families` key) name, each once; problems for entries that name none (a key that
    is missing or not a list is reported with the other keys)."""
    if not isinstance(entries, (list, tuple)):
        return []
    if not entries:
        problems.append("families: name at least one model family (e.g. [whisper, e2e])")
    named = []
    for i, entry in enumerate(entries):
        try:
            family = families.find(entry)
        except LookupError as err:
            problems.append(f"families[{i}]: {err}")
            continue
        if family in named:
            problems.append(f"families[{i}]: {family.name} is named twice")
        else:
            named.append(family)
    return named


def digest(params: Params) -> str:
    """A stable hash of the validated parameters (recorded in provenance)."""
    text = json.dumps(params.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
