"""Augmentation in training: each input heard at another speed, in noise, by another voice, in a room, through a
narrower band or a lossy codec, each time the Trainer reads it.

Each piece is a key of a family's params section. Two change the signal, with lhotse's implementations (the toolkit
of icefall and k2):

- speed perturbation (`speed_perturbation: s`): the input played at a factor drawn from (1 - s, 1, 1 + s), the
  Kaldi/ESPnet/icefall default being s = 0.1. lhotse's `Speed` is sox's `speed`: a resampling, tempo and pitch
  together, at any ratio; times in the labels scale by 1 / factor.
- additive noise (`additive_noise: p`): a share p of the inputs get a non-speech clip (lib.nonspeech: the generated
  kinds, and `noise_dir`'s recordings when set) mixed in by lhotse's `AudioMixer` at an SNR drawn from
  NOISE_SNR_DB, lhotse's CutMix default.

Four change who speaks and how they are heard, each the share of inputs that get it, so that a model learns speech
rather than its training voices and microphones:

- voice (`voice_perturbation`): Signalsmith Stretch (python-stretch) moves the spectrum by up to VOICE_SEMITONES,
  pitch and formants together (a smaller or a larger speaker: a vocal-tract-length perturbation with its pitch), and
  changes the rate within VOICE_RATE without changing the pitch; times in the labels scale with the rate.
  python-stretch is MIT-licensed C++ with NumPy in and out; lhotse's tempo and pitch effects need torchaudio, which
  the pinned torch rules out.
- rooms (`reverb`): the input convolved with the impulse response of a simulated room, one of ROOMS shoebox rooms
  (ROOM_SIZE metres, an RT60 from ROOM_RT60, talker and microphone anywhere inside) that pyroomacoustics' image-source
  method computes once per run from its seed, in about a second (lhotse's random-room generator also needs
  torchaudio).
- band limits (`band_limit`): a Butterworth band-pass (scipy) from BAND_LOW to BAND_HIGH: from a telephone line's
  300-3400 Hz to a laptop microphone's roll-off.
- codecs (`codec`): a lossy codec through libsndfile, with lhotse's `Compress`: MP3, Vorbis or GSM 6.10 (at 8 kHz, as
  a phone line carries it), at a random compression level.

The third signal piece, SpecAugment (`spec_augment`), masks the model's input inside the model; each family sets it up
(`Family.setup_training`). Waveforms are augmented on the fly, a new draw each time an input is read, from torch's
random generator (which the Trainer seeds, and which each DataLoader worker gets seeded apart): cached variants would
multiply the cache for a few fixed draws per input, and the draw costs little next to a training step (bench.augment,
bench.voices).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib.audio import SAMPLE_RATE

NOISE_SNR_DB = (10.0, 20.0)  # speech over noise, drawn uniformly per input (lhotse CutMix's default range)
NOISE_CLIP_SECONDS = 30.0  # the noise clips' length; an input takes a random stretch of one (a shorter input a part)
NOISE_CLIPS_PER_KIND = 2
VOICE_SEMITONES = 5.0  # the spectrum (pitch and formants) moved by up to this many semitones, up or down
VOICE_RATE = (0.75, 1.35)  # times as fast, pitch kept
ROOMS = 48  # simulated rooms per run
ROOM_SIZE = ((3.0, 12.0), (2.5, 9.0), (2.4, 4.0))  # metres: length, width, height
ROOM_RT60 = (0.2, 1.0)  # seconds
ROOM_ORDER = 30  # reflections at most: impulse responses of about 0.5 to 1 s
BAND_LOW, BAND_HIGH = (60.0, 400.0), (3000.0, 7000.0)  # Hz: the band-pass's edges
CODEC_LEVEL = (0.3, 0.99)  # libsndfile's compression level (1 is refused for MP3)
CODECS = ("mp3", "vorbis", "gsm")  # lhotse's Compress (its Opus costs 0.5 s per 30 s input on a CPU core, five
# times the others)
KEYS = ("speed_perturbation", "additive_noise", "spec_augment", "voice_perturbation", "reverb", "band_limit",
        "codec")  # each piece's key in a family's params section
WAVEFORM_KEYS = tuple(k for k in KEYS if k != "spec_augment")  # the pieces that change waveforms


def on_waveforms(hp) -> bool:
    """Whether a family's params section augments waveforms: training then reads waveforms."""
    return any(getattr(hp, key) for key in WAVEFORM_KEYS)


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


def for_training(hp, noises: list[np.ndarray], seed: int) -> "WaveAugmentation | None":
    """The waveform augmentation a family's params section asks for (its rooms simulated from `seed`); None when it
    asks for none."""
    if not on_waveforms(hp):
        return None
    return WaveAugmentation(hp.speed_perturbation, hp.additive_noise, noises, hp.voice_perturbation, hp.reverb,
                            hp.band_limit, hp.codec, rooms(ROOMS, seed) if hp.reverb else [])


