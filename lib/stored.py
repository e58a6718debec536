"""What 05 wrote, read back: each set's metrics files, the scored predictions, the exports' parity file. The
reports and charts read them through here, without the models' libraries that 05 decodes with."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lib import config, families


def metrics(params: config.Params, split: str):
    """(family, untrained, metrics) for every metrics file 05 wrote for the split, in family order, trained first."""
    for name in params.family_names:
        for untrained in (False, True):
            path = params.paths.metrics(name, split, untrained)
            if path.exists():
                yield name, untrained, json.loads(path.read_text(encoding="utf-8"))


def test_metrics(params: config.Params) -> dict[str, dict]:
    """family name -> its test-split metrics, for the run's models evaluated so far (at least one, or
    FileNotFoundError)."""
    found = {name: params.paths.metrics(name) for name in params.family_names}
    results = {name: json.loads(p.read_text(encoding="utf-8")) for name, p in found.items() if p.exists()}
    if not results:
        raise FileNotFoundError(f"{params.paths.results}: no *_metrics.json yet; run 05_evaluate first")
    return results


def predictions(results_dir: Path, result_name: str, task: str) -> pd.DataFrame:
    """`predictions_<result_name>_<task>.tsv`: every scored segment's reference and hypothesis with its errors."""
    return pd.read_csv(results_dir / f"predictions_{result_name}_{task}.tsv", sep="\t", quoting=3,
                       keep_default_na=False, na_values={"wer": [""]}, dtype={"id": str, "speaker": str})


def parity_path(params: config.Params, name: str) -> Path:
    """`results/<name>_<export_format>_parity.json`: what `evaluate.export_parity` wrote of the family's exports."""
    return params.paths.results / f"{name}_{families.get(name).export_format}_parity.json"
