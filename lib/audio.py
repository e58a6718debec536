"""Audio decoding: soundfile reads the file, a segment is cut by start/end, channels are averaged, soxr resamples."""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """An audio file that cannot be read, or a segment outside it."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header: rate, channels, length. Raises AudioError if missing or unreadable."""
    with _opened(path) as (found, _):
        return found


@contextlib.contextmanager
def _opened(path: str | Path):
    """The file open for reading, with its header read: (AudioInfo, SoundFile). AudioError if missing, unreadable or
    without samples."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as sound:
            if sound.frames <= 0 or sound.samplerate <= 0:
                raise AudioError(f"audio file holds no samples: {path}")
            yield AudioInfo(path, sound.samplerate, sound.channels, sound.frames), sound
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"audio file unreadable: {path}: {err}") from None


def truncation(path: str | Path) -> str | None:
    """Why libsndfile finds a readable file cut short, or None: a WAV whose data chunk declares more than the file
    holds (not the placeholder sizes a streaming writer leaves, 0 and 0xFFFFFFFF), or an Ogg stream without its last
    page. Such a file reads, but only up to where it was cut."""
    report = sf.info(str(path)).extra_info
    for declared, held in re.findall(r"data : (\d+) \(should be (\d+)\)", report):
        if int(held) < int(declared) and int(declared) not in (0, 0xFFFFFFFF):
            return f"truncated: its header declares {int(declared)} bytes of audio, the file holds {int(held)}"
    if "lacks an end-of-stream" in report:
        return "truncated: the Ogg stream ends before its last page"
    return None


def load(path: str | Path, start: float | None = None, end: float | None = None,
         sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` from `start` to `end` seconds (whole file by default) as mono float32 at `sample_rate`."""
    with _opened(path) as (info, sound):  # one open for the header and the samples
        first = 0 if start is None else int(round(start * info.sample_rate))
        last = info.frames if end is None else min(int(round(end * info.sample_rate)), info.frames)
        if not 0 <= first < last:
            raise AudioError(f"{path}: segment {start}-{end} s lies outside the file ({info.duration:.3f} s)")
        sound.seek(first)
        samples, rate = sound.read(last - first, dtype="float32", always_2d=True), info.sample_rate
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
