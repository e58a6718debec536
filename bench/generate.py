"""Evaluation throughput: utterances/s of batched generation (as 05 decodes) against one utterance at a time.

The demo's tiny models, built untrained from the demo corpus, decode the test split's cached inputs for the
transcript task. Each output is forced to exactly `TOKENS` tokens (`min_length` = `max_length`), so both sides do the
same decoding work and the ratio is the gain of batching alone.

    python -m bench.generate
"""
from __future__ import annotations

import time

from bench import common
from lib import config, decoding, evaluate, families

TOKENS = 32
BATCH = 32


def main() -> None:
    params = common.bench_params("generate")
    # builds the tiny Whisper, saved with its processor: a model folder
    families.get("whisper").starting_model(params.whisper, params.paths, params.seed)
    model_dirs = {"whisper": config.resolve(params.whisper.model), "e2e": params.paths.model("e2e") / "final"}
    # two folders: saved as one model, as 04 saves it
    e2e = families.get("e2e").starting_model(params.e2e, params.paths, params.seed)
    e2e.model.save_pretrained(model_dirs["e2e"])
    e2e.save_processing(model_dirs["e2e"])

    rows, details = [], {}
    for model_type, model_dir in model_dirs.items():
        family = families.get(model_type)
        bundle = evaluate.load(family, model_dir)
        bundle.model.generation_config.min_length = TOKENS
        test = family.prepare_features(params.paths, bundle, splits=("test",))["test"].load()
        inputs = test.with_format("numpy", columns=[family.input_column])
        waves = [inputs[i][family.input_column] for i in range(len(test))]
        speeds = {}
        for batch_size in (BATCH, 1):
            options = decoding.DecodingOptions(task="transcribe", num_beams=params.evaluation.num_beams,
                                               max_length=TOKENS, batch_size=batch_size, temperatures=())
            began = time.perf_counter()
            texts = decoding.decode(family.decoder(bundle), waves, test["duration"], [options])["transcribe"]
            speeds[batch_size] = len(texts) / (time.perf_counter() - began)
        details[model_type] = speeds
        rows.append(common.Row(f"{model_type} decoding ({len(waves)} test segments, {TOKENS} tokens each, "
                               f"batch {BATCH} vs 1)", "utterances/s", speeds[BATCH], speeds[1]))
    common.report("generate", rows, {"utterances_per_second": details, "tokens": TOKENS})


if __name__ == "__main__":
    main()
