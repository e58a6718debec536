"""Stage 05: score each trained model on the test split, for both tasks.

Each model decodes every test segment in batches with the language and task forced (Whisper: `<|vi|>` +
`<|transcribe|>` or `<|translate|>`; E2E: `vi_VN` or `en_XX` as the first token), with the beam size, batch size and
length of the params' `evaluation` section. Transcripts are scored by WER, CER and the code-switching views, translations
by BLEU and chrF (see lib.metrics), all with 95 % bootstrap intervals. Writes, under `results/`:

- `<model>_metrics.json`: one schema for both models (per task: metric value, interval and count; sample counts;
  decoding settings; model path; timing; the targets marked pass or fail);
- `predictions_<model>_<task>.tsv`: every test segment's reference and hypothesis with its errors.

From a shell (the params file gives the split, the decoding settings and the targets; `params/dev.yaml` by default):

    python -m lib.evaluate --model_dir outputs/dev/whisper/final --model_type whisper --output outputs/dev/results
    python -m lib.evaluate --params params/prod.yaml --model_type e2e
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lib import atomic, config, e2e_data, features, metrics, models, text, whisper_data
from lib.whisper_data import TASKS

MODEL_TYPES = ("whisper", "e2e")
TEXT_COLUMN = {"transcribe": "transcript", "translate": "translation"}
TOP_SUBSTITUTIONS = 20

log = logging.getLogger("lib.evaluate")


class ModelMissing(FileNotFoundError):
    """No trained model in the folder to evaluate."""


@dataclass
class Loaded:
    """A trained model ready to decode the cached test split."""

    model: torch.nn.Module
    decode: Callable[[list[np.ndarray], str, config.EvaluationParams], list[str]]  # (inputs, task, settings) -> texts
    test: object  # datasets.Dataset of the test split's cached inputs and segment columns
    column: str  # the model's input column in `test`
    forced: dict[str, str]  # task -> the prefix forced at generation


def evaluate(params: config.Params, model_type: str, model_dir: str | Path | None = None,
             output_dir: str | Path | None = None) -> dict:
    """Decode and score the test split with one model; write its metrics JSON and predictions. Returns the metrics."""
    hp, paths = params.evaluation, params.paths
    model_dir = Path(model_dir) if model_dir else paths.root / model_type / "final"
    output_dir = Path(output_dir) if output_dir else paths.results
    began = time.perf_counter()
    loaded = load(model_type, model_dir, paths)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(hp.precision) if device.type == "cuda" else None
    loaded.model.to(device, dtype or torch.float32)

    test = loaded.test
    inputs = test.with_format("numpy", columns=[loaded.column])
    rows = {c: test[c] for c in features.ROW_COLUMNS}
    summary = {
        "model_type": model_type, "model_path": str(model_dir), "split": "test",
        "split_file": str(paths.splits / "test.tsv"), "segments": len(test),
        "decoding": {"num_beams": hp.num_beams, "batch_size": hp.batch_size, "max_length": hp.max_length,
                     "dtype": str(loaded.model.dtype).removeprefix("torch."), "forced": loaded.forced},
        "bootstrap": {"resamples": hp.bootstrap_resamples, "seed": params.seed,
                      "interval": "95 % percentile bootstrap over utterances"},
        "device": str(device), "tasks": {},
    }
    for task in TASKS:
        picked = [i for i, t in enumerate(rows[TEXT_COLUMN[task]]) if t]
        started = time.perf_counter()
        hypotheses = decode_longest_first(loaded, [inputs[i][loaded.column] for i in picked],
                                          [rows["duration"][i] for i in picked], task, hp)
        seconds = time.perf_counter() - started
        references = [rows[TEXT_COLUMN[task]][i] for i in picked]
        tags = [rows["lang_tags"][i].split() for i in picked]
        frame = pd.DataFrame({c: [rows[c][i] for i in picked] for c in ("id", "speaker", "duration")}).round(3)
        if task == "transcribe":
            scored = metrics.transcript_scores(references, hypotheses, tags, hp.bootstrap_resamples, params.seed)
            extra = {"top_substitutions": metrics.substitution_table(scored.substitutions, TOP_SUBSTITUTIONS)
                     .to_dict("records")}
        else:
            scored = metrics.translation_scores(references, hypotheses, hp.bootstrap_resamples, params.seed)
            frame["code_mixing_index"] = [round(text.code_mixing_index(t), 1) for t in tags]
            extra = {}
        frame = pd.concat([frame, scored.utterances], axis=1)
        frame["reference"], frame["hypothesis"] = references, [" ".join(h.split()) for h in hypotheses]
        write_predictions(output_dir / f"predictions_{model_type}_{task}.tsv", frame)
        summary["tasks"][task] = {"samples": len(picked), "seconds": round(seconds, 2),
                                  "utterances_per_second": round(len(picked) / seconds, 2) if seconds else None,
                                  **scored.to_dict(), **extra}
        log.info("%s %s: %d segments in %.1f s", model_type, task, len(picked), seconds)
    summary["targets"] = targets(summary, hp)
    summary["seconds"] = round(time.perf_counter() - began, 1)
    summary["evaluated_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic.write_json(output_dir / f"{model_type}_metrics.json", summary)
    return summary


def load(model_type: str, model_dir: Path, paths: config.RunPaths) -> Loaded:
    """The trained model in `model_dir` and the test split cached for it (reused from 02/04 when unchanged)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type: expected one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if not (model_dir / "config.json").exists():
        stage = "03_train_whisper" if model_type == "whisper" else "04_train_e2e"
        raise ModelMissing(f"{model_dir}: no trained {model_type} model there; run {stage} first")
    if model_type == "whisper":
        model, processor = models.load_whisper(model_dir)
        test = features.prepare_whisper(paths.splits, paths.features, processor.feature_extractor, splits=("test",))
        return Loaded(model, lambda inputs, task, hp: whisper_data.decode(
                          model, processor, inputs, task, hp.max_length, hp.num_beams, hp.batch_size),
                      test["test"].load(), "input_features",
                      {t: f"<|{whisper_data.SOURCE_LANGUAGE}|><|{t}|><|notimestamps|>" for t in TASKS})
    model, feature_extractor, tokenizer = models.load_e2e_final(model_dir)
    test = features.prepare_waveforms(paths.splits, paths.features, feature_extractor.sampling_rate, splits=("test",))
    return Loaded(model, lambda inputs, task, hp: e2e_data.decode(
                      model, feature_extractor, tokenizer, inputs, task, hp.max_length, hp.num_beams, hp.batch_size),
                  test["test"].load(), "input_values", dict(models.E2E_LANGUAGES))


