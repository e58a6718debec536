"""Segments joined into longer audio: packed training windows, and whole recordings for long-form evaluation.

`pack` groups segments, stream by stream in manifest order, into windows of up to a length; `join` gives a window's
audio with PACK_GAP of silence between its segments and where each segment starts and ends in it; `window_columns`
and `window_features` are what a cache row of a window holds besides the model input.
"""
from __future__ import annotations

from typing import Callable, Hashable

import numpy as np

from lib import audio, manifest as manifest_io

PACK_GAP = 0.5  # s of silence between the segments of a window
WINDOW_COLUMNS = ("starts", "ends", "texts", "translations")  # a window's segments: times in it, their texts


def pack(segments: list[manifest_io.Segment], seconds: float, stream: Callable[[manifest_io.Segment], Hashable],
         gap: float = PACK_GAP) -> list[list[manifest_io.Segment]]:
    """Segments in manifest order per `stream` (a speaker's, a recording's, ...), grouped into windows whose audio,
    with `gap` seconds between segments, lasts at most `seconds`; a longer segment stays alone."""
    streams: dict = {}
    for seg in segments:
        streams.setdefault(stream(seg), []).append(seg)
    windows = []
    for stream_segments in streams.values():
        window, length = [], 0.0
        for seg in stream_segments:
            added = seg.duration + (gap if window else 0.0)
            if window and length + added > seconds:
                windows.append(window)
                window, length, added = [], 0.0, seg.duration
            window.append(seg)
            length += added
        windows.append(window)
    return windows


def join(window: list[manifest_io.Segment], sampling_rate: int,
         pause: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, list[float], list[float]]:
    """A window's audio: its segments with what `pause()` gives between each two (PACK_GAP of silence by default),
    and each segment's start and end in it (seconds)."""
    waves, starts, ends, cursor = [], [], [], 0
    for k, seg in enumerate(window):
        if k:
            waves.append(pause() if pause else np.zeros(int(PACK_GAP * sampling_rate), np.float32))
            cursor += len(waves[-1])
        waves.append(audio.load(seg.audio, seg.start, seg.end, sampling_rate))
        starts.append(round(cursor / sampling_rate, 3))
        cursor += len(waves[-1])
        ends.append(round(cursor / sampling_rate, 3))
    return np.concatenate(waves), starts, ends


def window_columns(window: list[manifest_io.Segment]) -> dict:
    """A window's segment columns, joined in order (the translation only when every segment has one)."""
    translated = all(seg.translation for seg in window)
    return {"id": "+".join(seg.id for seg in window), "speaker": window[0].speaker,
            "transcript": " ".join(seg.transcript for seg in window),
            "translation": " ".join(seg.translation for seg in window) if translated else "",
            "lang_tags": " ".join(" ".join(seg.lang_tags) for seg in window)}


def window_features() -> dict:
    """The cache column types of WINDOW_COLUMNS (lib.features)."""
    from datasets import List, Value

    return {c: List(Value("float32") if c in ("starts", "ends") else Value("string")) for c in WINDOW_COLUMNS}
