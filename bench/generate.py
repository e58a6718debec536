"""Evaluation throughput: utterances/s of batched generation (as 05 decodes) against one utterance at a time.

The demo's tiny models, built untrained from the demo corpus, decode the test split's cached inputs for the
transcript task. Each output is forced to exactly `TOKENS` tokens (`min_length` = `max_length`), so both sides do the
same decoding work and the ratio is the gain of batching alone.

    python -m bench.generate
"""
from __future__ import annotations

import dataclasses
import time

from bench import common
from lib import config, evaluate, models

TOKENS = 32
BATCH = 32


def main() -> None:
    params = common.bench_params("generate", {"evaluation": {"max_length": TOKENS, "batch_size": BATCH}})
    models.whisper_for_run(params)  # builds the tiny Whisper, saved with its processor: a model folder as it is
    model_dirs = {"whisper": config.resolve(params.whisper.model), "e2e": params.paths.root / "e2e" / "final"}
    e2e_model, extractor, tokenizer = models.e2e_for_run(params)  # two folders: saved as one model, as 04 saves it
    for artifact in (e2e_model, extractor, tokenizer):
        artifact.save_pretrained(model_dirs["e2e"])

    rows, details = [], {}
    for model_type, model_dir in model_dirs.items():
        loaded = evaluate.load(model_type, model_dir, params.paths)
        loaded.model.generation_config.min_length = TOKENS
        inputs = loaded.test.with_format("numpy", columns=[loaded.column])
        waves = [inputs[i][loaded.column] for i in range(len(loaded.test))]
        durations = loaded.test["duration"]
        speeds = {}
        for batch_size in (BATCH, 1):
            hp = dataclasses.replace(params.evaluation, batch_size=batch_size)
            began = time.perf_counter()
            texts = evaluate.decode_longest_first(loaded, waves, durations, "transcribe", hp)
            speeds[batch_size] = len(texts) / (time.perf_counter() - began)
        details[model_type] = speeds
        rows.append(common.Row(f"{model_type} decoding ({len(waves)} test segments, {TOKENS} tokens each, "
                               f"batch {BATCH} vs 1)", "utterances/s", speeds[BATCH], speeds[1]))
    common.report("generate", rows, {"utterances_per_second": details, "tokens": TOKENS})


if __name__ == "__main__":
    main()
