"""lib.decoding: the options and their checks, the fallback and the gate, and the driver (batching, ordering,
windows), on a scripted decoder whose every output is known; the real decoders run through the same driver in
test_whisper, test_ct2, test_e2e, test_longform and the families' conformance test."""
import dataclasses

import numpy as np
import pytest

from lib import decoding
from lib.decoding import DecodingOptions, Output

LOOP = "la " * 30


class Scripted(decoding.Decoder):
    """A decoder whose inputs are their own outputs: an input is a dict of temperature -> Output (0.0 at least), or
    a function of the window it is given (for long-form). It records each batch it encodes and each call."""

    max_tokens = 448

    def __init__(self, window=30.0, input_limit=30.0):
        self.window, self.input_limit = window, input_limit
        self.batches, self.calls = [], []

    def input(self, wave):
        return wave

    def encode(self, inputs):
        self.batches.append(list(inputs))
        return list(inputs)

    def rows(self, encoded, rows):
        return [encoded[i] for i in rows]

    def generate(self, encoded, options, temperature):
        self.calls.append((options.task, temperature, options.max_length, len(encoded)))
        return [dataclasses.replace(item[temperature] if isinstance(item, dict) else item(options)) for item in encoded]


def output(text, no_speech=0.1, logprob=-0.2, timed=None):
    return Output(text, [], no_speech, logprob, timed)


def test_options_are_keyword_only_and_checked_naming_each_problem():
    with pytest.raises(TypeError):
        DecodingOptions("transcribe", 1, 16, 4)  # positional: which was the beam width?
    with pytest.raises(decoding.DecodingError) as err:
        DecodingOptions(task="summarize", num_beams=0, no_speech_threshold=1.5, logprob_threshold=0.5,
                        temperatures=(0.6, 0.2), language="fr")
    for name in ("task", "num_beams", "no_speech_threshold", "logprob_threshold", "temperatures", "language"):
        assert f"{name}:" in str(err.value)
    with pytest.raises(decoding.DecodingError, match=r"beam_size \(did you mean num_beams\?\)"):
        DecodingOptions.from_settings("transcribe", {"beam_size": 5})  # a typo is an error, not greedy decoding
    chosen = DecodingOptions.from_settings("translate", {"num_beams": 5, "fallback_temperatures": [0.5]}, "en")
    assert (chosen.num_beams, chosen.temperatures, chosen.language) == (5, (0.5,), "en")
    assert DecodingOptions.from_settings("translate", chosen.settings(), "en") == chosen


def test_the_settings_saved_with_a_model_come_back(tmp_path):
    options = DecodingOptions(task="transcribe", num_beams=4, no_speech_threshold=0.5, temperatures=(0.4,))
    decoding.save_settings(tmp_path, options)
    saved = decoding.saved_settings(tmp_path)
    assert saved["num_beams"] == 4 and saved["fallback_temperatures"] == [0.4]
    assert DecodingOptions.from_settings("transcribe", saved) == options
    assert decoding.saved_settings(tmp_path / "elsewhere") == {} and decoding.saved_settings("openai/whisper") == {}


def test_the_fallback_samples_loops_and_unsure_outputs_again_and_leaves_silence_to_the_gate():
    inputs = [{0.0: output(LOOP), 0.2: output(LOOP), 0.4: output("sampled at 0.4")},
              {0.0: output("a fine sentence")},
              {0.0: output(LOOP, no_speech=0.9, logprob=-1.5)},  # loops, but silence: the gate empties it
              {0.0: output("an unsure one", logprob=-1.5), 0.2: output("surer at 0.2", logprob=-0.5)}]
    decoder = Scripted()
    options = DecodingOptions(task="transcribe", temperatures=(0.2, 0.4, 0.6), retry_unsure=True)  # openai/whisper's
    found = decoding.decode(decoder, inputs, [1.0] * 4, [options])["transcribe"]
    assert [(temperature, rows) for _, temperature, _, rows in decoder.calls] == [(0.0, 4), (0.2, 2), (0.4, 1)]
    assert [o.text for o in found] == ["sampled at 0.4", "a fine sentence", LOOP, "surer at 0.2"]
    assert [o.temperature for o in found] == [0.4, 0.0, 0.0, 0.2]
    assert [o.retried for o in found] == [True, False, False, True]
    assert [o.gated(options) for o in found] == ["sampled at 0.4", "a fine sentence", "", "surer at 0.2"]
    loops_only = dataclasses.replace(options, retry_unsure=False)
    assert loops_only == DecodingOptions(task="transcribe", temperatures=(0.2, 0.4, 0.6))  # the lib's default
    assert decoding.decode(Scripted(), inputs, [1.0] * 4, [loops_only])["transcribe"][3].text == "an unsure one"
    plain = dataclasses.replace(options, temperatures=())
    assert decoding.decode(Scripted(), inputs, [1.0] * 4, [plain])["transcribe"][0].text == LOOP  # no fallback


