"""Non-speech audio, on which a model should write nothing: the clips training mixes in (`nonspeech_share`) and the set
05 scores.

Clips are made in code at random levels (RMS, dBFS) and lengths, or cut from a folder of the user's noise recordings
(`noise_dir`, any layout: every audio file under it, MUSAN's `noise/` and `music/` included):

- training kinds (TRAINING_KINDS): silence and room tone, white, pink and brown noise, mains hum with its harmonics,
  steady tones, clicks, breath-like bursts of shaped noise, crowd babble (six to eight talkers of the training speech
  at once: voices, no words to write) and reversed babble (two to eight talkers' speech played backwards and summed:
  speech-like sounds with no words); the two babble kinds, the hardest to tell from speech, are drawn BABBLE_WEIGHT
  times as often as each other kind;
- kinds kept out of training (HELD_OUT_KINDS): chord music, frequency sweeps and speech-shaped noise (noise with the
  long-term spectrum of speech, pulsing at a syllable rate). 05 reports them apart, so its score is not only the
  memory of the training noise.

05's set (`evaluation_set`) draws from other seeds and levels than training (`training_clips`), its babble from
speech training never heard.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lib import audio

SAMPLE_RATE = audio.SAMPLE_RATE
VERSION = 4  # bump when the clips are made differently
BABBLE_KINDS = ("babble", "reversed babble")  # made from speech (`babble=`)
BABBLE_WEIGHT = 4.0  # each babble kind is drawn this many times as often as each other kind: the hardest to tell
# from speech
TRAINING_KINDS = ("silence", "white noise", "pink noise", "brown noise", "hum", "tone", "clicks", "breath",
                  *BABBLE_KINDS)
HELD_OUT_KINDS = ("chords", "sweep", "speech-shaped noise")
EVALUATION_CLIPS = {"reversed babble": 4}  # 05's clips of a kind, where not 2: the kind that most often gets text
NOISE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SILENCE_DB = -90.0  # "silence" is room tone this quiet (digital zero at the lowest draw)


@dataclass
class Clip:
    kind: str  # one of TRAINING_KINDS or HELD_OUT_KINDS, or "noise_dir"
    name: str  # what reports show: kind, level, length (or the file it was cut from)
    wave: np.ndarray  # 16 kHz mono float32


def rms_db(wave: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(wave, dtype=np.float64))) + 1e-12))


def describe(kind: str, wave: np.ndarray) -> str:
    """`kind, level, length`, as reports name a clip."""
    level = "digital zero" if not wave.any() else f"{rms_db(wave):.0f} dBFS"
    return f"{kind}, {level}, {len(wave) / SAMPLE_RATE:.1f} s"


def at_level(wave: np.ndarray, level_db: float) -> np.ndarray:
    """`wave` scaled to an RMS of `level_db` dBFS (silence stays silent), clipped to [-1, 1]."""
    power = np.sqrt(np.mean(np.square(wave, dtype=np.float64)))
    if power == 0:
        return wave.astype(np.float32)
    return np.clip(wave * (10 ** (level_db / 20) / power), -1, 1).astype(np.float32)


def coloured_noise(samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples)
    frequencies[0] = frequencies[1] if samples > 1 else 1.0
    return np.fft.irfft(spectrum / frequencies ** (exponent / 2), n=samples)


def generate(kind: str, seconds: float, level_db: float, rng: np.random.Generator,
             babble: list[np.ndarray] | None = None) -> np.ndarray:
    """One clip of `kind` (TRAINING_KINDS or HELD_OUT_KINDS) lasting `seconds` at `level_db` dBFS; the babble kinds
    and speech-shaped noise are made from the speech in `babble`."""
    samples = max(1, int(seconds * SAMPLE_RATE))
    t = np.arange(samples) / SAMPLE_RATE
    if kind == "silence":
        wave = coloured_noise(samples, 1.0, rng) if level_db > SILENCE_DB else np.zeros(samples)
    elif kind in ("white noise", "pink noise", "brown noise"):
        wave = coloured_noise(samples, {"white noise": 0.0, "pink noise": 1.0, "brown noise": 2.0}[kind], rng)
    elif kind == "hum":
        mains = rng.choice([50.0, 60.0])
        wave = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 4, 5))
    elif kind == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    elif kind == "clicks":
        wave = np.zeros(samples)
        for start in rng.choice(samples, size=max(1, int(seconds * rng.uniform(2, 12))), replace=False):
            burst = rng.standard_normal(min(160, samples - start)) * np.exp(-np.arange(min(160, samples - start)) / 20)
            wave[start:start + len(burst)] += burst
    elif kind == "breath":
        wave = coloured_noise(samples, 1.5, rng) * _bursts(samples, rng, rate=rng.uniform(0.2, 0.5), length=1.2)
    elif kind == "chords":
        wave = _chords(t, rng)
    elif kind in (*BABBLE_KINDS, "speech-shaped noise"):
        if not babble:
            raise ValueError(f"{kind} needs speech to mix (babble=...)")
        if kind == "babble":
            wave = _babble(babble, samples, rng, talkers=int(rng.integers(6, 9)))
        elif kind == "reversed babble":
            wave = _babble([s[::-1] for s in babble], samples, rng, talkers=int(rng.integers(2, 9)))
        else:
            wave = _speech_shaped(babble, samples, rng)
    elif kind == "sweep":
        low, high = rng.uniform(100, 400), rng.uniform(2000, 6000)
        wave = np.sin(2 * np.pi * low * seconds / np.log(high / low) * (np.exp(t / seconds * np.log(high / low)) - 1))
    else:
        raise ValueError(f"non-speech kind: expected one of {', '.join(TRAINING_KINDS + HELD_OUT_KINDS)}, got {kind!r}")
    return at_level(np.asarray(wave, np.float64), level_db)


def _bursts(samples: int, rng: np.random.Generator, rate: float, length: float) -> np.ndarray:
    """An envelope of smooth bursts, about `rate` a second, each about `length` seconds long."""
    envelope = np.zeros(samples)
    width = int(length * SAMPLE_RATE)
    window = np.hanning(width)
    for start in range(int(rng.uniform(0, 1 / rate) * SAMPLE_RATE), samples, int(SAMPLE_RATE / rate)):
        piece = window[:samples - start]
        envelope[start:start + len(piece)] += piece
    return envelope


def _chords(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A loop of major and minor triads with a few harmonics each, a new chord every 0.5-1 s."""
    wave, step = np.zeros_like(t), rng.uniform(0.5, 1.0)
    for k, start in enumerate(np.arange(0, t[-1] + 1e-9, step)):
        root = 220 * 2 ** (rng.integers(0, 12) / 12)
        third = 4 if k % 2 == 0 else 3
        playing = (t >= start) & (t < start + step)
        for semitones in (0, third, 7):
            frequency = root * 2 ** (semitones / 12)
            wave[playing] += sum(np.sin(2 * np.pi * frequency * h * t[playing]) / h ** 2 for h in (1, 2, 3))
    return wave


