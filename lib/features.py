"""Stage 02: decode each split once and cache model inputs as Arrow under `outputs/<profile>/features/`.

Whisper's log-mel features are cached without the 30 s padding (the collator pads), in float16, so 45 h of audio
stays a few GB. A cache is reused when its key matches: the hash of the split file, of every audio file it reads, and
of the feature settings. A cache is written to a temporary folder and renamed into place, so a crash leaves no half
cache behind; older caches of the same split are removed once the new one is in place.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib import atomic, audio, config, manifest as manifest_io

FEATURE_VERSION = 1  # bump when the way features are computed changes
ROW_COLUMNS = ("id", "speaker", "transcript", "translation", "lang_tags", "duration")
WINDOW_COLUMNS = ("starts", "ends", "texts", "translations")  # a packed window's segments: times in it, their texts
PACK_GAP = 0.5  # s of silence between the segments of a packed window
PACKING_VERSION = 1  # bump when `pack` groups segments differently


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


def whisper_settings(feature_extractor) -> dict:
    return {"kind": "whisper-log-mel", "version": FEATURE_VERSION, "dtype": "float16",
            "feature_size": feature_extractor.feature_size, "sampling_rate": feature_extractor.sampling_rate,
            "hop_length": feature_extractor.hop_length, "n_fft": feature_extractor.n_fft}


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


def prepare_whisper(splits_dir: Path, features_dir: Path, feature_extractor,
                    splits: tuple[str, ...] = config.SPLITS) -> dict[str, CachedSplit]:
    """Cached Whisper features for the splits (computed only where the cache is missing or stale)."""
    settings = whisper_settings(feature_extractor)
    return {name: _prepare_split(name, splits_dir / f"{name}.tsv", features_dir / "whisper", settings,
                                 lambda segs: _whisper_rows(segs, feature_extractor))
            for name in splits}


def prepare_whisper_windows(splits_dir: Path, features_dir: Path, feature_extractor, seconds: float) -> CachedSplit:
    """Cached Whisper features of the train split's segments packed into windows of up to `seconds` (`pack`): one row
    per window, with its segments' times and texts (WINDOW_COLUMNS)."""
    settings = {**whisper_settings(feature_extractor), "kind": "whisper-log-mel-windows", "seconds": seconds,
                "gap": PACK_GAP, "packing": PACKING_VERSION}

    def rows(segments):
        for window in pack(segments, seconds):
            wave, starts, ends = join(window, feature_extractor.sampling_rate)
            yield {**window_columns(window), "duration": len(wave) / feature_extractor.sampling_rate,
                   "input_features": log_mel(wave, feature_extractor), "starts": starts, "ends": ends,
                   "texts": [seg.transcript for seg in window], "translations": [seg.translation for seg in window]}

    return _prepare_split("train-windows", splits_dir / "train.tsv", features_dir / "whisper", settings, rows)


def pack(segments: list[manifest_io.Segment], seconds: float,
         stream=lambda seg: (seg.group, bool(seg.translation))) -> list[list[manifest_io.Segment]]:
    """Segments in manifest order per `stream` (by default each speaker's, those with a translation apart from those
    without: a window teaches translation only if all its segments have one), grouped into windows whose audio, with
    PACK_GAP between segments, lasts at most `seconds`; a longer segment stays alone. A recording's consecutive
    segments share a window where they fit."""
    streams: dict = {}
    for seg in segments:
        streams.setdefault(stream(seg), []).append(seg)
    windows = []
    for speaker_segments in streams.values():
        window, length = [], 0.0
        for seg in speaker_segments:
            added = seg.duration + (PACK_GAP if window else 0.0)
            if window and length + added > seconds:
                windows.append(window)
                window, length, added = [], 0.0, seg.duration
            window.append(seg)
            length += added
        windows.append(window)
    return windows


def join(window: list[manifest_io.Segment], sampling_rate: int) -> tuple[np.ndarray, list[float], list[float]]:
    """A window's audio, its segments with PACK_GAP of silence between, and each segment's start and end in it."""
    silence = np.zeros(int(PACK_GAP * sampling_rate), np.float32)
    waves, starts, ends, cursor = [], [], [], 0.0
    for k, seg in enumerate(window):
        wave = audio.load(seg.audio, seg.start, seg.end, sampling_rate)
        waves += [silence, wave] if k else [wave]
        cursor += PACK_GAP if k else 0.0
        starts.append(round(cursor, 3))
        cursor += len(wave) / sampling_rate
        ends.append(round(cursor, 3))
    return np.concatenate(waves), starts, ends


def window_columns(window: list[manifest_io.Segment]) -> dict:
    """A window's segment columns, joined in order (the translation only when every segment has one)."""
    translated = all(seg.translation for seg in window)
    return {"id": "+".join(seg.id for seg in window), "speaker": window[0].speaker,
            "transcript": " ".join(seg.transcript for seg in window),
            "translation": " ".join(seg.translation for seg in window) if translated else "",
            "lang_tags": " ".join(" ".join(seg.lang_tags) for seg in window)}


