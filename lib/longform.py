"""Whole recordings decoded (long-form), one code path for every decoder (lib.decoding): the VAD (lib.vad) finds the
speech, its stretches are merged into chunks up to the decoder's window (30 s for Whisper, what its decoder's
positions hold for E2E), each chunk is decoded with timestamps where the decoder writes them, with the no-speech gate
and the temperature fallback of every other path, and the times are mapped back to the recording. With the VAD off:
Whisper's sequential decoding, window by window (`decoding.decode_long`). Either way the output is timed pieces of
text with the scores the decoder gives, so that words written where nobody speaks can be counted
(`words_in_pauses`) and lib.transcribe can write subtitles.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lib import decoding, vad
from lib.audio import SAMPLE_RATE

SPEECH_SHARE = 0.1  # a piece less than this much over speech was written in a pause
HOW = {True: "Silero VAD's speech merged into chunks up to the model's window, each decoded with timestamps",
       False: "sequential windows of the model's length, each starting where the last complete timestamped stretch "
              "of the one before ends"}  # what the metrics record, with the VAD and without


@dataclass
class Piece:
    """Text a model wrote for a stretch of a whole recording (seconds from its start); with the no-speech
    probability and average log-probability of its decode where the decoder gives them."""

    start: float
    end: float
    text: str
    no_speech_prob: float | None = None
    avg_logprob: float | None = None


def decode(decoder: decoding.Decoder, waves: list[np.ndarray], options: list[decoding.DecodingOptions],
           use_vad: bool = True) -> dict[str, list[list[Piece]]]:
    """Task -> each recording's pieces of text, in time order: with `use_vad`, the VAD's speech merged into chunks
    (`speech_chunks`), each decoded with timestamps (`decode_spans`); without, window by window
    (`decoding.decode_long`)."""
    if not use_vad:
        found = decoding.decode_long(decoder, waves, options)
        return {task: [[piece(start, end, output, text) for start, end, output, text in recording]
                       for recording in recordings] for task, recordings in found.items()}
    spans = [(k, start, end) for k, wave in enumerate(waves) for start, end in speech_chunks(wave, decoder.window)]
    return decode_spans(decoder, waves, spans, options)


def speech_chunks(wave: np.ndarray, seconds: float) -> list[tuple[float, float]]:
    """(start, end) of the recording's speech (lib.vad) in chunks of up to `seconds`."""
    return chunks(vad.speech_spans(wave, seconds), seconds)


def chunks(spans: list[tuple[float, float]], seconds: float) -> list[tuple[float, float]]:
    """Consecutive spans of speech merged, pauses between them included, into chunks of up to `seconds` (the model's
    window: more context for the decoder, fewer decodes); a span longer than that stays one chunk."""
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and end - merged[-1][0] <= seconds:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def decode_spans(decoder: decoding.Decoder, waves: list[np.ndarray], spans: list[tuple[int, float, float]],
                 options: list[decoding.DecodingOptions]) -> dict[str, list[list[Piece]]]:
    """Task -> each recording's pieces: every span (recording index, start, end in seconds) decoded as one input with
    timestamps asked for (`decoding.decode`, its text given room for the span's length). A span's trusted timed
    stretches (`decoding.stretches_of`) become pieces at their times in the recording, clipped to the span."""
    cut = [waves[k][int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] for k, start, end in spans]
    timed = [dataclasses.replace(o, timestamps=True) for o in options]
    found = decoding.decode(decoder, [decoder.input(c) for c in cut], [len(c) / SAMPLE_RATE for c in cut], timed,
                            grow=True)
    pieces: dict[str, list[list[Piece]]] = {o.task: [[] for _ in waves] for o in options}
    for o in timed:
        for (k, start, end), output in zip(spans, found[o.task]):
            pieces[o.task][k] += [piece(round(min(start + a, end), 2),
                                        round(end if b is None else min(start + max(a, b), end), 2), output, said)
                                  for a, b, said in decoding.stretches_of(output, o, end - start)]
    for recordings in pieces.values():
        for recording in recordings:
            recording.sort(key=lambda p: p.start)
    return pieces


def piece(start: float, end: float, output: decoding.Output, text: str) -> Piece:
    """A Piece of `text` from an output, with its scores where the decoder gives them."""
    scores = (round(output.no_speech_prob, 4), round(output.avg_logprob, 3)) \
        if output.no_speech_prob is not None else (None, None)
    return Piece(start, end, text, *scores)


def text(pieces: list[Piece]) -> str:
    """A recording's text: its pieces' texts in order."""
    return " ".join(" ".join(p.text.split()) for p in pieces if p.text.strip())


def words_in_pauses(pieces: list[Piece], speech: list[tuple[float, float]]) -> int:
    """Words of the pieces that barely overlap `speech` (start, end): under SPEECH_SHARE of a piece. A piece's times
    are the decoder's (Whisper's timestamps) or the VAD's, and may spill into a pause beside speech: only text with
    no speech under it counts as written in a pause."""
    found = 0
    for p in pieces:
        heard = sum(max(0.0, min(p.end, end) - max(p.start, start)) for start, end in speech)
        if heard < SPEECH_SHARE * (p.end - p.start):
            found += len(p.text.split())
    return found
