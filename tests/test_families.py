"""The model-family seam: the registry, family modules that stay apart, and a throwaway third family that the params,
the runner, training, evaluation, the report and the charts take up without a change of their own."""
import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import demo_slice
from lib import charts, config, evaluate, families, pipeline, report, split, train
from lib.families import Family, whisper

FAMILY_DIR = config.PROJECT_ROOT / "lib" / "families"


def test_the_registry_holds_the_families_in_stage_order():
    assert families.names() == ("whisper", "e2e")
    assert [families.get(n).notebook for n in families.names()] == ["03_train_whisper", "04_train_e2e"]
    with pytest.raises(ValueError, match="model family: expected one of whisper, e2e, got 'ctc'"):
        families.get("ctc")


@pytest.mark.parametrize("module", sorted(p.stem for p in FAMILY_DIR.glob("*.py") if p.stem not in ("__init__", "base")))
def test_no_family_module_imports_another_family(module):
    tree = ast.parse((FAMILY_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    family_modules = {m for m in imported if m.startswith("lib.families.")}
    assert family_modules <= {"lib.families.base", "lib.families.base.Bundle", "lib.families.base.Family",
                              "lib.families.base.local_or_hub", "lib.families.base.unwrap"}, family_modules


@dataclass(frozen=True)
class ThrowawayParams(config.TrainingParams):
    checkpoint: str


class Throwaway(whisper.Whisper):
    """A third family: a Whisper under another name, section and notebook, with a params class of its own."""

    name = "throwaway"
    label = "Throwaway family"
    notebook = "04b_train_throwaway"
    params_class = ThrowawayParams

    maker, make, unavailable = Family.maker, Family.make, Family.unavailable  # no import_from, no packing:
    training_cache, training_examples = Family.training_cache, Family.training_examples  # the base family's ways

    def model_names(self, hp):
        return {"checkpoint": hp.checkpoint}

    def build_tiny(self, hp, texts, seed):
        whisper.build_tiny_whisper(config.resolve(hp.checkpoint), texts, seed=seed)

    def load(self, hp):
        return whisper.load_whisper(config.resolve(hp.checkpoint))


@pytest.fixture
def throwaway(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    return families.register(Throwaway())


def throwaway_section(out: Path) -> dict:
    section = {k: v for k, v in config.read_yaml(config.PROJECT_ROOT / "params" / "demo.yaml")["whisper"].items()
               if k not in ("model", "import_from", "pack_seconds", "timestamp_share")}
    return {**section, "checkpoint": str(out / "models" / "throwaway"), "build_tiny": True, "epochs": 1,
            "checkpoint_steps": 100, "eval_segments": 4, "max_length": 16}


def test_a_registered_family_gets_its_params_section_and_its_stage(throwaway, tmp_path):
    params = config.load("params/demo.yaml", {"throwaway": throwaway_section(tmp_path)})
    assert params.throwaway.checkpoint == str(tmp_path / "models" / "throwaway")
    assert params.section("throwaway") is params.models["throwaway"]
    with pytest.raises(config.ParamsError, match="throwaway.checkpoint: missing value"):
        config.load("params/demo.yaml", {"throwaway": {**throwaway_section(tmp_path), "checkpoint": None}})
    with pytest.raises(config.ParamsError, match="throwaway: missing value"):
        config.load("params/demo.yaml")  # a registered family's section is required like any other
    assert pipeline.notebooks() == ["01_split", "02_prepare", "03_train_whisper", "04_train_e2e",
                                    "04b_train_throwaway", "05_evaluate", "06_charts"]
    assert pipeline.select(["04b"]) == ["04b_train_throwaway"]


@pytest.mark.slow
def test_a_throwaway_family_trains_evaluates_and_is_charted(throwaway, tmp_path):
    out = tmp_path / "out"
    params = config.load("params/demo.yaml", {
        "manifest": str(demo_slice(tmp_path / "corpus", per_speaker=1)), "output_dir": str(out),
        "throwaway": throwaway_section(out), "evaluation": {"bootstrap_resamples": 50, "max_length": 16}})
    split.run(params)

    summary = train.train(params, "throwaway")
    assert summary["model"] == {"checkpoint": str(out / "models" / "throwaway")}
    assert (out / "throwaway" / "final" / "model.safetensors").exists()
    assert json.loads((out / "results" / "throwaway_train.json").read_text())["global_step"] == summary["global_step"]

    metrics = evaluate.evaluate(params, "throwaway")
    test_rows = len((out / "splits" / "test.tsv").read_text().splitlines()) - 1
    assert metrics["model_type"] == "throwaway" and metrics["tasks"]["transcribe"]["samples"] == test_rows
    results = evaluate.load_results(params.paths.results)
    assert list(results) == ["throwaway"]
    assert "throwaway" in report.score_table(results).to_html()
    charts.score_comparison(results, "transcribe", "wer", 15, out / "charts" / "wer.png")
    assert (out / "charts" / "wer.png").read_bytes()[:4] == b"\x89PNG"
    assert report.substitutions(results, "throwaway").caption == "Throwaway family"
