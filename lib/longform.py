"""Whole recordings decoded (long-form), one code path for every backend: the VAD (lib.vad) finds the speech, its
stretches are merged into chunks up to the model's window (30 s for Whisper, the decoder's limit for E2E), each
chunk is decoded with timestamps where the family writes them (Whisper: transformers, or ctranslate2, which has no
seek loop of its own), in batches, with the no-speech gate and the temperature fallback, and the times are mapped
back to the recording. With the VAD off: the family's own long-form decoding (`decode_long`: Whisper's sequential
30 s windows, one pass for the E2E model), or consecutive windows of the model's length where the backend has none
(ctranslate2). Either way the output is timed pieces of text with the scores the family gives, so that words
written where nobody speaks can be counted (`words_in_pauses`) and lib.transcribe can write subtitles.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lib import families, tasks, vad
from lib.audio import SAMPLE_RATE

TIME_SLACK = 0.5  # s a timestamp may run past its input (Whisper's last one often names the padded frame)
SPEECH_SHARE = 0.1  # a piece less than this much over speech was written in a pause
HOW = "Silero VAD's speech merged into chunks up to the model's window, each decoded with timestamps"  # metrics


def decode(family: families.Family, bundle: families.Bundle, waves: list[np.ndarray],
           options: list[tasks.DecodingOptions], use_vad: bool = True) -> dict[str, list[list[tasks.Piece]]]:
    """Task -> each recording's pieces of text, in time order: with `use_vad`, the VAD's speech merged into chunks
    (`speech_chunks`), each decoded with timestamps (`decode_spans`); without, the family's `decode_long` where its
    backend has one, else consecutive windows of `span_seconds` (`windows`)."""
    longest = family.span_seconds(bundle)
    if not use_vad and family.decodes_long(bundle):
        return family.decode_long(bundle, waves, options)
    cut = speech_chunks if use_vad else windows
    spans = [(k, start, end) for k, wave in enumerate(waves) for start, end in cut(wave, longest)]
    return decode_spans(family, bundle, waves, spans, options)


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


def windows(wave: np.ndarray, seconds: float) -> list[tuple[float, float]]:
    """A recording cut into consecutive stretches of `seconds` (the last one shorter), without listening to it."""
    length = len(wave) / SAMPLE_RATE
    return [(float(start), float(min(start + seconds, length))) for start in np.arange(0.0, length, seconds)]


def decode_spans(family: families.Family, bundle: families.Bundle, waves: list[np.ndarray],
                 spans: list[tuple[int, float, float]], options: list[tasks.DecodingOptions]) -> dict:
    """Task -> each recording's pieces: every span (recording index, start, end in seconds) decoded as a segment with
    timestamps asked for, longest first in batches, gated, with the scores the family gives. A span's timed stretches
    become pieces at their times in the recording (clipped to the span); a family without timestamps, a gated
    output, or times out of order (`in_order`) give one piece for the span."""
    cut = [waves[k][int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] for k, start, end in spans]
    order = [int(i) for i in np.argsort([-len(c) for c in cut], kind="stable")]
    pieces: dict[str, list[list[tasks.Piece]]] = {o.task: [[] for _ in waves] for o in options}
    timed_options = [dataclasses.replace(o, timestamps=True) for o in options]
    size = options[0].batch_size
    for first in range(0, len(order), size):
        batch = order[first:first + size]
        grown = family.room_for(bundle, timed_options, len(cut[batch[0]]) / SAMPLE_RATE)
        decoded = family.decode_scored(bundle, [family.audio_input(bundle, cut[i]) for i in batch], grown)
        for o in grown:
            found = decoded[o.task]
            for j, (i, text) in enumerate(zip(batch, found.gated(o))):
                k, start, end = spans[i]
                scores = (round(found.no_speech_prob[j], 4), round(found.avg_logprob[j], 3)) \
                    if found.no_speech_prob is not None else (None, None)
                stretches = found.timed[j] if found.timed is not None and text else None
                if not stretches or not in_order(stretches, end - start):
                    stretches = [(0.0, None, text)]
                pieces[o.task][k] += [tasks.Piece(round(min(start + a, end), 2),
                                                  round(end if b is None else min(start + max(a, b), end), 2), said,
                                                  *scores) for a, b, said in stretches]
    for recordings in pieces.values():
        for recording in recordings:
            recording.sort(key=lambda p: p.start)
    return pieces


def in_order(stretches: list[tuple[float, float | None, str]], seconds: float) -> bool:
    """Whether timed stretches (start, end or None for the input's end, text) follow each other inside an input of
    `seconds` (TIME_SLACK past its end allowed): a model that has not learned timestamps writes them anywhere."""
    times = [(a, seconds if b is None else b) for a, b, _ in stretches]
    return all(0 <= a < b <= seconds + TIME_SLACK for a, b in times) and \
        all(b <= a for (_, b), (a, _) in zip(times, times[1:]))


def text(pieces: list[tasks.Piece]) -> str:
    """A recording's text: its pieces' texts in order."""
    return " ".join(" ".join(p.text.split()) for p in pieces if p.text.strip())


def words_in_pauses(pieces: list[tasks.Piece], speech: list[tuple[float, float]]) -> int:
    """Words of the pieces that barely overlap `speech` (start, end): under SPEECH_SHARE of a piece. A piece's times
    are the decoder's (Whisper's timestamps) or the VAD's, and may spill into a pause beside speech: only text with
    no speech under it counts as written in a pause."""
    found = 0
    for piece in pieces:
        heard = sum(max(0.0, min(piece.end, end) - max(piece.start, start)) for start, end in speech)
        if heard < SPEECH_SHARE * (piece.end - piece.start):
            found += len(piece.text.split())
    return found
