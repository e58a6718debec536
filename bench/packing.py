"""Packed training windows against one segment per input, at whisper-base size: seconds of speech trained per second,
and the val scores after the same speech (segments without a translation are packed apart, so no window loses its
translation task).

Both train one epoch over the same training segments (8 demo segments, about 24 s of speech, from each of the
corpus's first 10 speakers: enough for a speaker's segments to fill a window) with one encoder pass per input, fp32,
the same learning rate, schedule and timestamp share, and about the same audio per optimizer step:
- unpacked: each segment its own 30 s input (Whisper pads the rest with silence), batches of 8 segments;
- packed: each speaker's segments packed into windows of up to 30 s with their timestamps, batches of 1 window.
Both are timed by the same step clock (start to last optimizer step). Then each trained model decodes 16 val segments
of the full demo split, one segment at a time as 05 decodes them.

    python -m bench.packing
"""
from __future__ import annotations

from bench import common
from lib import demo_corpus

SPEAKERS, PER_SPEAKER = 10, 8
COMMON = {"epochs": 1, "checkpoint_steps": 100_000, "eval_segments": 2, "resume": False, "logging_steps": 1,
          "learning_rate": 1e-4, "grad_accum": 1, "share_encoder": True, "timestamp_share": 0.2}
CASES = {"unpacked": {"pack_seconds": 0, "batch_size": 8}, "packed into 30 s windows": {"pack_seconds": 30,
                                                                                         "batch_size": 1}}


def main() -> None:
    manifest = demo_corpus.subset(common.BENCH_DIR / f"demo-{PER_SPEAKER}-per-speaker-{SPEAKERS}-speakers.tsv",
                                  PER_SPEAKER, speakers=SPEAKERS)
    runs = {}
    for number, (case, overrides) in enumerate(CASES.items()):
        params = common.bench_params(f"packing-{number}", {"manifest": str(manifest),
                                                           "whisper": {**COMMON, **overrides}}, whisper_base=True)
        summary, seconds = common.timed_train(params, "whisper")
        assert summary["filtered"] == 0, f"{case}: {summary['filtered']} examples left out; both must train all audio"
        runs[case] = {"steps": summary["global_step"], "examples": summary["examples"]["train"],
                      "seconds": round(seconds, 1), "audio_seconds": round(common.trained_speech(params), 1),
                      "val": common.val_scores(params.paths.model("whisper") / "final", params.paths.root / "eval")}
    unpacked, packed = runs["unpacked"], runs["packed into 30 s windows"]
    rows = [common.Row(f"whisper-base training, packed 30 s windows vs one segment per input "
                       f"({packed['audio_seconds']:.0f} and {unpacked['audio_seconds']:.0f} s of speech trained)",
                       "speech seconds/s", packed["audio_seconds"] / packed["seconds"],
                       unpacked["audio_seconds"] / unpacked["seconds"])]
    for case, run in runs.items():
        print(f"{case}: val WER {run['val']['wer']['value']} {run['val']['wer']['ci95']}, "
              f"BLEU {run['val']['bleu']['value']} after {run['audio_seconds']} s of speech ({run['steps']} steps)")
    common.report("packing", rows, {"runs": runs, "common": COMMON, "cases": CASES})


if __name__ == "__main__":
    main()
