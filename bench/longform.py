"""Long-form decoding at whisper-base size: the demo's fine-tuned model on whole recordings of a minute and a half
with pauses, decoded with the VAD off (Whisper's sequential 30 s windows) and on (cut at speech by Silero VAD),
against the same segments decoded one at a time.

Each test speaker's first segments (in order, up to LONG_FORM_SECONDS with the longest pauses) are joined into one
recording with a pause of 2-10 s of silence or noise between each two, as 05 joins them, but long enough for
Whisper's sequential decoding to hand over between several 30 s windows. WER and BLEU of the recordings and of the
segments, with 95 % intervals, and the words written inside the pauses. Needs `make demo` first (its
`whisper/final`).

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
    first: dict[str, list] = {}  # each speaker's first test segments, as many as a recording holds
    for file in packing.pack(test.segments, LONG_FORM_SECONDS, stream=lambda seg: seg.group,
                             gap=evaluate.PAUSE_SECONDS[1]):
        first.setdefault(file[0].group, file)
    kept = [seg for file in first.values() for seg in file]
    results, rows = {}, []
    for vad in (False, True):
        params = config.load("params/demo.yaml", {
            "output_dir": str(common.BENCH_DIR / "longform"), "evaluation": {
                "segments": len(kept), "long_form_seconds": LONG_FORM_SECONDS, "bootstrap_resamples": 1000,
                "vad": vad, "untrained": []}})
        manifest_io.write_segments(params.paths.splits / "test.tsv", test.columns, kept)
        summary = results[f"VAD {'on' if vad else 'off'}"] = evaluate.evaluate(
            params, "whisper", model_dir=final, output_dir=params.paths.results)
        long_form, short = summary["long_form"], summary["tasks"]
        for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
            whole, single = long_form["tasks"][task]["metrics"][metric], short[task]["metrics"][metric]
            print(f"VAD {'on' if vad else 'off'}, {metric.upper()}: segments {single['value']} {single['ci95']}, "
                  f"long-form {whole['value']} {whole['ci95']} ({long_form['files']} recordings, "
                  f"{long_form['audio_seconds']} s, {long_form['pauses']['seconds']} s of it pauses); words written "
                  f"in pauses: {long_form['hallucination'][task]['words_in_pauses']}")
        rows.append(common.Row(f"fine-tuned whisper-base, VAD {'on' if vad else 'off'}: long-form WER vs the same "
                               "segments one at a time", "WER %", long_form["tasks"]["transcribe"]["metrics"]["wer"][
                                   "value"], short["transcribe"]["metrics"]["wer"]["value"], higher_is_better=False))
    off, on = (results[k]["long_form"]["hallucination"] for k in ("VAD off", "VAD on"))
    for task in ("transcribe", "translate"):
        rows.append(common.Row(f"words written in pauses ({task}), VAD on vs off", "words",
                               on[task]["words_in_pauses"], off[task]["words_in_pauses"], higher_is_better=False))
    common.report("longform", rows, {"results": {m: {k: s[k] for k in ("tasks", "long_form", "hallucination",
                                                                       "segments")} for m, s in results.items()}})
    print(json.dumps({m: s["long_form"]["hallucination"] for m, s in results.items()}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
