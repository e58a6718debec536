"""Augmentation in training: each input heard at another speed, or in noise, each time the Trainer reads it.

Two of the three pieces work on waveforms, here, with lhotse's implementations (the toolkit of icefall and k2):

- speed perturbation (`speed_perturbation: s`): the input played at a factor drawn from (1 - s, 1, 1 + s), the
  Kaldi/ESPnet/icefall default being s = 0.1. lhotse's `Speed` is sox's `speed`: a resampling, tempo and pitch
  together, at any ratio; times in the labels scale by 1 / factor.
- additive noise (`additive_noise: p`): a share p of the inputs get a non-speech clip (lib.nonspeech: the generated
  kinds, and `noise_dir`'s recordings when set) mixed in by lhotse's `AudioMixer` at an SNR drawn from
  NOISE_SNR_DB, lhotse's CutMix default.

The third, SpecAugment (`spec_augment`), masks the model's input inside the model; each family sets it up
(`Family.setup_training`). Waveforms are augmented on the fly, a new draw each time an input is read, from torch's
random generator (which the Trainer seeds, and which each DataLoader worker gets seeded apart): cached variants would
triple the cache for three fixed draws per input, and the draw costs little next to a training step (bench.augment).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib.audio import SAMPLE_RATE

NOISE_SNR_DB = (10.0, 20.0)  # speech over noise, drawn uniformly per input (lhotse CutMix's default range)
NOISE_CLIP_SECONDS = 30.0  # the noise clips' length; an input takes a random stretch of one (a shorter input a part)
NOISE_CLIPS_PER_KIND = 2
KEYS = ("speed_perturbation", "additive_noise", "spec_augment")  # each piece's key in a family's params section


def on_waveforms(hp) -> bool:
    """Whether a family's params section augments waveforms (speed or noise): training then reads waveforms."""
    return bool(hp.speed_perturbation or hp.additive_noise)


def settings(hp) -> dict:
    """A family section's augmentation keys, as the training summary records them."""
    return {key: getattr(hp, key) for key in KEYS}


def speed_factors(speed_perturbation: float) -> tuple[float, ...]:
    """The factors an input is played at: (1 - s, 1, 1 + s), or (1,) when off."""
    s = speed_perturbation
    return (round(1 - s, 6), 1.0, round(1 + s, 6)) if s else (1.0,)


def pack_seconds(seconds: float, speed_perturbation: float) -> float:
    """How long a packed training window may be, so that it still fits `seconds` at the slowest factor."""
    return seconds * min(speed_factors(speed_perturbation))


@dataclass
class WaveAugmentation:
    """Speed and noise for training waveforms (16 kHz mono): `__call__` gives a new draw per call."""

    speed_perturbation: float = 0.0
    additive_noise: float = 0.0
    noises: list[np.ndarray] = field(default_factory=list)  # what `additive_noise` mixes in

    def __post_init__(self):
        if self.additive_noise and not self.noises:
            raise ValueError("additive_noise needs noise clips to mix in")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator,
                 longest: int | None = None) -> tuple[np.ndarray, float]:
        """`wave` at a speed drawn from `speed_factors` (only those that keep it at most `longest` samples), with
        noise mixed in for a share `additive_noise` of the calls; and the factor it is played at."""
        from lhotse.augmentation import Speed

        wave = np.asarray(wave, dtype=np.float32)
        factors = [f for f in speed_factors(self.speed_perturbation)
                   if longest is None or f >= 1 or len(wave) / f <= longest]
        factor = float(factors[rng.integers(len(factors))])
        if factor != 1.0:
            wave = Speed(factor)(wave[None], SAMPLE_RATE)[0]
        if self.additive_noise and rng.random() < self.additive_noise:
            wave = self.noisy(wave, rng)
        return wave, factor

    def noisy(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`wave` with a random stretch of a random noise clip at an SNR drawn from NOISE_SNR_DB."""
        from lhotse.audio.mixer import AudioMixer

        noise = self.noises[rng.integers(len(self.noises))]
        if len(noise) < len(wave):
            noise = np.tile(noise, len(wave) // len(noise) + 1)
        start = int(rng.integers(0, len(noise) - len(wave) + 1))
        mixer = AudioMixer(wave[None], SAMPLE_RATE)
        mixer.add_to_mix(noise[None, start:start + len(wave)].astype(np.float32), snr=float(rng.uniform(*NOISE_SNR_DB)))
        return mixer.mixed_audio[0]


def item_generator() -> np.random.Generator:
    """A generator for one item's draws, seeded from torch's (seeded by the Trainer, apart in each DataLoader
    worker), so that a run's augmentation is reproducible and workers do not repeat each other."""
    import torch

    return np.random.default_rng(int(torch.randint(2**62, ())))
