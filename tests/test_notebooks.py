"""Notebooks in git: no outputs, exactly one `parameters` cell, and its defaults equal params/dev.yaml."""
import ast
import json
from pathlib import Path

import pytest

from lib import config, families, pipeline

NOTEBOOKS = sorted((config.PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_known():
    names = [p.stem for p in NOTEBOOKS]
    assert names == pipeline.notebooks()  # every stage has its notebook, and every notebook is a stage


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {index} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_with_dev_defaults(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    values = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds plain assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    dev = config.read_yaml(config.PROJECT_ROOT / "params" / "dev.yaml")
    for key, value in values.items():
        assert key in dev, f"{key} is not a params key"
        assert config.validate({**dev, key: value}) == config.validate(dev), f"{key} differs from params/dev.yaml"
    assert set(config.RUN_KEYS) <= set(values)


def test_prepare_holds_every_family_section():
    nb = json.loads((config.PROJECT_ROOT / "notebooks" / "02_prepare.ipynb").read_text(encoding="utf-8"))
    tagged = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assigned = {node.targets[0].id for node in ast.parse("".join(tagged["source"])).body}
    assert set(families.names()) <= assigned  # 02 prepares every family's inputs, in JupyterLab too
