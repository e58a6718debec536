"""Long-form decoding at whisper-base size: the demo's fine-tuned model and the untrained whisper-base on whole
recordings of a minute and a half, against the same segments decoded one at a time.

Each test speaker's first segments (about LONG_FORM_SECONDS of speech, in order) are joined with 0.5 s of silence
into one recording, as 05 joins them with `evaluation.long_form_seconds`, but long enough for Whisper's sequential
decoding to hand over between several 30 s windows. The same segments are also decoded one at a time; WER and BLEU
of both, with 95 % intervals, and the hallucination shares. Needs `make demo` first (its `whisper/final`).

    python -m bench.longform
"""
from __future__ import annotations

import json

from bench import common
from lib import config, evaluate, manifest as manifest_io, packing

LONG_FORM_SECONDS = 90  # three 30 s windows: two hand-overs per recording


def main() -> None:
    demo = config.load("params/demo.yaml")
    final = demo.paths.model("whisper") / "final"
    if not (final / "config.json").exists():
        raise SystemExit(f"{final}: no fine-tuned Whisper yet; run `make demo` first")
    test = manifest_io.read(demo.paths.splits / "test.tsv")
    first: dict[str, list] = {}  # each speaker's first LONG_FORM_SECONDS of test segments
    for file in packing.pack(test.segments, LONG_FORM_SECONDS, stream=lambda seg: seg.group):
        first.setdefault(file[0].group, file)
    kept = [seg for file in first.values() for seg in file]
    params = config.load("params/demo.yaml", {
        "output_dir": str(common.BENCH_DIR / "longform"), "evaluation": {
            "segments": len(kept), "long_form_seconds": LONG_FORM_SECONDS, "bootstrap_resamples": 1000}})
    manifest_io.write_segments(params.paths.splits / "test.tsv", test.columns, kept)
    results = {"fine-tuned": evaluate.evaluate(params, "whisper", model_dir=final, output_dir=params.paths.results),
               "as it started": evaluate.evaluate(params, "whisper", untrained=True, output_dir=params.paths.results)}
    rows = []
    for model, summary in results.items():
        long_form, short = summary["long_form"], summary["tasks"]
        for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
            whole, single = long_form["tasks"][task]["metrics"][metric], short[task]["metrics"][metric]
            print(f"{model}, {metric.upper()}: segments {single['value']} {single['ci95']}, long-form "
                  f"{whole['value']} {whole['ci95']} ({long_form['files']} recordings, {long_form['audio_seconds']} s)")
        rows.append(common.Row(f"{model} whisper-base, long-form WER vs the same segments one at a time",
                               "WER %", long_form["tasks"]["transcribe"]["metrics"]["wer"]["value"],
                               short["transcribe"]["metrics"]["wer"]["value"], higher_is_better=False))
    common.report("longform", rows, {"results": {m: {k: s[k] for k in ("tasks", "long_form", "hallucination",
                                                                       "segments")} for m, s in results.items()}})
    print(json.dumps({m: s["long_form"]["hallucination"] for m, s in results.items()}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
