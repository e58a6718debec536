"""Use a trained model on new recordings: the code-switched transcript and the English translation, with timestamps.

    python -m lib.transcribe meeting.wav lectures/ --model outputs/prod/whisper/final
    python -m lib.transcribe call.flac --model outputs/prod/whisper/ct2-int8_float16 --task transcribe --format srt,json

From a notebook: `transcribe(["meeting.wav"], "outputs/prod/whisper/final")`.

AUDIO is files or folders (searched recursively), in any format `lib.audio` reads, at any rate and channel count.
`--model` is a trained `final/` of any family (the family is read from its `config.json`), a checkpoint, a hub id, or
a CTranslate2 export (`ct2-<quantization>/`, decoded by ctranslate2). Each recording is cut at speech by the VAD and
each stretch is decoded with the no-speech gate and the temperature fallback as 05 decodes (lib.longform, through
lib.decoding's driver); with `--no-vad`, window by window (Whisper's sequential decoding). Times are the recording's.
The decoding settings are those saved with the model (`decoding.json`, 05's settings, written by training and
copied into its exports), else lib.decoding's defaults (openai/whisper's); each can be set by name, and a name that
is no setting is an error.

Outputs follow openai-whisper's conventions, under `--out` in the inputs' own relative folders, each written whole or
not at all: `<name>.txt`, `.srt`, `.vtt`, `.tsv` per task (`<name>.vi.srt` and `<name>.en.srt` when both tasks are
written) and `<name>.json` with a `transcribe` and a `translate` object, each with `text` and `segments`. A file that
cannot be read is named with its reason, the others are still transcribed, nothing of it is left behind, and the exit
code is 1. A zero-length or silent file gives empty outputs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib import atomic, audio, decoding, families, longform, tasks

log = logging.getLogger("lib.transcribe")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")
FORMATS = ("txt", "srt", "vtt", "tsv", "json")
OUTPUT_LANGUAGE = {"transcribe": "vi", "translate": "en"}  # the task's name in its files when both are written


@dataclass
class Source:
    """An audio file, and where its outputs go under the output folder (its relative folder and name, no suffix)."""

    path: Path
    name: Path


@dataclass
class Result:
    """One file's outcome: per task its pieces (times in the recording), the files written, or why it failed."""

    source: Source
    seconds: float = 0.0
    pieces: dict[str, list[longform.Piece]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    error: str | None = None


def find_audio(paths: list[str | Path]) -> tuple[list[Source], list[Result]]:
    """The audio files among `paths` (folders searched recursively), each named by its path relative to the inputs'
    common folder; and a failed Result for each path that is missing, of an unsupported format, or a folder with no
    audio."""
    found, failed = [], []
    for given in map(Path, paths):
        if not given.exists():
            failed.append(Result(Source(given, Path(given.name)), error="no such file or folder"))
        elif given.is_dir():
            inside = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not inside:
                failed.append(Result(Source(given, Path(given.name)),
                                     error=f"a folder with no audio files ({', '.join(AUDIO_EXTENSIONS)})"))
            found += inside
        elif given.suffix.lower() not in AUDIO_EXTENSIONS:
            failed.append(Result(Source(given, Path(given.name)), error=f"unsupported format "
                                 f"{given.suffix or '(no extension)'}: expected one of {', '.join(AUDIO_EXTENSIONS)}"))
        else:
            found.append(given)
    files = list(dict.fromkeys(p.resolve() for p in found))
    if not files:
        return [], failed
    root = Path(os.path.commonpath([p.parent for p in files]))
    return [Source(p, p.relative_to(root).with_suffix("")) for p in files], failed


def load_model(model: str | Path, device: str = "cpu") -> decoding.Decoder:
    """The decoder of a trained folder, a checkpoint, a hub id or a CTranslate2 export (its family read from its
    config.json)."""
    folder = Path(model)
    if (folder / "model.bin").exists():  # a CTranslate2 export
        family = next((f for f in families.FAMILIES.values() if f.export_format == "ct2"), None)
        if family is None:
            raise ValueError(f"{folder}: a CTranslate2 export, and no model family decodes one")
        return family.load_export(folder, device)
    if (folder / "config.json").exists():
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    elif folder.exists():
        raise ValueError(f"{folder}: no config.json (a trained final/ or checkpoint) and no model.bin "
                         "(a CTranslate2 export)")
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(model)).model_type
    family = families.for_model_type(model_type)
    bundle = family.load_trained(model)
    bundle.model.to(device)
    return family.decoder(bundle)


