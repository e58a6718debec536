"""Whole recordings: the VAD's spans, Whisper's temperature fallback, long-form pieces and the words written in
pauses."""
import numpy as np
import torch

from conftest import DEMO
from lib import evaluate, families, longform, manifest as manifest_io, nonspeech, packing, tasks, vad
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
    pieces = [tasks.Piece(0.0, 3.0, "một hai ba"), tasks.Piece(3.5, 7.5, "made up words"),
              tasks.Piece(6.0, 11.0, "spills into the pause"), tasks.Piece(11.2, 14.0, "")]
    assert longform.words_in_pauses(pieces, speech) == 3
    assert longform.text(pieces) == "một hai ba made up words spills into the pause"


def test_compression_ratio_tells_a_loop_from_a_sentence():
    assert tasks.compression_ratio("Trường này này này " * 12) > 2.4
    assert tasks.compression_ratio("Chiều nay em gửi report cho manager nhé") < 2.4
    assert tasks.compression_ratio("") == 0.0


def test_the_fallback_samples_again_until_an_output_stops_looping_and_leaves_silence_alone():
    loop = "la " * 30
    first = tasks.Decoded([loop, "a fine sentence", loop, "an unsure one", loop], [0.1, 0.1, 0.9, 0.1, 0.1],
                          [-0.1, -0.2, -1.5, -1.5, -0.1])
    calls = []

    def again(rows, temperature):
        calls.append((rows, temperature))
        return tasks.Decoded([f"sampled at {temperature}" if temperature >= 0.4 else loop for _ in rows], None,
                             [-0.3] * len(rows))

    options = tasks.DecodingOptions("transcribe", 1, 16, 4, 0.6, -1.0, 2.4, (0.2, 0.4, 0.6))
    found = tasks.with_fallback(first, again, options)
    assert calls == [([0, 4], 0.2), ([0, 4], 0.4)]  # row 2 loops but is silence: the gate empties it instead
    assert found.texts == ["sampled at 0.4", "a fine sentence", loop, "an unsure one", "sampled at 0.4"]
    assert found.temperature == [0.4, 0.0, 0.0, 0.0, 0.4] and found.avg_logprob == [-0.3, -0.2, -1.5, -1.5, -0.3]
    assert found.retried == [True, False, False, False, True]
    assert found.no_speech_prob == [0.1, 0.1, 0.9, 0.1, 0.1]  # read before any token: the first decode's
    assert tasks.with_fallback(tasks.Decoded([loop]), again, tasks.DecodingOptions("translate", 1, 16, 4)).texts == [
        loop]  # no temperatures: no fallback


def test_where_every_attempt_loops_the_most_confident_that_does_not_stays():
    loop = "la " * 30
    first = tasks.Decoded([loop, "ba " * 40], [0.1, 0.1], [-0.2, -0.4])
    sampled = {0.5: (["ba " * 30, "no loop at 0.5"], [-0.1, -2.5]), 1.0: (["no loop at 1.0", "da " * 30],
                                                                           [-1.8, -0.3])}

    def again(rows, temperature):
        texts, logprobs = sampled[temperature]
        return tasks.Decoded([texts[i] for i in rows], None, [logprobs[i] for i in rows])

    options = tasks.DecodingOptions("transcribe", 1, 16, 4, 0.6, -1.0, 2.4, (0.5, 1.0))
    found = tasks.with_fallback(first, again, options)
    assert found.texts == ["no loop at 1.0", "no loop at 0.5"]  # row 1 passed at 0.5 and was not decoded again
    first = tasks.Decoded([loop], [0.1], [-0.2])
    found = tasks.with_fallback(first, lambda rows, t: tasks.Decoded(["ba " * 30], None, [-0.1]), options)
    assert found.texts == ["ba " * 30] and found.temperature == [0.5]  # every attempt loops: the most confident
    assert found.retried == [True]


def test_speech_is_merged_into_chunks_up_to_the_window():
    spans = [(0.5, 3.0), (5.0, 9.5), (12.0, 45.0), (46.0, 47.0), (47.5, 50.0)]
    assert longform.chunks(spans, 10.0) == [(0.5, 9.5), (12.0, 45.0), (46.0, 50.0)]
    assert longform.chunks([], 10.0) == []


def test_long_form_gives_timed_pieces_with_the_vad_and_without(tiny_whisper):
    family = families.get("whisper")
    wave, starts, ends = recording(3)
    options = [tasks.DecodingOptions(t, 1, 20, 4) for t in tasks.TASKS]
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    with_vad = longform.decode(family, tiny_whisper, [wave, silence], options, use_vad=True)
    assert family.span_seconds(tiny_whisper) == 8.0  # the tiny model's window
    chunks = longform.speech_chunks(wave, 8.0)
    assert chunks == longform.chunks(vad.speech_spans(wave, 8.0), 8.0)
    for task in tasks.TASKS:
        pieces = with_vad[task][0]
        assert pieces and [p.start for p in pieces] == sorted(p.start for p in pieces)
        assert all(any(round(a, 2) <= p.start <= p.end <= round(b, 2) for a, b in chunks) for p in pieces)
        assert with_vad[task][1] == []  # silence: nothing to decode
    without = longform.decode(family, tiny_whisper, [wave], options, use_vad=False)  # transformers' timestamps
    for task in tasks.TASKS:
        starts = [p.start for p in without[task][0]]
        assert starts == sorted(starts) and all(0 <= p.start <= p.end for p in without[task][0])


def test_timed_stretches_out_of_order_or_past_the_input_are_not_trusted():
    assert longform.in_order([(0.0, 2.0, "a"), (2.0, 4.1, "b"), (4.5, None, "c")], 5.0)
    assert longform.in_order([(0.0, 5.4, "a")], 5.0)  # a last timestamp just past the input (its padded frame)
    assert not longform.in_order([(0.0, 2.0, "a"), (1.5, 3.0, "b")], 5.0)  # overlapping
    assert not longform.in_order([(0.0, 8.7, "a"), (8.7, 8.7, "b")], 5.0)  # past the input, empty
    assert not longform.in_order([(6.0, None, "a")], 5.0)
