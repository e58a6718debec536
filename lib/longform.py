"""Whole recordings decoded (long-form): cut at speech by the VAD (lib.vad), each span decoded as a segment is, in
batches, with the no-speech gate and the temperature fallback; or, with the VAD off, by the family's own long-form
decoding (`decode_long`: Whisper's sequential 30 s windows, one pass for the E2E model). Either way the output is
timed pieces of text, so that words written where nobody speaks can be counted (`words_in_pauses`).
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
    finds (gated and decoded as 05 decodes segments, longest first); without, the family's `decode_long`."""
    if not use_vad:
        return family.decode_long(bundle, waves, options)
    longest = family.span_seconds(bundle)
    spans = [(k, start, end) for k, wave in enumerate(waves) for start, end in vad.speech_spans(wave, longest)]
    cut = [waves[k][int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] for k, start, end in spans]
    order = [int(i) for i in np.argsort([-len(c) for c in cut], kind="stable")]
    pieces: dict[str, list[list[tasks.Piece]]] = {o.task: [[] for _ in waves] for o in options}
    size = options[0].batch_size
    for first in range(0, len(order), size):
        batch = order[first:first + size]
        decoded = family.decode(bundle, [family.audio_input(bundle, cut[i]) for i in batch],
                                family.room_for(bundle, options, len(cut[batch[0]]) / SAMPLE_RATE))
        for o in options:
            for i, found in zip(batch, decoded[o.task]):
                k, start, end = spans[i]
                pieces[o.task][k].append(tasks.Piece(round(start, 2), round(end, 2), found))
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