def evaluation_settings(evaluation) -> dict:
    """05's decoding settings (the params' `evaluation` section) as `transcribe()` takes them."""
    return {name: getattr(evaluation, name) for name in decoding.SETTINGS}


def decoding_options(task_names: tuple[str, ...], language: str = tasks.SOURCE_LANGUAGE,
                     **settings) -> list[decoding.DecodingOptions]:
    """The options of each task from `settings` named as `decoding.SETTINGS` names them (None: the default); an
    unknown name is a DecodingError."""
    chosen = {name: value for name, value in settings.items() if value is not None}
    return [decoding.DecodingOptions.from_settings(task, chosen, language) for task in task_names]


def transcribe(paths: list[str | Path], model: str | Path | decoding.Decoder, task: str = "both",
               formats: tuple[str, ...] = FORMATS, out: str | Path = ".", vad: bool = True, device: str = "cpu",
               language: str = tasks.SOURCE_LANGUAGE, progress: bool = True, **settings) -> list[Result]:
    """Transcribe and translate (`task`: transcribe, translate or both) every audio file of `paths` with `model` (a
    folder, hub id or CTranslate2 export; or a loaded decoder), writing `formats` under `out`. `settings` override
    the decoding settings saved with the model (`decoding.saved_settings`) by name. Returns one Result per file, failed ones
    with their reason."""
    task_names = tasks.TASKS if task == "both" else (task,)
    saved = decoding.saved_settings(model) if isinstance(model, (str, Path)) else {}
    options = decoding_options(task_names, language, **(saved | settings))
    decoder = model if isinstance(model, decoding.Decoder) else load_model(model, device)
    sources, results = find_audio(paths)
    durations = {source.path: _duration(source, results) for source in sources}
    readable = [s for s in sources if durations[s.path] is not None]
    bar = _progress(sum(durations[s.path] for s in readable), len(readable), progress)
    for source in readable:
        result = Result(source, seconds=durations[source.path])
        try:
            wave = audio.load(source.path) if result.seconds else np.zeros(0, np.float32)
            result.pieces = decode(decoder, wave, options, vad)
            result.written = write_outputs(result, Path(out), formats, both=len(task_names) > 1)
        except (audio.AudioError, OSError) as err:
            result.error, result.pieces = _reason(err), {}
        results.append(result)
        bar.update(result.seconds)
        bar.set_postfix_str(source.name.name)
    bar.close()
    return results


def _duration(source: Source, failed: list[Result]) -> float | None:
    """The file's length in seconds (0 for a file with no samples, or no bytes); None, with a failed Result added,
    for a file that cannot be read or was cut short."""
    if source.path.stat().st_size == 0:
        return 0.0
    try:
        info = audio.probe(source.path)
    except audio.AudioError as err:
        if "holds no samples" in str(err):
            return 0.0
        failed.append(Result(source, error=_reason(err)))
        return None
    cut = audio.truncation(source.path)
    if cut:
        failed.append(Result(source, error=cut))
        return None
    return info.duration


def decode(decoder: decoding.Decoder, wave: np.ndarray, options: list[decoding.DecodingOptions],
           vad: bool = True) -> dict[str, list[longform.Piece]]:
    """One recording's pieces per task (lib.longform); none for a recording shorter than a VAD frame."""
    if len(wave) < audio.SAMPLE_RATE // 100:
        return {o.task: [] for o in options}
    return {task: found[0] for task, found in longform.decode(decoder, [wave], options, vad).items()}


def write_outputs(result: Result, out: Path, formats: tuple[str, ...], both: bool) -> list[Path]:
    """Each format's file of the result under `out`, each written atomically; if one fails, those already written are
    removed, so a file's outputs are all there or none."""
    written = []
    try:
        for fmt in formats:
            if fmt == "json":
                document = {task: {"text": longform.text(pieces), "segments": [_segment(p) for p in pieces]}
                            for task, pieces in result.pieces.items()}
                written.append(atomic.write_text(out / f"{result.source.name}.json",
                                                 json.dumps(document, ensure_ascii=False, indent=2) + "\n"))
                continue
            for task, pieces in result.pieces.items():
                suffix = f".{OUTPUT_LANGUAGE[task]}.{fmt}" if both else f".{fmt}"
                written.append(atomic.write_text(out / f"{result.source.name}{suffix}", WRITERS[fmt](_spoken(pieces))))
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _spoken(pieces: list[longform.Piece]) -> list[longform.Piece]:
    return [p for p in pieces if p.text.strip()]


