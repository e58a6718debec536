"""Feature preparation: segments/s of 02_prepare's Whisper feature cache against the reference recipe.

Both compute whisper-tiny's 80-bin log-mel features for every segment of the demo corpus (1,200 segments, 1 h):
- ours (the Whisper family's `prepare_features` into lib.features' cache): decode each segment, extract features from
  the segment itself (the collator pads to 30 s later), store float16 in one Arrow file; warm: the cache key matches
  and nothing is computed;
- reference (the blog): decode + `WhisperFeatureExtractor` on each example inside `datasets.map`, which pads every
  example to 30 s and stores float32; warm: `datasets` finds its cache file for the same map.

    python -m bench.prepare
"""
from __future__ import annotations

import shutil
import time

from bench import common
from lib import families
from lib.split import SPLITS


def main() -> None:
    from datasets import Dataset, load_from_disk
    from transformers import WhisperFeatureExtractor

    params = common.bench_params("prepare")
    extractor = WhisperFeatureExtractor()  # whisper-tiny's settings: 80 mel bins, 30 s window
    family, bundle = families.get("whisper"), families.Bundle(None, None, extractor)  # features need the extractor
    segments = common.split_segments(params, SPLITS)
    count = len(segments)

    began = time.perf_counter()
    family.prepare_features(params.paths, bundle)
    ours_cold = time.perf_counter() - began
    began = time.perf_counter()
    cached = family.prepare_features(params.paths, bundle)
    ours_warm = time.perf_counter() - began
    assert all(c.reused for c in cached.values())
    ours_bytes = sum(f.stat().st_size for f in params.paths.features.rglob("*") if f.is_file())

    source = params.paths.root / "reference" / "source"
    Dataset.from_dict(common.reference_rows(segments)).save_to_disk(str(source))

    def prepare_dataset(row):
        row["input_features"] = extractor(common.decode_row(row), sampling_rate=16_000).input_features[0]
        return row

    timings = []
    for _ in ("cold", "warm"):
        dataset = load_from_disk(str(source))
        began = time.perf_counter()
        mapped = dataset.map(prepare_dataset, remove_columns=["audio_path", "start", "end"])
        timings.append(time.perf_counter() - began)
    reference_bytes = sum(f.stat().st_size for f in source.rglob("*.arrow") if f.is_file())
    assert len(mapped) == count and len(mapped[0]["input_features"]) == extractor.feature_size
    shutil.rmtree(params.paths.root / "reference")  # a GB of padded float32

    common.report("prepare", [
        common.Row(f"prepare, cold ({count} segments)", "segments/s", count / ours_cold, count / timings[0]),
        common.Row(f"prepare, warm cache ({count} segments)", "segments/s", count / ours_warm, count / timings[1]),
        common.Row("cache size", "MB", ours_bytes / 2**20, reference_bytes / 2**20, higher_is_better=False),
    ], {"segments": count, "seconds": {"ours_cold": ours_cold, "ours_warm": ours_warm,
                                       "reference_cold": timings[0], "reference_warm": timings[1]}})


if __name__ == "__main__":
    main()