def rooms(count: int, seed: int) -> list[np.ndarray]:
    """`count` room impulse responses (16 kHz, peak 1): shoebox rooms of ROOM_SIZE with an RT60 from ROOM_RT60, the
    talker and the microphone at random places at least half a metre from the walls and each other, computed by
    pyroomacoustics' image-source method."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    responses = []
    while len(responses) < count:
        size = np.array([rng.uniform(*bounds) for bounds in ROOM_SIZE])
        rt60 = rng.uniform(*ROOM_RT60)
        try:
            absorption, order = pra.inverse_sabine(rt60, size)
        except ValueError:  # a room too large for this RT60
            continue
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, ROOM_ORDER))
        talker, microphone = (rng.uniform(0.5, size - 0.5) for _ in range(2))
        if np.linalg.norm(talker - microphone) < 0.5:
            continue
        room.add_source(talker)
        room.add_microphone(microphone)
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float32)
        responses.append(response / np.abs(response).max())
    return responses


@dataclass
class WaveAugmentation:
    """What training does to waveforms (16 kHz mono): `__call__` gives a new draw per call. Each float is a piece's
    key (`KEYS`); `noises` are what `additive_noise` mixes in, `rooms` the impulse responses `reverb` draws from."""

    speed_perturbation: float = 0.0
    additive_noise: float = 0.0
    noises: list[np.ndarray] = field(default_factory=list)
    voice_perturbation: float = 0.0
    reverb: float = 0.0
    band_limit: float = 0.0
    codec: float = 0.0
    rooms: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        if self.additive_noise and not self.noises:
            raise ValueError("additive_noise needs noise clips to mix in")
        if self.reverb and not self.rooms:
            raise ValueError("reverb needs room impulse responses (augment.rooms)")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator,
                 longest: int | None = None) -> tuple[np.ndarray, float]:
        """`wave` by another voice (a share `voice_perturbation` of the calls), at a speed drawn from `speed_factors`,
        in a room, with noise, through a band-pass and a codec (each for its share of the calls), never longer than
        `longest` samples; and the factor it is played at (how many times as fast)."""
        from lhotse.augmentation import Speed

        wave = np.asarray(wave, dtype=np.float32)
        played = 1.0
        if self.voice_perturbation and rng.random() < self.voice_perturbation:
            wave, played = self.voiced(wave, rng, longest)
        factors = [f for f in speed_factors(self.speed_perturbation)
                   if longest is None or f >= 1 or len(wave) / f <= longest]
        factor = float(factors[rng.integers(len(factors))])
        if factor != 1.0:
            wave = Speed(factor)(wave[None], SAMPLE_RATE)[0]
        if self.reverb and rng.random() < self.reverb:
            wave = self.in_room(wave, rng)
        if self.additive_noise and rng.random() < self.additive_noise:
            wave = self.noisy(wave, rng)
        if self.band_limit and rng.random() < self.band_limit:
            wave = band_passed(wave, rng.uniform(*BAND_LOW), rng.uniform(*BAND_HIGH))
        if self.codec and rng.random() < self.codec:
            wave = compressed(wave, CODECS[rng.integers(len(CODECS))], float(rng.uniform(*CODEC_LEVEL)))
        return wave, played * factor

    def voiced(self, wave: np.ndarray, rng: np.random.Generator, longest: int | None) -> tuple[np.ndarray, float]:
        """`wave` by another voice: its spectrum moved by up to VOICE_SEMITONES and its rate drawn from VOICE_RATE
        (no slower than `longest` allows); and the rate."""
        import python_stretch

        slowest = max(VOICE_RATE[0], len(wave) / longest) if longest else VOICE_RATE[0]
        rate = float(rng.uniform(slowest, max(slowest, VOICE_RATE[1])))
        stretch = python_stretch.Signalsmith.Stretch(int(rng.integers(2**31)))
        stretch.preset(1, SAMPLE_RATE, True)  # the cheaper preset: speech needs no music-grade stretching
        stretch.setTransposeSemitones(float(rng.uniform(-VOICE_SEMITONES, VOICE_SEMITONES)))
        stretch.timeFactor = rate
        out = stretch.process(wave[None])[0]
        return np.ascontiguousarray(out[:longest] if longest else out, dtype=np.float32), rate

    def in_room(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`wave` convolved with one of the rooms, as long as it was, at its level (RMS)."""
        from scipy.signal import fftconvolve

        wet = fftconvolve(wave, self.rooms[rng.integers(len(self.rooms))])[:len(wave)]
        return level_of(wet, wave)

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


def band_passed(wave: np.ndarray, low: float, high: float) -> np.ndarray:
    """`wave` through a 4th-order Butterworth band-pass from `low` to `high` Hz, at its level (RMS)."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return level_of(sosfilt(sos, wave), wave)


def compressed(wave: np.ndarray, codec: str, level: float) -> np.ndarray:
    """`wave` through a lossy codec (lhotse's Compress: encoded and decoded by libsndfile) at a compression `level`
    from 0 to 1; GSM 6.10 at 8 kHz, as a phone line carries it. As long as it was."""
    import soxr
    from lhotse.augmentation import Compress

    if codec == "gsm":
        narrow = soxr.resample(wave, SAMPLE_RATE, 8000)
        out = soxr.resample(Compress(codec, level)(narrow[None], 8000)[0], 8000, SAMPLE_RATE)
    else:
        out = Compress(codec, level)(wave[None], SAMPLE_RATE)[0]
    out = np.asarray(out, dtype=np.float32)[:len(wave)]
    return np.pad(out, (0, len(wave) - len(out)))


def level_of(wave: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`wave` scaled to the RMS of `like`, as float32 (clipped to [-1, 1])."""
    power = np.sqrt(np.mean(np.square(wave, dtype=np.float64)))
    target = np.sqrt(np.mean(np.square(like, dtype=np.float64)))
    return np.clip(wave * (target / power if power else 0.0), -1, 1).astype(np.float32)


def item_generator() -> np.random.Generator:
    """A generator for one item's draws, seeded from torch's (seeded by the Trainer, apart in each DataLoader
    worker), so that a run's augmentation is reproducible and workers do not repeat each other."""
    import torch

    return np.random.default_rng(int(torch.randint(2**62, ())))