def _babble(speech: list[np.ndarray], samples: int, rng: np.random.Generator, talkers: int) -> np.ndarray:
    """`talkers` streams of the speech, each in its own random order and offset, summed."""
    wave = np.zeros(samples)
    for _ in range(talkers):
        stream = np.concatenate([speech[i] for i in rng.permutation(len(speech))])
        stream = np.tile(stream, samples // len(stream) + 1)
        offset = rng.integers(0, len(stream) - samples + 1)
        wave += stream[offset:offset + samples]
    return wave


def _speech_shaped(speech: list[np.ndarray], samples: int, rng: np.random.Generator) -> np.ndarray:
    """White noise shaped to the long-term magnitude spectrum of `speech`, pulsing at 3 to 6 bursts a second (a
    syllable rate): speech's colour and rhythm without its words."""
    stream = np.concatenate(speech)
    spectrum = np.abs(np.fft.rfft(stream))
    grid = np.fft.rfftfreq(samples)
    shape = np.interp(grid, np.fft.rfftfreq(len(stream)), spectrum)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(samples)) * shape, n=samples)
    return noise * _bursts(samples, rng, rate=rng.uniform(3, 6), length=0.25)


def noise_files(noise_dir: str | Path) -> list[Path]:
    """Every audio file under `noise_dir`, in a stable order; ValueError when there is none."""
    files = sorted(p for p in Path(noise_dir).rglob("*") if p.suffix.lower() in NOISE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"noise_dir: {noise_dir} holds no audio files ({', '.join(NOISE_EXTENSIONS)})")
    return files