def _segment(piece: longform.Piece) -> dict:
    scores = {k: v for k, v in (("no_speech_prob", piece.no_speech_prob), ("avg_logprob", piece.avg_logprob))
              if v is not None}
    return {"start": piece.start, "end": piece.end, "text": " ".join(piece.text.split()), **scores}


def _clock(seconds: float, separator: str, hours: bool = True) -> str:
    milliseconds = int(round(seconds * 1000))
    h, rest = divmod(milliseconds, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return (f"{h:02d}:" if hours or h else "") + f"{m:02d}:{s:02d}{separator}{ms:03d}"


def as_txt(pieces: list[longform.Piece]) -> str:
    return "".join(" ".join(p.text.split()) + "\n" for p in pieces)


def as_srt(pieces: list[longform.Piece]) -> str:
    return "".join(f"{i}\n{_clock(p.start, ',')} --> {_clock(p.end, ',')}\n{' '.join(p.text.split())}\n\n"
                   for i, p in enumerate(pieces, 1))


def as_vtt(pieces: list[longform.Piece]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(p.start, '.', False)} --> {_clock(p.end, '.', False)}\n"
                                  f"{' '.join(p.text.split())}\n\n" for p in pieces)


def as_tsv(pieces: list[longform.Piece]) -> str:
    return "start\tend\ttext\n" + "".join(f"{round(p.start * 1000)}\t{round(p.end * 1000)}\t"
                                          f"{' '.join(p.text.split())}\n" for p in pieces)


WRITERS = {"txt": as_txt, "srt": as_srt, "vtt": as_vtt, "tsv": as_tsv}


def _reason(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _progress(total_seconds: float, files: int, shown: bool):
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 1), unit="s", unit_scale=True, disable=not shown,
                desc=f"{files} file(s)", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                "[{elapsed}<{remaining}] {postfix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.transcribe", description=__doc__.split("\n")[0])
    parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("--model", required=True, help="a trained final/, a checkpoint, a hub id or a ct2 export")
    parser.add_argument("--task", choices=("transcribe", "translate", "both"), default="both")
    parser.add_argument("--format", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)}")
    parser.add_argument("--out", default=".", help="output folder (default: the current folder)")
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=True,
                        help="cut recordings at speech with Silero VAD (default); --no-vad: window by window "
                        "(Whisper's sequential decoding)")
    parser.add_argument("--language", choices=("vi", "en"), default=tasks.SOURCE_LANGUAGE,
                        help="the speech's language, forced for the transcript")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    defaults = "(default: as saved with the model, else openai/whisper's)"
    parser.add_argument("--batch-size", type=int, help=f"stretches decoded together {defaults}")
    parser.add_argument("--beam-size", "--beams", dest="num_beams", type=int, help=f"beam width {defaults}")
    parser.add_argument("--max-length", type=int, help=f"tokens generated at most per stretch, prompt included "
                        f"{defaults}")
    for key in ("no_speech_threshold", "logprob_threshold", "compression_ratio_threshold"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=float, help=defaults)
    parser.add_argument("--temperatures", type=float, nargs="*", dest="fallback_temperatures",
                        help=f"the fallback's temperatures, rising; none: no fallback {defaults}")
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        parser.error(f"--format: expected some of {', '.join(FORMATS)}, got {args.format!r}")
    given = {name: getattr(args, name) for name in decoding.SETTINGS if getattr(args, name) is not None}
    settings = decoding.saved_settings(args.model) | given
    try:
        decoding_options(tasks.TASKS, args.language, **settings)
    except decoding.DecodingError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    began = time.perf_counter()
    try:
        loaded = load_model(args.model, args.device)
    except (OSError, ValueError) as err:
        print(f"--model {args.model}: {_reason(err)}", file=sys.stderr)
        return 2
    results = transcribe(args.audio, loaded, args.task, formats, args.out, args.vad, args.device, args.language,
                         **settings)
    wall = time.perf_counter() - began
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"{r.source.path}: {r.error}", file=sys.stderr)
    seconds = sum(r.seconds for r in results if not r.error)
    print(f"{len(results) - len(failed)} file(s), {seconds / 3600:.3f} h of audio in {wall:.1f} s: real-time factor "
          f"{wall / seconds if seconds else 0:.3f}" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