def decode_longest_first(loaded: Loaded, inputs: list[np.ndarray], durations: list[float], task: str,
                         hp: config.EvaluationParams) -> list[str]:
    """Decode in order of duration, longest first (similar lengths share a batch, so less padding and fewer
    finished rows waiting on a long one; an out-of-memory shows at once), and return the texts in input order."""
    order = np.argsort(-np.asarray(durations), kind="stable")
    texts = loaded.decode([inputs[i] for i in order], task, hp)
    result = [""] * len(inputs)
    for position, index in enumerate(order):
        result[index] = texts[position]
    return result


def targets(summary: dict, hp: config.EvaluationParams) -> list[dict]:
    """The seed's targets (WER below, BLEU above), each marked pass or fail."""
    checks = [("transcribe", "wer", "<", hp.target_wer), ("translate", "bleu", ">", hp.target_bleu)]
    rows = []
    for task, metric, sense, target in checks:
        value = summary["tasks"].get(task, {}).get("metrics", {}).get(metric, {}).get("value")
        passed = value is not None and (value < target if sense == "<" else value > target)
        rows.append({"task": task, "metric": metric, "target": f"{sense} {target:g}", "value": value,
                     "pass": passed})
    return rows


def write_predictions(path: Path, frame: pd.DataFrame) -> Path:
    cells = frame.astype(object).where(frame.notna(), "").astype(str)
    return atomic.write_tsv(path, list(frame.columns), cells.values.tolist())


def read_predictions(results_dir: Path, model_type: str, task: str) -> pd.DataFrame:
    return pd.read_csv(results_dir / f"predictions_{model_type}_{task}.tsv", sep="\t", quoting=3,
                       keep_default_na=False, na_values={"wer": [""]}, dtype={"id": str, "speaker": str})


def load_results(results_dir: Path) -> dict[str, dict]:
    """model type -> its metrics JSON, for the models evaluated so far (at least one, or FileNotFoundError)."""
    found = {m: results_dir / f"{m}_metrics.json" for m in MODEL_TYPES}
    results = {m: json.loads(p.read_text(encoding="utf-8")) for m, p in found.items() if p.exists()}
    if not results:
        raise FileNotFoundError(f"{results_dir}: no *_metrics.json yet; run 05_evaluate first")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model_type", required=True, choices=MODEL_TYPES)
    parser.add_argument("--model_dir", help="a trained model folder (default: <output_dir>/<model_type>/final)")
    parser.add_argument("--output", help="where the metrics and predictions go (default: <output_dir>/results)")
    parser.add_argument("--params", default="params/dev.yaml", help="split, decoding settings and targets")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    overrides: dict = {}
    for item in args.set:
        overrides = config.deep_merge(overrides, config.parse_override(item))
    try:
        params = config.load(args.params, overrides)
        summary = evaluate(params, args.model_type, args.model_dir, args.output)
    except config.ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    except ModelMissing as err:
        print(err, file=sys.stderr)
        return 1
    for row in summary["targets"]:
        print(f"{args.model_type} {row['task']} {row['metric']}: {row['value']} (target {row['target']}: "
              f"{'pass' if row['pass'] else 'fail'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
