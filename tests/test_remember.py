import dataclasses

import numpy as np
import torch

from lib import decoding, remember


class _Counting(decoding.Decoder):
    """Writes each input's mean as text, with a no-speech probability and timed stretches; counts its encodes."""

    window, input_limit, max_tokens = 30.0, 30.0, 448

    def __init__(self):
        self.encodes = 0

    def input(self, wave):
        return wave

    def encode(self, inputs):
        self.encodes += 1
        return inputs

    def rows(self, encoded, rows):
        return [encoded[i] for i in rows]

    def generate(self, encoded, options, temperature):
        return [decoding.Output(f"{x.mean():.3f}", [1, 2], np.float32(0.25), -0.5, [(0.0, None, "x")])
                for x in encoded]


def test_a_starting_models_decode_is_read_back_only_for_the_same_model_inputs_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("VI_EN_CS_DECODES", str(tmp_path))
    options = [decoding.DecodingOptions(task=t, max_length=16, batch_size=2, temperatures=())
               for t in ("transcribe", "translate")]
    inputs = [np.full(4, v, dtype=np.float32) for v in (0.1, 0.2, 0.3)]
    decoder = _Counting()
    first = remember.decode("model-a", decoder, inputs, [1.0, 2.0, 3.0], options)
    again = remember.decode("model-a", decoder, inputs, [1.0, 2.0, 3.0], options)
    assert (first.reused, again.reused, decoder.encodes) == (False, True, 2)  # two batches, decoded once
    assert again.outputs == first.outputs and again.seconds == first.seconds
    assert again.outputs["translate"][2] == decoding.Output("0.300", [1, 2], 0.25, -0.5, [(0.0, None, "x")])
    for changed in (("model-b", inputs, options), ("model-a", [*inputs[:2], inputs[2] + 1], options),
                    ("model-a", inputs, [dataclasses.replace(o, max_length=17) for o in options])):
        identity, waves, settings = changed
        assert not remember.decode(identity, decoder, waves, [1.0, 2.0, 3.0], settings).reused
    assert not remember.decode(None, decoder, inputs, [1.0, 2.0, 3.0], options).reused  # no identity: no reuse
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_a_models_identity_follows_its_weights_and_runtime():
    model = torch.nn.Linear(3, 2)
    runtime = {"runtime": "transformers", "dtype": "float32"}
    first = remember.model_identity(model, runtime)
    assert remember.model_identity(model, runtime) == first
    assert remember.model_identity(model, {**runtime, "dtype": "bfloat16"}) != first
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert remember.model_identity(model, runtime) != first
