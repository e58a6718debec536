import numpy as np
import pytest
import soundfile as sf

from lib import audio


def sine(rate, seconds, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, -x * 0 + x * 0.5], axis=1) if channels == 2 else x


@pytest.mark.parametrize("ext, rate, channels", [("wav", 16000, 1), ("flac", 44100, 2), ("ogg", 22050, 1),
                                                  ("wav", 8000, 2)])
def test_load_resamples_to_16k_mono(tmp_path, ext, rate, channels):
    path = tmp_path / f"a.{ext}"
    sf.write(path, sine(rate, 2.0, channels=channels), rate)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    x = audio.load(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == pytest.approx(32000, abs=2)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * 16000 / len(x) == pytest.approx(440, abs=2)  # pitch survives resampling


def test_segment_and_downmix(tmp_path):
    rate = 16000
    left = np.r_[np.zeros(rate), np.ones(rate)].astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), rate)
    segment = audio.load(tmp_path / "s.wav", start=1.25, end=1.75)
    assert len(segment) == 8000
    assert segment.mean() == pytest.approx(0.25, abs=1e-3)  # (0.5 + 0) / 2


def test_errors(tmp_path):
    with pytest.raises(audio.AudioError, match="not found"):
        audio.probe(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really audio")
    with pytest.raises(audio.AudioError, match="unreadable"):
        audio.probe(tmp_path / "junk.wav")
    sf.write(tmp_path / "short.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="outside the file"):
        audio.load(tmp_path / "short.wav", start=0.5, end=0.8)
