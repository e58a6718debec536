import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib import config

PARAMS = Path(__file__).resolve().parent.parent / "params"


@pytest.mark.parametrize("profile", ["demo", "dev", "prod"])
def test_every_profile_validates(profile):
    params = config.load(PARAMS / f"{profile}.yaml")
    assert params.profile == profile
    assert params.paths.root == config.PROJECT_ROOT / "outputs" / profile
    assert params.split.train + params.split.val + params.split.test == pytest.approx(1)


def test_seed_values_of_dev_and_prod():
    dev, prod = config.load(PARAMS / "dev.yaml"), config.load(PARAMS / "prod.yaml")
    assert (dev.whisper.model, dev.whisper.batch_size, dev.whisper.grad_accum) == ("openai/whisper-tiny", 1, 4)
    assert (dev.whisper.learning_rate, dev.whisper.epochs, dev.whisper.precision) == (1e-4, 2, "fp16")
    assert dev.whisper.gradient_checkpointing is True
    assert (dev.e2e.encoder, dev.e2e.decoder, dev.e2e.batch_size, dev.e2e.grad_accum) == (
        "facebook/wav2vec2-base", "facebook/mbart-large-50", 1, 4)
    assert (prod.whisper.model, prod.whisper.batch_size, prod.whisper.precision) == ("openai/whisper-medium", 16, "bf16")
    assert (prod.e2e.encoder, prod.e2e.batch_size, prod.e2e.precision) == ("facebook/wav2vec2-xls-r-300m", 8, "bf16")


def test_yaml_1_1_exponent_string_is_a_float(tmp_path):
    raw = yaml.safe_load((PARAMS / "dev.yaml").read_text())
    assert raw["whisper"]["learning_rate"] == "1e-4"  # what PyYAML really gives
    assert config.load(PARAMS / "dev.yaml").whisper.learning_rate == 1e-4
    assert isinstance(config.load(PARAMS / "dev.yaml").whisper.learning_rate, float)


def write(tmp_path, raw) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def base() -> dict:
    return yaml.safe_load((PARAMS / "dev.yaml").read_text())


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(extra=1), "extra: unknown key"),
    (lambda r: r["whisper"].update(learning_rat=1), "whisper.learning_rat: unknown key (did you mean 'learning_rate'?)"),
    (lambda r: r["whisper"].pop("epochs"), "whisper.epochs: missing value"),
    (lambda r: r.pop("split"), "split: missing value"),
    (lambda r: r.update(seed="abc"), "seed: expected an integer, got str 'abc'"),
    (lambda r: r["whisper"].update(batch_size=2.5), "whisper.batch_size: expected an integer, got float 2.5"),
    (lambda r: r["whisper"].update(learning_rate="fast"), "whisper.learning_rate: expected a number, got str 'fast'"),
    (lambda r: r["whisper"].update(precision="fp8"), "whisper.precision: expected one of fp32, fp16, bf16"),
    (lambda r: r["e2e"].update(gradient_checkpointing="yes please"), "e2e.gradient_checkpointing: expected true or false"),
    (lambda r: r.update(on_error="ignore"), "on_error: expected one of fail, skip"),
    (lambda r: r["split"].update(train=0.9), "split.train + val + test must be 1, got 1.1"),
    (lambda r: r.update(whisper=[1, 2]), "whisper: expected a mapping, got list"),
    (lambda r: r["whisper"].update(warmup_ratio=1.5), "whisper.warmup_ratio: must be in [0, 1)"),
    (lambda r: r["whisper"].update(checkpoint_steps=0), "whisper.checkpoint_steps: must be at least 1"),
])
def test_invalid_params_name_the_key(tmp_path, change, expected):
    raw = base()
    change(raw)
    with pytest.raises(config.ParamsError) as err:
        config.load(write(tmp_path, raw))
    assert expected in str(err.value)
    assert str(tmp_path / "p.yaml") in str(err.value)


def test_all_problems_reported_at_once(tmp_path):
    raw = base()
    raw["seed"] = "x"
    raw["whisper"]["epochs"] = "many"
    with pytest.raises(config.ParamsError) as err:
        config.load(write(tmp_path, raw))
    assert len(err.value.problems) == 2


def test_deep_merge_and_overrides():
    merged = config.deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 5}, "d": {"e": 1}})
    assert merged == {"a": {"b": 1, "c": 5}, "d": {"e": 1}}
    assert config.parse_override("whisper.epochs=0.5") == {"whisper": {"epochs": 0.5}}
    params = config.load(PARAMS / "dev.yaml", {"whisper": {"epochs": 7}, "seed": 1})
    assert (params.whisper.epochs, params.whisper.batch_size, params.seed) == (7, 1, 1)
    with pytest.raises(config.ParamsError, match="KEY=VALUE"):
        config.parse_override("whisper.epochs")


def test_families_names_the_families_a_run_trains(tmp_path):
    assert config.load(PARAMS / "dev.yaml").family_names == ("whisper", "e2e")
    only = config.load(PARAMS / "dev.yaml", {"families": ["whisper"]})
    assert only.family_names == ("whisper",) and only.families == ("whisper",)
    with pytest.raises(AttributeError):
        only.e2e  # the section is read and checked, but is not part of the run
    with pytest.raises(config.ParamsError, match="families: e2e is not one of the run's families"):
        only.section("e2e")
    with pytest.raises(config.ParamsError, match="e2e.lnaa: unknown key"):  # an idle section is still checked
        config.load(PARAMS / "dev.yaml", {"families": ["whisper"], "e2e": {"lnaa": True}})
    with pytest.raises(config.ParamsError, match="e2e: missing value"):  # a named family needs its section
        config.load(write(tmp_path, {k: v for k, v in base().items() if k != "e2e"}))


@pytest.mark.parametrize("families, expected", [
    (None, "families: missing value"),
    ([], "families: name at least one model family"),
    (["whisper", "ctc"], "families[1]: no model family 'ctc': expected one of whisper, e2e"),
    (["whisper", "whisper"], "families[1]: whisper is named twice"),
    (["lib.text"], "families[0]: lib.text: the module defines no FAMILY"),
    (["no.such.module"], "families[0]: no.such.module: the module cannot be imported"),
    ("whisper", "families: expected a list, got str 'whisper'"),
])
def test_bad_families_name_the_entry(families, expected):
    with pytest.raises(config.ParamsError) as err:
        config.load(PARAMS / "dev.yaml", {"families": families})
    assert expected in str(err.value)


def test_reading_params_loads_no_torch():
    """`lib.config check` reads every family's params dataclass; family modules import torch only where used."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lib.config", "check", "params/dev.yaml"],
                          capture_output=True, text=True, cwd=config.PROJECT_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "lib.families" in imported and "yaml" in imported
    heavy = ("torch", "transformers", "datasets", "peft")
    assert not {m for m in imported if m.split(".")[0] in heavy}
    loaded = subprocess.run([sys.executable, "-c", "import sys; from lib import config; config.load('params/prod.yaml');"
                             " print(*sorted(sys.modules))"], capture_output=True, text=True, cwd=config.PROJECT_ROOT)
    modules = set(loaded.stdout.split())
    assert {"lib.families.whisper", "lib.families.e2e"} <= modules
    assert not {m for m in modules if m.split(".")[0] in heavy}


def test_check_command(capsys):
    assert config.main(["check", str(PARAMS / "prod.yaml")]) == 0
    assert config.main(["check", str(PARAMS / "prod.yaml"), "--set", "whisper.precision=fp8"]) == 2
    assert "whisper.precision" in capsys.readouterr().out
