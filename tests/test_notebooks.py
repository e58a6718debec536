"""Notebooks in git: no outputs, and exactly one `parameters` cell holding only the params file and the overrides,
which the notebook loads through lib.config as the runner does."""
import ast
import json
from pathlib import Path

import pytest

from lib import config, pipeline

NOTEBOOKS = sorted((config.PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_notebooks_exist_and_are_known():
    stages = pipeline.stages(config.load("params/dev.yaml"))
    assert [p.stem for p in NOTEBOOKS] == list(stages)  # every stage has its notebook, and every notebook is a stage
    assert all(path.exists() for path in stages.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path):
    for index, cell in enumerate(cells(path)):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {index} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_parameters_cell_names_the_file_and_the_overrides_only(path: Path):
    tagged = [c for c in cells(path) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    values = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds plain assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    assert values == {"params_file": "params/dev.yaml", "overrides": {}}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_loads_its_params_as_the_runner_does(path: Path):
    """The cell after `parameters` (papermill injects its values between the two) loads them with lib.config."""
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "params = config.load(params_file, overrides)" in "".join(code[1]["source"])
    assert not any("families.names()" in "".join(c["source"]) for c in code)  # the run's families, not all known


def test_a_jupyterlab_edit_papermills_p_and_the_runners_set_give_the_same_params(tmp_path):
    """The three ways of changing a value reach `config.load`: an edit of `overrides` in the notebook (or the cell
    the runner injects), `papermill -p overrides '{...}'` (papermill passes the text) and the runner's `--set`."""
    namespace: dict = {}
    exec(compile("".join(cells(NOTEBOOKS[0])[1]["source"]), "parameters", "exec"), namespace)
    namespace["overrides"] = {"whisper": {"epochs": 3}}
    edited = config.load(namespace["params_file"], namespace["overrides"])
    from_papermill_p = config.load(namespace["params_file"], "{whisper: {epochs: 3}}")
    from_set = config.load("params/dev.yaml", config.parse_overrides(["whisper.epochs=3"]))
    assert edited == from_papermill_p == from_set and edited.whisper.epochs == 3
    with pytest.raises(config.ParamsError, match="expected a mapping of keys, got list"):
        config.load("params/dev.yaml", "[1, 2]")
