"""Stage 02's cache: each split's model inputs as Arrow under `outputs/<profile>/features/<family>/`, keyed by content.

A model family says what it caches (lib.families: a model input per segment, or per packed window, and the settings
that make it); this module only stores and finds it. A cache is reused when its key matches: the hash of the split
file, of every audio file it reads, and of the settings. A cache is written to a temporary folder and renamed into
place, so a crash leaves no half cache behind; older caches of the same split are removed once the new one is in
place.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib import atomic, manifest as manifest_io

FEATURE_VERSION = 1  # bump when the way features are computed changes
ROW_COLUMNS = ("id", "speaker", "transcript", "translation", "lang_tags", "duration")


@dataclass
class CachedSplit:
    name: str
    path: Path
    key: str
    reused: bool
    seconds: float  # time spent computing (0 when reused)

    def load(self):
        from datasets import Dataset

        return Dataset.from_file(str(self.path / "data.arrow"))


def cache_table(cached: dict[str, CachedSplit]):
    """One row per split: segments, whether the cache was reused, seconds spent, size on disk."""
    import pandas as pd

    return pd.DataFrame([{"split": c.name, "segments": json.loads((c.path / "meta.json").read_text())["segments"],
                          "reused": c.reused, "seconds": round(c.seconds, 1),
                          "size_mb": round(sum(f.stat().st_size for f in c.path.iterdir()) / 2**20, 1),
                          "cache": c.path.name} for c in cached.values()]).set_index("split")


def cache_key(split_file: Path, segments: list[manifest_io.Segment], settings: dict) -> str:
    """sha256 over the split file, the bytes of every audio file it reads, and the settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(split_file.read_bytes())
    for path in sorted({s.audio for s in segments}):
        digest.update(str(path.name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepare(name: str, split_file: Path, root: Path, settings: dict,
            make_rows: Callable[[list[manifest_io.Segment]], Iterator[dict]], columns: dict) -> CachedSplit:
    """The cache `name` of the split file's segments in `root`: reused when its key matches, else written from
    `make_rows(segments)` (each row ROW_COLUMNS plus `columns`, whose values are the datasets types they hold)."""
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file} not found: run 01_split first")
    segments = manifest_io.read(split_file).segments
    key = cache_key(split_file, segments, settings)
    target = root / f"{name}-{key[:16]}"
    if (target / "meta.json").exists():
        return CachedSplit(name, target, key, reused=True, seconds=0.0)
    began = time.perf_counter()
    with atomic.folder(target) as staging:
        _write_arrow(staging / "data.arrow", make_rows(segments), columns)
        meta = {"split": name, "key": key, "settings": settings, "segments": len(segments),
                "split_file": str(split_file)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for stale in root.iterdir():  # older caches of this split (not of another name starting the same)
        if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}", stale.name) and stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return CachedSplit(name, target, key, reused=False, seconds=time.perf_counter() - began)


def _write_arrow(path: Path, rows: Iterable[dict], columns: dict) -> None:
    """Stream rows into one Arrow file: the segment's columns, then `columns` (name -> datasets type)."""
    from datasets import Features, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({**{c: Value("float32") if c == "duration" else Value("string") for c in ROW_COLUMNS},
                         **columns})
    with ArrowWriter(features=features, path=str(path)) as writer:
        for row in rows:
            writer.write(row)
        writer.finalize()


def segment_columns(seg: manifest_io.Segment) -> dict:
    return {"id": seg.id, "speaker": seg.speaker, "transcript": seg.transcript, "translation": seg.translation,
            "lang_tags": " ".join(seg.lang_tags), "duration": float(seg.duration)}
