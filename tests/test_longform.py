"""Whole recordings: the VAD's spans, Whisper's temperature fallback, long-form pieces and the words written in
pauses."""
import numpy as np
import torch

from conftest import DEMO
from lib import decoding, evaluate, families, longform, manifest as manifest_io, nonspeech, packing, tasks, vad
from lib.audio import SAMPLE_RATE

def recording(count: int, pause=None):
    """The bundled demo corpus's first `count` segments (real speech) joined, with pauses of 2-10 s by default."""
    segments = manifest_io.read(DEMO / "manifest.tsv").segments[:count]
    return packing.join(segments, SAMPLE_RATE, pause or nonspeech.gap_filler("test", *evaluate.PAUSE_SECONDS))


def test_the_vad_finds_each_segment_and_nothing_in_the_pauses():
    threads = torch.get_num_threads()
    wave, starts, ends = recording(5)
    spans = vad.speech_spans(wave, 30.0)
    assert torch.get_num_threads() == threads  # silero's import sets one thread for the process: set back
    assert len(spans) == len(starts) == 5
    for (found_start, found_end), start, end in zip(spans, starts, ends):  # within the padding either side
        assert start - vad.SPEECH_PAD - 0.1 <= found_start <= start + 0.3
        assert end - 0.3 <= found_end <= end + vad.SPEECH_PAD + 0.1


def test_the_vad_hears_no_speech_in_noise_and_cuts_long_speech():
    rng = np.random.default_rng(0)
    for kind in ("silence", "white noise", "pink noise", "brown noise", "hum", "tone", "clicks", "breath", "chords",
                 "sweep"):
        for level in (-50.0, -20.0):
            assert vad.speech_spans(nonspeech.generate(kind, 12.0, level, rng), 30.0) == [], (kind, level)
    wave, starts, ends = recording(10, pause=lambda: np.zeros(SAMPLE_RATE // 2, np.float32))  # 0.5 s pauses: one span
    spans = vad.speech_spans(wave, 12.0)
    assert len(spans) >= 3 and all(end - start <= 12.0 for start, end in spans)
    assert spans[0][0] <= starts[0] + 0.3 and spans[-1][1] >= ends[-1] - 0.3


def test_words_in_pauses_count_only_text_with_no_speech_under_it():
    speech = [(0.0, 3.0), (8.0, 11.0)]
    pieces = [longform.Piece(0.0, 3.0, "một hai ba"), longform.Piece(3.5, 7.5, "made up words"),
              longform.Piece(6.0, 11.0, "spills into the pause"), longform.Piece(11.2, 14.0, "")]
    assert longform.words_in_pauses(pieces, speech) == 3
    assert longform.text(pieces) == "một hai ba made up words spills into the pause"


def test_speech_is_merged_into_chunks_up_to_the_window():
    spans = [(0.5, 3.0), (5.0, 9.5), (12.0, 45.0), (46.0, 47.0), (47.5, 50.0)]
    assert longform.chunks(spans, 10.0) == [(0.5, 9.5), (12.0, 45.0), (46.0, 50.0)]
    assert longform.chunks([], 10.0) == []


def test_long_form_gives_timed_pieces_with_the_vad_and_without(tiny_whisper):
    family = families.get("whisper")
    wave, starts, ends = recording(3)
    options = [decoding.DecodingOptions(task=t, max_length=20, batch_size=4, temperatures=()) for t in tasks.TASKS]
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    decoder = family.decoder(tiny_whisper)
    with_vad = longform.decode(decoder, [wave, silence], options, use_vad=True)
    assert decoder.window == 8.0  # the tiny model's window
    chunks = longform.speech_chunks(wave, 8.0)
    assert chunks == longform.chunks(vad.speech_spans(wave, 8.0), 8.0)
    for task in tasks.TASKS:
        pieces = with_vad[task][0]
        assert pieces and [p.start for p in pieces] == sorted(p.start for p in pieces)
        assert all(any(round(a, 2) <= p.start <= p.end <= round(b, 2) for a, b in chunks) for p in pieces)
        assert with_vad[task][1] == []  # silence: nothing to decode
    without = longform.decode(decoder, [wave], options, use_vad=False)  # window by window
    for task in tasks.TASKS:
        starts = [p.start for p in without[task][0]]
        assert starts == sorted(starts) and all(0 <= p.start <= p.end for p in without[task][0])


def test_timed_stretches_out_of_order_or_past_the_input_are_not_trusted():
    assert decoding.in_order([(0.0, 2.0, "a"), (2.0, 4.1, "b"), (4.5, None, "c")], 5.0)
    assert decoding.in_order([(0.0, 5.4, "a")], 5.0)  # a last timestamp just past the input (its padded frame)
    assert not decoding.in_order([(0.0, 2.0, "a"), (1.5, 3.0, "b")], 5.0)  # overlapping
    assert not decoding.in_order([(0.0, 8.7, "a"), (8.7, 8.7, "b")], 5.0)  # past the input, empty
    assert not decoding.in_order([(6.0, None, "a")], 5.0)
