"""Augmentation in training (lib.augment): speed perturbation, additive noise and SpecAugment, each seen changing what
the encoder reads in a real training step with a shared encoder pass."""
import numpy as np
import pytest
import torch

from conftest import demo_slice
from lib import augment, config, families, nonspeech, split, train
from lib.audio import SAMPLE_RATE
from lib.families import base as families_base

PIECES = {"speed": {"speed_perturbation": 0.1}, "noise": {"additive_noise": 1.0}, "spec": {"spec_augment": 0.2}}


def test_speed_perturbation_resamples_to_each_factor_and_keeps_within_the_window():
    wave = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    augmentation = augment.WaveAugmentation(speed_perturbation=0.1)
    played = {}
    for seed in range(30):
        out, factor = augmentation(wave, np.random.default_rng(seed))
        played[factor] = out
    assert set(played) == {0.9, 1.0, 1.1}
    for factor, out in played.items():  # sox's `speed`: shorter and higher, or longer and lower, by the factor
        assert out.dtype == np.float32 and abs(len(out) - SAMPLE_RATE / factor) <= 1
        peak = np.argmax(np.abs(np.fft.rfft(out))) * SAMPLE_RATE / len(out)
        assert abs(peak - 440 * factor) < 2
    fitting = {augmentation(wave, np.random.default_rng(s), longest=SAMPLE_RATE)[1] for s in range(30)}
    assert fitting == {1.0, 1.1}  # slowing down would overrun the window
    assert augment.pack_seconds(30, 0.1) == 27.0 and augment.speed_factors(0) == (1.0,)


def test_additive_noise_mixes_at_a_snr_between_10_and_20_db():
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    noises = [nonspeech.generate("pink noise", 3.0, -40, rng)]
    augmentation = augment.WaveAugmentation(additive_noise=1.0, noises=noises)
    snrs = []
    for seed in range(20):
        mixed, factor = augmentation(speech, np.random.default_rng(seed))
        noise = mixed - speech
        snrs.append(10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2)))
        assert factor == 1.0 and len(mixed) == len(speech)
    assert all(10 - 1e-3 <= s <= 20 + 1e-3 for s in snrs) and max(snrs) - min(snrs) > 3
    with pytest.raises(ValueError, match="noise clips"):
        augment.WaveAugmentation(additive_noise=0.5)


def test_whisper_timestamps_scale_with_the_speed(tiny_whisper):
    family = families.get("whisper")
    first = tiny_whisper.tokenizer.convert_tokens_to_ids("<|0.00|>")
    item = {"task_labels": [[1, 2, first + 100, 7, first + 150, 3]], "task_prefixes": [0]}
    assert family.retimed(tiny_whisper, item, 1.1)["task_labels"] == [[1, 2, first + 91, 7, first + 136, 3]]
    assert family.retimed(tiny_whisper, {"labels": [first + 90]}, 0.9)["labels"] == [first + 100]


class Captured(Exception):
    """The first training forward's encoder input, caught as it went in."""

    def __init__(self, value):
        super().__init__("captured")
        self.value = value


def first_encoder_input(tmp_path, monkeypatch, name: str, keys: dict) -> torch.Tensor:
    """What the encoder (wav2vec2's transformer stack for E2E, where its SpecAugment acts) reads in the first
    training step of a tiny run on two segments per demo speaker, share_encoder on."""
    out = tmp_path / "out"
    sections = {"whisper": {"model": str(out / "models" / "whisper-demo"), "import_from": "", "build_tiny": True,
                            "pack_seconds": 0, "ct2_parity": []},
                "e2e": {"encoder": str(out / "models" / "wav2vec2-demo"),
                        "decoder": str(out / "models" / "mbart-demo")}}
    section = {**sections[name], "batch_size": 4, "epochs": 1, "checkpoint_steps": 100, "eval_segments": 2,
               "max_length": 8, "share_encoder": True, "nonspeech_share": 0, "resume": False, **keys}
    params = config.load("params/demo.yaml", {"manifest": str(demo_slice(tmp_path / "corpus", per_speaker=1)),
                                              "output_dir": str(out), name: section})
    split.run(params)
    share = families_base.share_encoder

    def share_and_watch(family, bundle):
        encoder = family.encoder(bundle.model)
        watched = encoder.encoder if name == "e2e" else encoder

        def catch(module, args, kwargs):
            if module.training:
                raise Captured((args[0] if args else next(iter(kwargs.values()))).detach().clone())

        watched.register_forward_pre_hook(catch, with_kwargs=True)
        return share(family, bundle)

    monkeypatch.setattr(families, "share_encoder", share_and_watch)
    with pytest.raises(Captured) as caught:
        train.train(params, name)
    return caught.value.value


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper", "e2e"])
def test_each_piece_changes_what_the_encoder_reads_in_a_training_step(tmp_path, monkeypatch, name):
    plain = first_encoder_input(tmp_path / "plain", monkeypatch, name, {})
    for piece, keys in PIECES.items():
        seen = first_encoder_input(tmp_path / piece, monkeypatch, name, keys)
        if piece == "speed":  # other lengths: the padded batch's, or where the speech ends in Whisper's window
            assert seen.shape != plain.shape or not torch.equal(seen, plain)
            if name == "whisper":
                def padding(x):  # frames equal to the row's last (padding) frame
                    return (x == x[:, :, -1:]).all(dim=1).sum(dim=1)

                assert seen.shape == plain.shape and not torch.equal(padding(seen), padding(plain))
        elif piece == "noise":
            assert seen.shape == plain.shape and not torch.equal(seen, plain)
        elif name == "whisper":  # SpecAugment: whole frames and mel bins zeroed, the rest untouched
            masked = (seen == 0).all(dim=1, keepdim=True) | (seen == 0).all(dim=2, keepdim=True)
            assert masked.any() and not ((plain == 0).all(dim=1).any())
            assert torch.equal(seen[~masked.expand_as(seen)], plain[~masked.expand_as(plain)])
        else:  # wav2vec2's SpecAugment, on its projected features: time steps masked, channels zeroed throughout
            assert seen.shape == plain.shape and not torch.equal(seen, plain)
            assert (seen == 0).all(dim=1).any() and not (plain == 0).all(dim=1).any()


@pytest.mark.slow
def test_packed_windows_with_non_speech_clips_train_from_waveforms_with_every_piece_on(tmp_path):
    from test_training_options import tiny_run

    params = tiny_run(tmp_path, pack_seconds=6, timestamp_share=0.5, checkpoint_steps=100, nonspeech_share=0.2,
                      speed_perturbation=0.1, additive_noise=0.5, spec_augment=0.05)
    family, hp = families.get("whisper"), params.whisper
    bundle = family.starting_model(hp, params.paths, params.seed)
    dataset, examples, _ = family.training_data(hp, params.paths, bundle, params.seed)
    assert family.training_column(hp) == "waveform" and "input_features" not in dataset.column_names
    assert max(dataset["duration"]) <= 6 * 0.9 + 1e-6  # packed to fit the window at the slowest speed
    assert any(i.startswith("nonspeech-") for i in dataset["id"])
    summary = train.train(params, "whisper")
    assert summary["global_step"] > 0 and summary["examples"]["train"] == len(examples)
    assert summary["augmentation"] == {"speed_perturbation": 0.1, "additive_noise": 0.5, "spec_augment": 0.05}