def waveform_settings(sampling_rate: int) -> dict:
    return {"kind": "waveform", "version": FEATURE_VERSION, "dtype": "float16", "sampling_rate": sampling_rate}


def prepare_waveforms(splits_dir: Path, features_dir: Path, sampling_rate: int = audio.SAMPLE_RATE,
                      splits: tuple[str, ...] = config.SPLITS) -> dict[str, CachedSplit]:
    """Cached 16 kHz mono waveforms (float16) for the splits: the wav2vec2 encoder's input."""
    settings = waveform_settings(sampling_rate)

    def rows(segments):
        for seg in segments:
            wave = audio.load(seg.audio, seg.start, seg.end, sampling_rate)
            yield {**segment_columns(seg), "input_values": wave.astype(np.float16)}

    return {name: _prepare_split(name, splits_dir / f"{name}.tsv", features_dir / "waveform", settings, rows)
            for name in splits}


def _prepare_split(name: str, split_file: Path, root: Path, settings: dict, make_rows) -> CachedSplit:
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file} not found: run 01_split first")
    segments = manifest_io.read(split_file).segments
    key = cache_key(split_file, segments, settings)
    target = root / f"{name}-{key[:16]}"
    if (target / "meta.json").exists():
        return CachedSplit(name, target, key, reused=True, seconds=0.0)
    began = time.perf_counter()
    with atomic.folder(target) as staging:
        _write_arrow(staging / "data.arrow", make_rows(segments))
        meta = {"split": name, "key": key, "settings": settings, "segments": len(segments),
                "split_file": str(split_file)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for stale in root.iterdir():  # older caches of this split (not of another name starting the same)
        if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}", stale.name) and stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return CachedSplit(name, target, key, reused=False, seconds=time.perf_counter() - began)


def _write_arrow(path: Path, rows) -> None:
    """Stream rows into one Arrow file: the segment's columns plus log-mels (2-D) or a waveform (1-D), float16."""
    from datasets import Array2D, Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    first = next(rows)
    columns = {c: Value("float32") if c == "duration" else Value("string") for c in ROW_COLUMNS}
    if "starts" in first:
        columns.update({c: List(Value("float32") if c in ("starts", "ends") else Value("string"))
                        for c in WINDOW_COLUMNS})
    if "input_features" in first:
        columns["input_features"] = Array2D(shape=(None, first["input_features"].shape[1]), dtype="float16")
    else:
        columns["input_values"] = List(Value("float16"))
    features = Features(columns)
    with ArrowWriter(features=features, path=str(path)) as writer:
        writer.write(first)
        for row in rows:
            writer.write(row)
        writer.finalize()


def _whisper_rows(segments: list[manifest_io.Segment], feature_extractor):
    """Rows with log-mel features shaped (frames, mel bins)."""
    for seg in segments:
        wave = audio.load(seg.audio, seg.start, seg.end, feature_extractor.sampling_rate)
        yield {**segment_columns(seg), "input_features": log_mel(wave, feature_extractor)}


def log_mel(wave: np.ndarray, feature_extractor) -> np.ndarray:
    """Whisper's log-mel of the audio itself, (frames, mel bins) in float16.

    The audio gets `n_fft` zeros appended first, so the frames at its end see the same silence they would see in
    the 30 s padded input: `pad_log_mel` then rebuilds the extractor's padded output exactly.
    """
    tail = np.zeros(feature_extractor.n_fft, dtype=np.float32)
    mel = feature_extractor(np.concatenate([wave, tail]), sampling_rate=feature_extractor.sampling_rate,
                            padding="do_not_pad", return_tensors="np").input_features[0]
    return mel.T.astype(np.float16)


def segment_columns(seg: manifest_io.Segment) -> dict:
    return {"id": seg.id, "speaker": seg.speaker, "transcript": seg.transcript, "translation": seg.translation,
            "lang_tags": " ".join(seg.lang_tags), "duration": float(seg.duration)}


def pad_log_mel(features: list[np.ndarray], frames: int) -> np.ndarray:
    """Stack (frames_i, mels) arrays into (batch, mels, frames), padded as Whisper pads audio with silence.

    Whisper's extractor floors the log-mel at (its maximum - 8) before scaling by (x + 4) / 4, so zero-padded audio
    becomes frames at (maximum - 2) in the scaled values: padding with that reproduces the 30 s input exactly.
    """
    batch = np.empty((len(features), features[0].shape[1], frames), dtype=np.float32)
    for i, mel in enumerate(features):
        mel = np.asarray(mel, dtype=np.float32)[:frames]
        batch[i, :, :len(mel)] = mel.T
        batch[i, :, len(mel):] = mel.max() - 2.0
    return batch