def test_where_every_attempt_fails_the_most_confident_that_does_not_loop_stays():
    inputs = [{0.0: output(LOOP, logprob=-0.2), 0.5: output("ba " * 30, logprob=-0.1),
               1.0: output("no loop at 1.0", logprob=-1.8)},
              {0.0: output("ba " * 40, logprob=-0.4), 0.5: output("unsure at 0.5", logprob=-2.5),
               1.0: output("da " * 30, logprob=-0.3)}]
    options = DecodingOptions(task="transcribe", temperatures=(0.5, 1.0), retry_unsure=True)
    found = decoding.decode(Scripted(), inputs, [1.0, 1.0], [options])["transcribe"]
    assert [o.text for o in found] == ["no loop at 1.0", "unsure at 0.5"]
    assert [o.temperature for o in found] == [1.0, 0.5] and all(o.retried for o in found)
    every = [{0.0: output(LOOP, logprob=-0.2), 0.5: output("ba " * 30, logprob=-0.1), 1.0: output(LOOP, logprob=-1)}]
    assert decoding.decode(Scripted(), every, [1.0], [options])["transcribe"][0].text == "ba " * 30
    last = dataclasses.replace(options, keep_best=False)  # openai/whisper's choice: the last attempt
    found = decoding.decode(Scripted(), inputs, [1.0, 1.0], [last])["transcribe"]
    assert [(o.text, o.temperature) for o in found] == [("no loop at 1.0", 1.0), ("da " * 30, 1.0)]


def test_the_no_speech_probability_is_the_first_decodes():
    inputs = [{0.0: output(LOOP, no_speech=0.3), 0.2: output("fine", no_speech=0.99)}]
    found = decoding.decode(Scripted(), inputs, [1.0], [DecodingOptions(task="translate")])["translate"]
    assert found[0].text == "fine" and found[0].no_speech_prob == 0.3


def test_the_driver_decodes_longest_first_in_batches_one_encoder_pass_for_every_task():
    texts = [f"input {i}" for i in range(7)]
    inputs = [{0.0: output(t)} for t in texts]
    seconds = [3.0, 9.0, 1.0, 7.0, 5.0, 2.0, 8.0]
    decoder = Scripted()
    options = [DecodingOptions(task=t, batch_size=3) for t in ("transcribe", "translate")]
    found = decoding.decode(decoder, inputs, seconds, options)
    assert [[o.text for o in found[t]] for t in ("transcribe", "translate")] == [texts, texts]  # input order back
    order = [[texts.index(item[0.0].text) for item in batch] for batch in decoder.batches]
    assert order == [[1, 6, 3], [4, 0, 5], [2]]  # longest first, three to a batch, each encoded once
    assert [call[:2] for call in decoder.calls] == [(t, 0.0) for _ in range(3) for t in ("transcribe", "translate")]
    with pytest.raises(decoding.DecodingError, match="share one batch size"):
        decoding.decode(decoder, inputs, seconds, [options[0], dataclasses.replace(options[1], batch_size=4)])


def test_no_input_is_cut_silently_and_long_form_text_gets_room():
    decoder = Scripted(window=30.0, input_limit=30.0)
    with pytest.raises(decoding.DecodingError, match=r"input 1 holds 42.0 s of audio, over the 30 s the model reads"):
        decoding.decode(decoder, [{0.0: output("a")}, {0.0: output("b")}], [3.0, 42.0],
                        [DecodingOptions(task="transcribe")])
    inputs = [{0.0: output("a")}, {0.0: output("b")}]
    decoding.decode(decoder, inputs, [25.0, 2.0], [DecodingOptions(task="transcribe", max_length=48, batch_size=1)],
                    grow=True)
    assert [length for *_, length, _ in decoder.calls] == [300, 48]  # 12 tokens a second of the batch's longest


def test_long_form_decodes_window_by_window_from_the_last_complete_stretch():
    """A 70 s recording, 30 s windows: the first window's output ends with text past its last timestamp (cut off by
    the window's end), so the next window starts at that timestamp; the second is gated (silence): skipped whole."""
    seen = []

    def heard(options):
        start = len(seen)
        seen.append(start)
        if start == 0:
            return output("one two", timed=[(0.0, 10.0, "one"), (10.0, 24.0, "two"), (24.0, None, "thr")])
        if start == 1:
            return output("", no_speech=0.9, logprob=-2.0)
        return output("four", timed=[(1.0, 5.0, "four")])

    class Recording(Scripted):
        def input(self, wave):
            return lambda options: heard(options)

    decoder = Recording()
    found = decoding.decode_long(decoder, [np.zeros(70 * 16_000, np.float32)],
                                 [DecodingOptions(task="transcribe", temperatures=())])
    assert [(start, end, text) for start, end, _, text in found["transcribe"][0]] == [
        (0.0, 10.0, "one"), (10.0, 24.0, "two"), (55.0, 59.0, "four")]  # windows at 0, 24 (gated) and 54 s
    no_timestamps = Scripted(window=20.0, input_limit=None)  # as the E2E model: consecutive windows
    no_timestamps.input = lambda wave: (lambda options: output(f"{len(wave) / 16_000:.0f} s"))
    found = decoding.decode_long(no_timestamps, [np.zeros(50 * 16_000, np.float32)],
                                 [DecodingOptions(task="translate")])
    assert [(start, end, text) for start, end, _, text in found["translate"][0]] == [
        (0.0, 20.0, "20 s"), (20.0, 40.0, "20 s"), (40.0, 50.0, "10 s")]
