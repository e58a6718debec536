"""The model-family seam: the registry, the abstract contract, and a conformance suite that runs every family (the two
of lib/families and the tests' Speech2Text, registered through the params' `families` list) through prepare, a few
training steps, decoding and scoring on tiny models."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import demo_slice
from lib import config, decoding, evaluate, families, manifest, pipeline, prepare, split, stored, train
from lib.families import Family, whisper

FAMILY_DIR = config.PROJECT_ROOT / "lib" / "families"
TEST_FAMILY = "tests.families.speech2text"
TEST_FAMILY_DIR = Path(__file__).parent / "families"


@pytest.fixture
def registry(monkeypatch):
    """The registry as it was before the test: a family registered during the test is forgotten after it."""
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    return families


def test_the_registry_holds_the_families_of_lib_in_stage_order():
    assert families.names() == ("whisper", "e2e")
    assert [families.get(n).notebook for n in families.names()] == ["03_train_whisper", "04_train_e2e"]
    with pytest.raises(ValueError, match="model family: expected one of whisper, e2e, got 'ctc'"):
        families.get("ctc")


def test_a_family_is_an_abstract_class_and_registration_checks_its_attributes(registry):
    with pytest.raises(TypeError, match="abstract methods? .*audio_input"):
        type("Incomplete", (Family,), {"name": "incomplete"})()  # a missing method fails here, not mid-run
    methods = {method: lambda *args: None for method in Family.__abstractmethods__}
    bare = type("Bare", (Family,), {**methods, "name": "bare"})()
    with pytest.raises(TypeError, match="a model family sets label, notebook, params_class, input_column, usage"):
        registry.register(bare)
    with pytest.raises(ValueError, match="'whisper': already registered by lib.families.whisper"):
        registry.register(type("OtherWhisper", (type(families.get("e2e")),), {"name": "whisper"})())


@pytest.mark.parametrize("module", sorted(p.stem for p in FAMILY_DIR.glob("*.py")
                                          if p.stem not in ("__init__", "base")))
def test_no_family_module_imports_another_family(module):
    tree = ast.parse((FAMILY_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert {m for m in imported if m.startswith("lib.families.") and not m.startswith("lib.families.base")} == set()


def section(name: str, out: Path) -> dict:
    """A family's section for a quick run on tiny models: demo.yaml's (the tests' own file for Speech2Text)."""
    if name == "speech2text":
        values = config.read_yaml(TEST_FAMILY_DIR / "speech2text.yaml")["speech2text"]
        values["model"] = str(out / "models" / "speech2text")
    else:
        values = config.read_yaml(config.PROJECT_ROOT / "params" / "demo.yaml")[name]
    if name == "whisper":  # a tiny Whisper, built like the E2E models, instead of the imported whisper-base
        values.update(model=str(out / "models" / "whisper"), import_from="", build_tiny=True, pack_seconds=0,
                      ct2_parity=[], ct2_evaluate="")
    if name == "e2e":
        values.update(encoder=str(out / "models" / "wav2vec2"), decoder=str(out / "models" / "mbart"))
    return {**values, "epochs": 1, "batch_size": 8, "checkpoint_steps": 100, "logging_steps": 1, "eval_segments": 4,
            "max_length": 16}


def test_a_family_named_by_its_module_path_gets_its_section_and_its_stage(registry, tmp_path):
    params = config.load("params/demo.yaml", {"families": ["whisper", TEST_FAMILY],
                                              "speech2text": section("speech2text", tmp_path)})
    assert params.family_names == ("whisper", "speech2text") and "speech2text" in registry.names()
    assert params.speech2text.model == str(tmp_path / "models" / "speech2text")
    stages = pipeline.stages(params)
    assert list(stages) == ["01_split", "02_prepare", "03_train_whisper", "04c_train_speech2text", "05_evaluate",
                            "06_charts"]
    assert stages["04c_train_speech2text"] == TEST_FAMILY_DIR / "04c_train_speech2text.ipynb"
    with pytest.raises(config.ParamsError, match="speech2text: missing value"):
        config.load("params/demo.yaml", {"families": ["whisper", TEST_FAMILY]})


@pytest.mark.slow
@pytest.mark.parametrize("entry", [*families.names(), TEST_FAMILY])
def test_conformance_prepare_train_decode_score(entry, registry, tmp_path):
    """Each family, alone in a run: its caches hold every segment, its examples one per segment and task, a few
    optimizer steps lower nothing to NaN and save `final/`, and 05 decodes and scores both tasks of every test
    segment from it."""
    out = tmp_path / "out"
    name = entry.rsplit(".", 1)[-1]
    params = config.load("params/demo.yaml", {
        "manifest": str(demo_slice(tmp_path / "corpus", per_speaker=1)), "heldout_manifest": "", "voiceshift_manifest": "",
        "output_dir": str(out), "families": [entry], name: section(name, out),
        "evaluation": {"bootstrap_resamples": 50, "max_length": 16, "segments": 0, "long_form_seconds": 20,
                       "untrained": []}})
    family = families.get(name)
    split.run(params)
    segments = {s: manifest.read(out / "splits" / f"{s}.tsv").segments for s in config.SPLITS}
    rows = {s: len(found) for s, found in segments.items()}

    prepared = prepare.prepare(params, name)
    assert {s: len(c.load()) for s, c in prepared.cached.items()} == rows
    assert prepared.filtered.empty
    speech = prepared.examples[prepared.examples.speech]
    counted = speech.groupby(["split", "task"]).size().to_dict()
    translated = {s: sum(bool(seg.translation) for seg in found) for s, found in segments.items()}
    assert counted == {**{(s, "transcribe"): n for s, n in rows.items()},  # one per segment and task
                       **{(s, "translate"): n for s, n in translated.items()}}
    clips = round(0.2 / 0.8 * rows["train"])  # nonspeech_share 0.2 in every family's section here
    per_clip = len(family.nonspeech_examples(prepared.bundle, 0))
    assert prepared.describe()["non-speech examples"] == clips * per_clip

    summary = train.train(params, name)
    assert summary["global_step"] == -(-(rows["train"] + clips) // 8)
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert losses and np.isfinite(losses).all()
    assert (out / name / "final" / "config.json").exists()
    if name == "whisper":  # a plain generate() transcribes Vietnamese; the gate in the card's arguments only
        for folder in (out / name / "final", *(out / name).glob("checkpoint-*")):
            saved = json.loads((folder / "generation_config.json").read_text())
            assert (saved["language"], saved["task"]) == ("vi", "transcribe"), folder.name
            assert all(saved.get(key) is None for key in whisper.GATE_KEYS), folder.name
        assert "compression_ratio_threshold=1.35" in family.usage_for(
            decoding.DecodingOptions.for_test("transcribe", params.evaluation))

    metrics = evaluate.evaluate(params, name)
    assert metrics["model_type"] == name and metrics["segments"] == rows["test"]
    assert metrics["decoding"]["forced"] == {t: family.forced_prefix(t) for t in ("transcribe", "translate")}
    for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
        scored = metrics["tasks"][task]
        expected = sum(bool(seg.translation) for seg in segments["test"]) if task == "translate" else rows["test"]
        assert scored["samples"] == expected and scored["metrics"][metric]["value"] >= 0
        predictions = stored.predictions(out / "results", name, task)
        assert len(predictions) == expected and predictions["reference"].str.len().gt(0).all()
    assert metrics["long_form"]["files"] >= 1 and metrics["hallucination"]["nonspeech"]["clips"] >= 20
    assert list(stored.test_metrics(params)) == [name]


@pytest.mark.slow
def test_the_tests_family_runs_through_the_runner_with_only_its_module_section_and_notebook(tmp_path):
    """The whole pipeline, notebooks included, for the tests' family alone; the files it needed are exactly the three
    in tests/families (the README's "Adding a model family" lists them)."""
    tracked = subprocess.run(["git", "ls-files", "tests/families"], capture_output=True, text=True,
                             cwd=config.PROJECT_ROOT).stdout.split()
    assert sorted(tracked) == ["tests/families/04c_train_speech2text.ipynb", "tests/families/speech2text.py",
                               "tests/families/speech2text.yaml"]
    out = tmp_path / "out"
    sets = [f"manifest={demo_slice(tmp_path / 'corpus', per_speaker=1)}", f"output_dir={out}",
            f"speech2text.model={out}/models/speech2text"]
    proc = subprocess.run([sys.executable, "-m", "lib.pipeline", "--params", "tests/families/speech2text.yaml",
                           *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True,
                          cwd=config.PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [n["notebook"] for n in json.loads((out / "provenance.json").read_text())["notebooks"]] == [
        "01_split", "02_prepare", "04c_train_speech2text", "05_evaluate", "06_charts"]
    metrics = json.loads((out / "results" / "speech2text_metrics.json").read_text())
    assert metrics["decoding"]["forced"] == {"transcribe": "<transcribe>", "translate": "<translate>"}
    assert json.loads((out / "results" / "speech2text_untrained_metrics.json").read_text())["model"] == "untrained"
    for chart in ("speech2text_training.png", "wer_comparison.png", "training_loss.png"):
        assert (out / "charts" / chart).read_bytes()[:4] == b"\x89PNG"
    card = (out / "speech2text" / "final" / "README.md").read_text()
    assert "Speech2Text (tests)" in card and "forced_bos_token_id=task" in card
