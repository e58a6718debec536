"""Whole recordings decoded (long-form): cut at speech by the VAD (lib.vad), each span decoded as a segment is, in
batches, with the no-speech gate and the temperature fallback; or, with the VAD off, by the family's own long-form
decoding (`decode_long`: Whisper's sequential 30 s windows, one pass for the E2E model), or consecutive windows of
the model's length where the backend has none (ctranslate2). Either way the output is timed pieces of text, with
the scores the family gives, so that words written where nobody speaks can be counted (`words_in_pauses`) and
lib.transcribe can write subtitles.
"""
from __future__ import annotations

import numpy as np

from lib import families, tasks, vad
from lib.audio import SAMPLE_RATE

SPEECH_SHARE = 0.1  # a piece less than this much over speech was written in a pause
HOW = "cut at speech by Silero VAD, each span decoded as a segment"  # as the metrics file records it


def decode(family: families.Family, bundle: families.Bundle, waves: list[np.ndarray],
           options: list[tasks.DecodingOptions], use_vad: bool = True) -> dict[str, list[list[tasks.Piece]]]:
    """Task -> each recording's pieces of text, in time order: with `use_vad`, one piece per span of speech the VAD
    finds (gated and decoded as 05 decodes segments, longest first); without, the family's `decode_long` where its
    backend has one, else one piece per window of `span_seconds` (`windows`)."""
    longest = family.span_seconds(bundle)
    if not use_vad and family.decodes_long(bundle):
        return family.decode_long(bundle, waves, options)
    cut = vad.speech_spans if use_vad else windows
    spans = [(k, start, end) for k, wave in enumerate(waves) for start, end in cut(wave, longest)]
    return decode_spans(family, bundle, waves, spans, options)


def windows(wave: np.ndarray, seconds: float) -> list[tuple[float, float]]:
    """A recording cut into consecutive stretches of `seconds` (the last one shorter), without listening to it."""
    length = len(wave) / SAMPLE_RATE
    return [(float(start), float(min(start + seconds, length))) for start in np.arange(0.0, length, seconds)]


def decode_spans(family: families.Family, bundle: families.Bundle, waves: list[np.ndarray],
                 spans: list[tuple[int, float, float]], options: list[tasks.DecodingOptions]) -> dict:
    """Task -> each recording's pieces: every span (recording index, start, end in seconds) decoded as a segment,
    longest first in batches, gated, with the scores the family gives."""
    cut = [waves[k][int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] for k, start, end in spans]
    order = [int(i) for i in np.argsort([-len(c) for c in cut], kind="stable")]
    pieces: dict[str, list[list[tasks.Piece]]] = {o.task: [[] for _ in waves] for o in options}
    size = options[0].batch_size
    for first in range(0, len(order), size):
        batch = order[first:first + size]
        grown = family.room_for(bundle, options, len(cut[batch[0]]) / SAMPLE_RATE)
        decoded = family.decode_scored(bundle, [family.audio_input(bundle, cut[i]) for i in batch], grown)
        for o in grown:
            found = decoded[o.task]
            for j, (i, text) in enumerate(zip(batch, found.gated(o))):
                k, start, end = spans[i]
                scores = (round(found.no_speech_prob[j], 4), round(found.avg_logprob[j], 3)) \
                    if found.no_speech_prob is not None else (None, None)
                pieces[o.task][k].append(tasks.Piece(round(start, 2), round(end, 2), text, *scores))
    for recordings in pieces.values():
        for recording in recordings:
            recording.sort(key=lambda p: p.start)
    return pieces


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
