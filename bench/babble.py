"""Reversed babble through `lib.transcribe`, as a user hands such files to it: how many clips get text.

Crowd speech played backwards (lib.nonspeech's "reversed babble": two to eight talkers, reversed and summed) is the
non-speech a deployed model most often writes text on: it sounds like speech and holds no words. CLIPS clips, 5 to 28
s, at -40 to -15 dBFS, are made from the speech of the held-out set (voices training never heard), written as WAV
files, and transcribed whole by `python -m lib.transcribe` (both tasks, 05's decoding settings) with the VAD off
(Whisper's own long-form decoding) and on. A clip counts when either task has text. Needs `make demo` first (its
`whisper/final`), or `--model`.

    python -m bench.babble [--model DIR]      # outputs/bench/babble.json
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import common
from lib import audio, config, manifest, nonspeech

CLIPS = 8
SEED = 2041  # other draws than 05's set and training's


def clips(folder: Path, speech_manifest: Path) -> list[Path]:
    """CLIPS reversed-babble WAV files in `folder`, from the first 24 segments of `speech_manifest`."""
    segments = manifest.read(speech_manifest).segments[:24]
    speech = [audio.load(s.audio, s.start, s.end) for s in segments]
    rng = np.random.default_rng(random.Random(f"babble-{SEED}").getrandbits(64))
    paths = []
    for i in range(CLIPS):
        wave = nonspeech.generate("reversed babble", float(rng.uniform(5, 28)), float(rng.uniform(-40, -15)), rng,
                                  speech)
        paths.append(folder / f"reversed-babble-{i:02d}.wav")
        sf.write(paths[-1], wave, audio.SAMPLE_RATE)
    return paths


def transcribed(model: Path, folder: Path, vad: bool) -> dict:
    """`python -m lib.transcribe` on the folder: per clip the text of each task, and the seconds it took."""
    out = folder / ("vad" if vad else "no-vad")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lib.transcribe", str(folder), "--model", str(model), "--format", "json",
                    "--out", str(out), "--vad" if vad else "--no-vad"], check=True, capture_output=True)
    seconds = time.perf_counter() - began
    texts = {path.stem: {task: found["text"] for task, found in json.loads(path.read_text(encoding="utf-8")).items()}
             for path in sorted(out.glob("*.json"))}
    return {"clips_with_text": sum(any(t.strip() for t in found.values()) for found in texts.values()),
            "clips": len(texts), "seconds": round(seconds, 1), "texts": texts}


def main(argv: list[str] | None = None) -> None:
    demo = config.load("params/demo.yaml")
    parser = argparse.ArgumentParser(prog="python -m bench.babble", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=demo.paths.model("whisper") / "final")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").exists() and not (args.model / "model.bin").exists():
        raise SystemExit(f"{args.model}: no trained model; run `make demo` first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips(folder, demo.paths.splits / "heldout.tsv")
        found = {"no-vad": transcribed(args.model, folder, vad=False), "vad": transcribed(args.model, folder, vad=True)}
    for way, result in found.items():
        print(f"{way:>7}: text on {result['clips_with_text']} of {result['clips']} clips ({result['seconds']} s)")
    rows = [common.Row(f"reversed babble with text, {way}", "clips", result["clips_with_text"], result["clips"],
                       higher_is_better=False) for way, result in found.items()]
    common.report("babble", rows, {"model": str(args.model), **found})


if __name__ == "__main__":
    main()
