"""Which temperature fallback: openai/whisper's rule against the alternatives, on the demo's fine-tuned Whisper.

Three variants of lib.decoding's fallback, each otherwise at 05's settings (greedy, the gate at 0.6 / -1, the
temperatures 0.2 ... 1.0):

- openai/whisper's: loops and unsure outputs (average log-probability below -1) decoded again; where every attempt
  fails, the last kept;
- the same retries, the most confident attempt that does not loop kept (faster-whisper's choice);
- loops only decoded again, the most confident kept (the lib's rule before, chosen on 16 synthetic clips).

Each decodes the held-out set's segments one by one (all of them), its recordings whole (lib.longform, the VAD on,
as lib.transcribe and 05 decode them) and 05's non-speech set: WER and BLEU with intervals, the outputs decoded
again, the clips with text, and the seconds each took. Needs `make demo` first (its `whisper/final`).

    python -m bench.fallback      # about 15 minutes on 2 CPU cores; outputs/bench/fallback.json
"""
from __future__ import annotations

import dataclasses
import time

from bench import common
from lib import audio, config, decoding, evaluate, families, longform, manifest as manifest_io, metrics, packing, tasks

VARIANTS = {
    "openai/whisper's (loops and unsure retried, last kept)": {"retry_unsure": True, "keep_best": False},
    "loops and unsure retried, most confident kept": {"retry_unsure": True, "keep_best": True},
    "loops only retried, most confident kept": {"retry_unsure": False, "keep_best": True},
}


def scored(references: list[str], hypotheses: list[str], tags: list[str], task: str) -> dict:
    """WER (transcripts) or BLEU (translations) with its interval."""
    found = (metrics.transcript_scores(references, hypotheses, [t.split() for t in tags], 1000, 1234)
             if task == "transcribe" else metrics.translation_scores(references, hypotheses, 1000, 1234))
    return found.to_dict()["metrics"]["wer" if task == "transcribe" else "bleu"]


def run(decoder: decoding.Decoder, params: config.Params, variant: dict) -> dict:
    """One variant on the three sets."""
    family = families.get("whisper")
    options = [dataclasses.replace(decoding.DecodingOptions.for_test(t, params.evaluation), **variant)
               for t in tasks.TASKS]
    bundle = evaluate.loaded(params, "whisper", params.paths.model("whisper") / "final")[0]
    held = family.prepare_features(params.paths, bundle, splits=("heldout",))["heldout"].load()
    inputs = held.with_format("numpy", columns=[family.input_column])
    found = {}
    began = time.perf_counter()
    decoded = decoding.decode(decoder, [inputs[i][family.input_column] for i in range(len(held))], held["duration"],
                              options)
    found["segments"] = {"seconds": round(time.perf_counter() - began, 1)}
    for o in options:
        picked = [i for i, t in enumerate(held[tasks.TEXT_COLUMN[o.task]]) if t]
        found["segments"][o.task] = {
            "score": scored([held[tasks.TEXT_COLUMN[o.task]][i] for i in picked],
                            [decoded[o.task][i].gated(o) for i in picked], [held["lang_tags"][i] for i in picked],
                            o.task),
            "decoded_again": sum(decoded[o.task][i].retried for i in picked)}
    segments = manifest_io.read(params.paths.splits / "heldout.tsv").segments
    recordings = manifest_io.by_recording(segments)
    began = time.perf_counter()
    pieces = longform.decode(decoder, [audio.load(path) for path in recordings], options, use_vad=True)
    found["recordings"] = {"files": len(recordings), "seconds": round(time.perf_counter() - began, 1)}
    for o in options:
        joined = [packing.window_columns(inside) for inside in recordings.values()]
        references = [row[tasks.TEXT_COLUMN[o.task]] for row in joined]
        written = [longform.text(p) for p in pieces[o.task]]
        keep = [i for i, reference in enumerate(references) if reference]
        found["recordings"][o.task] = scored([references[i] for i in keep], [written[i] for i in keep],
                                             [joined[i]["lang_tags"] for i in keep], o.task)
    began = time.perf_counter()
    quiet = evaluate.nonspeech_set(decoder, options, params.paths.splits / "test.tsv")
    found["nonspeech"] = {"seconds": round(time.perf_counter() - began, 1), "clips": quiet["clips"],
                          **{task: shares["with_text_gated"] for task, shares in quiet["tasks"].items()}}
    return found


def main() -> None:
    params = config.load("params/demo.yaml")
    final = params.paths.model("whisper") / "final"
    if not (final / "config.json").exists():
        raise SystemExit(f"{final}: no fine-tuned Whisper yet; run `make demo` first")
    decoder = evaluate.loaded(params, "whisper", final)[1]
    results = {name: run(decoder, params, variant) for name, variant in VARIANTS.items()}
    for name, found in results.items():
        segments, whole = found["segments"], found["recordings"]
        print(f"{name}\n  segments: WER {segments['transcribe']['score']['value']}, BLEU "
              f"{segments['translate']['score']['value']}, decoded again {segments['transcribe']['decoded_again']} / "
              f"{segments['translate']['decoded_again']}, {segments['seconds']} s\n  recordings: WER "
              f"{whole['transcribe']['value']}, BLEU {whole['translate']['value']}, {whole['seconds']} s\n"
              f"  non-speech clips with text: {found['nonspeech']}")
    names = list(VARIANTS)
    rows = [common.Row(f"held-out recordings WER, {name} vs openai/whisper's", "WER %",
                       results[name]["recordings"]["transcribe"]["value"],
                       results[names[0]]["recordings"]["transcribe"]["value"], higher_is_better=False)
            for name in names[1:]]
    rows += [common.Row(f"seconds for the three sets, {name} vs openai/whisper's", "s",
                        sum(results[name][part]["seconds"] for part in ("segments", "recordings", "nonspeech")),
                        sum(results[names[0]][part]["seconds"] for part in ("segments", "recordings", "nonspeech")),
                        higher_is_better=False) for name in names[1:]]
    common.report("fallback", rows, {"variants": VARIANTS, "results": results})


if __name__ == "__main__":
    main()
