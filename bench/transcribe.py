"""`lib.transcribe` on whole recordings at whisper-base size: the real-time factor (wall time over audio time; lower is
faster) of the demo's fine-tuned whisper-base decoded by transformers and by its CTranslate2 int8 export, against
faster-whisper's own `WhisperModel.transcribe` on the same export and the same files as the reference.

Both tasks on RECORDINGS of the test split's recordings, taken from its speakers in turn (one to six segments
each). Every side decodes greedily with the same temperatures, compression-ratio and no-speech thresholds, Silero
VAD on, the language forced and nothing conditioned on earlier text. What differs is each tool's own: lib.transcribe
encodes a chunk once for both tasks and decodes again only outputs that loop; faster-whisper runs each task on its
own and, with its defaults, also decodes again outputs whose average log-probability is below -1 (openai/whisper's
rule), so it runs twice: as a user calls it, and with `log_prob_threshold=None` (decoded again on loops only, its
gate on the no-speech probability alone). Models are loaded and warmed up on one recording before the clock starts.
WER and BLEU of each side against the recordings' joined references are printed beside the speed, so a faster side
that writes worse text shows. Needs `make demo` first (its `whisper/final` and `whisper/ct2-int8`) and faster-whisper
(in the test extra).

    python -m bench.transcribe
"""
from __future__ import annotations

import time

from bench import common
from lib import audio, config, manifest as manifest_io, metrics, tasks, transcribe

RECORDINGS = 12
REFERENCE = "faster-whisper (ct2 int8)"
LOOPS_ONLY = "faster-whisper, loops only"


def recordings(params: config.Params) -> tuple[list, dict]:
    """The test split's recordings, up to RECORDINGS taken from its speakers in turn, and each one's references
    (task -> text)."""
    segments = manifest_io.read(params.paths.splits / "test.tsv").segments
    by_speaker: dict[str, list] = {}
    for segment in segments:
        if segment.audio not in by_speaker.setdefault(segment.speaker, []):
            by_speaker[segment.speaker].append(segment.audio)
    turns = [files[i] for i in range(max(map(len, by_speaker.values()))) for files in by_speaker.values()
             if i < len(files)]
    files = turns[:RECORDINGS]
    inside = manifest_io.by_recording(segments)
    references = {task: [" ".join(getattr(s, tasks.TEXT_COLUMN[task]) for s in inside[f.resolve()]) for f in files]
                  for task in tasks.TASKS}
    return files, references


def faster_whisper(export, files: list, hp, logprob_threshold: float | None) -> tuple[dict[str, list[str]], float]:
    """faster-whisper's `WhisperModel.transcribe` on each file, both tasks, with 05's settings and
    `logprob_threshold`: task -> texts, and the seconds it took (model loaded and warmed up first)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(export), device="cpu", compute_type="int8")
    settings = dict(language=tasks.SOURCE_LANGUAGE, beam_size=hp.num_beams, vad_filter=True,
                    temperature=[0.0, *hp.fallback_temperatures], condition_on_previous_text=False,
                    compression_ratio_threshold=hp.compression_ratio_threshold,
                    log_prob_threshold=logprob_threshold, no_speech_threshold=hp.no_speech_threshold)

    def run(path, task: str) -> str:
        segments, _ = model.transcribe(str(path), task=task, **settings)
        return " ".join(s.text.strip() for s in segments)

    run(files[0], "transcribe")  # warm-up
    began = time.perf_counter()
    texts = {task: [run(f, task) for f in files] for task in tasks.TASKS}
    return texts, time.perf_counter() - began


def ours(model, files: list, hp, out) -> tuple[dict[str, list[str]], float]:
    """lib.transcribe on each file, both tasks, with 05's settings: task -> texts, and the seconds it took (model
    loaded and warmed up first)."""
    from lib import longform

    loaded = transcribe.load_model(model)
    settings = transcribe.evaluation_settings(hp)
    transcribe.transcribe(files[:1], loaded, formats=("json",), out=out / "warm-up", progress=False, **settings)
    began = time.perf_counter()
    results = transcribe.transcribe(files, loaded, formats=("json",), out=out, progress=False, **settings)
    seconds = time.perf_counter() - began
    by_file = {r.source.path: r for r in results}
    return {task: [longform.text(by_file[f.resolve()].pieces[task]) for f in files] for task in tasks.TASKS}, seconds


def main() -> None:
    demo = config.load("params/demo.yaml")
    final = demo.paths.model("whisper") / "final"
    export = final.parent / "ct2-int8"
    if not (final / "config.json").exists() or not (export / "model.bin").exists():
        raise SystemExit(f"{final} and {export}: not both there; run `make demo` first")
    files, references = recordings(demo)
    audio_seconds = sum(audio.probe(f).duration for f in files)
    hp = demo.evaluation
    texts, seconds = {}, {}
    for side, threshold in ((REFERENCE, hp.logprob_threshold), (LOOPS_ONLY, None)):
        texts[side], seconds[side] = faster_whisper(export, files, hp, threshold)
    for side, model in (("transformers", final), ("ctranslate2 int8", export)):
        texts[side], seconds[side] = ours(model, files, hp, common.BENCH_DIR / "transcribe" / side.split()[0])
    factor = {side: s / audio_seconds for side, s in seconds.items()}
    quality = {side: {"wer": round(metrics.wer(references["transcribe"], found["transcribe"]), 2),
                      "bleu": round(metrics.bleu(references["translate"], found["translate"]), 2)}
               for side, found in texts.items()}
    print(f"{len(files)} recordings, {audio_seconds:.1f} s of audio, both tasks")
    for side in seconds:
        print(f"{side:>26}: {seconds[side]:6.1f} s, real-time factor {factor[side]:.3f}, WER {quality[side]['wer']}, "
              f"BLEU {quality[side]['bleu']}")
    rows = [common.Row(f"lib.transcribe ({side}) vs {reference}, real-time factor", "x real time", factor[side],
                       factor[reference], higher_is_better=False)
            for reference in (REFERENCE, LOOPS_ONLY) for side in ("transformers", "ctranslate2 int8")]
    common.report("transcribe", rows, {"recordings": len(files), "audio_seconds": round(audio_seconds, 1),
                                       "seconds": {k: round(v, 2) for k, v in seconds.items()},
                                       "real_time_factor": {k: round(v, 4) for k, v in factor.items()},
                                       "quality": quality})


if __name__ == "__main__":
    main()