def training_clips(durations: list[float], seed: int, noise_dir: Path | None = None,
                   babble: list[np.ndarray] | None = None) -> list[Clip]:
    """One clip per duration: a training kind at a random level between -70 and -20 dBFS (silence down to digital
    zero; the babble kinds, BABBLE_WEIGHT times as often as each other kind, only when `babble` gives speech to mix),
    or, with `noise_dir`, every other clip cut at random from one of its files."""
    rng = np.random.default_rng(random.Random(f"nonspeech-train-{seed}").getrandbits(64))
    files = noise_files(noise_dir) if noise_dir else []
    kinds = [k for k in TRAINING_KINDS if babble or k not in BABBLE_KINDS]
    weights = np.array([BABBLE_WEIGHT if k in BABBLE_KINDS else 1.0 for k in kinds])
    clips = []
    for i, seconds in enumerate(durations):
        if files and i % 2:
            path, samples = files[rng.integers(len(files))], int(seconds * SAMPLE_RATE)
            wave = audio.load(path)
            wave = np.tile(wave, samples // len(wave) + 1) if len(wave) < samples else wave  # a short file loops
            start = int(rng.integers(0, len(wave) - samples + 1))
            clips.append(Clip("noise_dir", f"{path.name} at {start / SAMPLE_RATE:.1f} s", wave[start:start + samples]))
            continue
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        level = SILENCE_DB - 10 if kind == "silence" and rng.random() < 0.3 else rng.uniform(-70, -20)
        wave = generate(kind, seconds, level, rng, babble)
        clips.append(Clip(kind, describe(kind, wave), wave))
    return clips


def evaluation_set(babble: list[np.ndarray], seed: int = 2027) -> list[Clip]:
    """05's non-speech set: two clips of each kind (EVALUATION_CLIPS where more), 5-28 s, at levels drawn apart from
    training's (-75 to -15 dBFS), from its own seed; the kinds made from speech are made from `babble`, speech
    training never heard."""
    rng = np.random.default_rng(random.Random(f"nonspeech-evaluation-{seed}").getrandbits(64))
    clips = []
    for kind in TRAINING_KINDS + HELD_OUT_KINDS:
        for k in range(EVALUATION_CLIPS.get(kind, 2)):
            seconds = float(rng.uniform(5, 28))
            if kind == "silence":  # digital silence, then room tone
                level = SILENCE_DB - 10 if k == 0 else float(rng.uniform(-75, -55))
            else:
                level = float(rng.uniform(-75, -15))
            wave = generate(kind, seconds, level, rng, babble)
            clips.append(Clip(kind, describe(kind, wave), wave))
    return clips


def gap_filler(seed: str, shortest: float, longest: float) -> Callable[[], np.ndarray]:
    """What fills the pauses between joined segments: silence, room tone or quiet noise, each pause `shortest` to
    `longest` seconds long, drawn per pause from `seed` (a window's id, a recording's)."""
    rng = np.random.default_rng(random.Random(f"gap-{seed}").getrandbits(64))

    def fill() -> np.ndarray:
        kind = ("silence", "white noise", "pink noise", "brown noise", "hum")[rng.integers(5)]
        level = SILENCE_DB - 10 if kind == "silence" and rng.random() < 0.5 else rng.uniform(-75, -45)
        seconds = rng.uniform(shortest, longest) if longest > shortest else shortest
        return generate(kind, seconds, level, rng)

    return fill
