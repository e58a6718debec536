"""Augmentation in training (lib.augment): speed perturbation, additive noise, SpecAugment, another voice, a room, a
band limit and a codec, each measured on a signal and seen changing what the encoder reads in a real training step
with a shared encoder pass."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import demo_slice
from lib import augment, config, families, nonspeech, split, train
from lib.audio import SAMPLE_RATE
from lib.families import base as families_base

PIECES = {"speed": {"speed_perturbation": 0.1}, "noise": {"additive_noise": 1.0}, "spec": {"spec_augment": 0.2},
          "voice": {"voice_perturbation": 1.0}, "room": {"reverb": 1.0}, "band": {"band_limit": 1.0},
          "codec": {"codec": 1.0}}
TONE = np.sin(2 * np.pi * 440 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.3


def peak_hz(wave: np.ndarray) -> float:
    return np.argmax(np.abs(np.fft.rfft(wave))) * SAMPLE_RATE / len(wave)


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


def test_another_voice_moves_the_pitch_by_up_to_five_semitones_and_the_rate_within_the_window():
    augmentation = augment.WaveAugmentation(voice_perturbation=1.0)
    rates, ratios = [], []
    for seed in range(12):
        out, rate = augmentation(TONE, np.random.default_rng(seed), longest=int(2.2 * SAMPLE_RATE))
        rates.append(rate)
        ratios.append(peak_hz(out) / 440)
        assert out.dtype == np.float32 and len(out) <= 2.2 * SAMPLE_RATE
        assert abs(len(out) - len(TONE) / rate) <= 0.01 * SAMPLE_RATE  # the rate, pitch apart
    low, high = augment.VOICE_RATE
    assert all(2 / 2.2 - 1e-6 <= r <= high for r in rates) and max(rates) - min(rates) > 0.1  # never past the window
    semitones = 12 * np.log2(ratios)
    assert all(abs(st) <= augment.VOICE_SEMITONES + 0.5 for st in semitones) and np.ptp(semitones) > 2


def test_a_room_keeps_length_and_level_and_spreads_the_sound_over_time():
    rooms = augment.rooms(4, seed=0)
    assert len(rooms) == 4 and all(0.1 * SAMPLE_RATE < len(r) < 1.5 * SAMPLE_RATE for r in rooms)
    click = np.zeros(SAMPLE_RATE, np.float32)
    click[1000] = 0.5
    out = augment.WaveAugmentation(reverb=1.0, rooms=rooms).in_room(click, np.random.default_rng(0))
    assert len(out) == len(click) and np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(click ** 2)),
                                                                                     rel=1e-3)
    energy = np.cumsum(out.astype(np.float64) ** 2) / np.sum(out.astype(np.float64) ** 2)
    assert np.searchsorted(energy, 0.9) > 1000 + 0.02 * SAMPLE_RATE  # a tail, not one click
    with pytest.raises(ValueError, match="room impulse responses"):
        augment.WaveAugmentation(reverb=0.5)


def test_a_band_limit_removes_what_lies_outside_the_band():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    out = augment.band_passed(noise, 300.0, 3400.0)
    spectrum, frequencies = np.abs(np.fft.rfft(out)) ** 2, np.fft.rfftfreq(len(out), 1 / SAMPLE_RATE)
    inside = spectrum[(frequencies > 500) & (frequencies < 3000)].mean()
    assert spectrum[frequencies > 6000].mean() < 1e-3 * inside and spectrum[frequencies < 80].mean() < 1e-2 * inside


@pytest.mark.parametrize("codec", augment.CODECS)
def test_a_codec_keeps_length_and_changes_the_signal_a_little(codec):
    speech = np.sin(2 * np.pi * 300 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.3
    out = augment.compressed(speech, codec, 0.8)
    assert out.dtype == np.float32 and len(out) == len(speech) and not np.array_equal(out, speech)
    assert abs(peak_hz(out) - 300) < 5  # GSM at 8 kHz too: resampled there and back


def test_the_params_make_the_augmentation_only_when_a_piece_is_on():
    params = config.load("params/demo.yaml")
    off = {key: 0 for key in augment.KEYS}
    assert augment.for_training(replace(params.whisper, **off), [], seed=1) is None
    made = augment.for_training(replace(params.whisper, **off | {"reverb": 0.5, "codec": 0.2}), [], seed=1)
    assert (made.reverb, made.codec, len(made.rooms)) == (0.5, 0.2, augment.ROOMS)


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
                            "pack_seconds": 0, "ct2_parity": [], "ct2_evaluate": ""},
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
        elif piece in ("noise", "room", "band", "codec"):
            assert seen.shape == plain.shape and not torch.equal(seen, plain)
        elif piece == "voice":  # another rate: other lengths, as with speed
            assert seen.shape != plain.shape or not torch.equal(seen, plain)
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

    pieces = {"speed_perturbation": 0.1, "additive_noise": 0.5, "spec_augment": 0.05, "voice_perturbation": 0.5,
              "reverb": 0.5, "band_limit": 0.5, "codec": 0.5}
    params = tiny_run(tmp_path, pack_seconds=6, timestamp_share=0.5, checkpoint_steps=100, nonspeech_share=0.2,
                      **pieces)
    family, hp = families.get("whisper"), params.whisper
    bundle = family.starting_model(hp, params.paths, params.seed)
    dataset, examples, _ = family.training_data(hp, params.paths, bundle, params.seed)
    assert family.training_column(hp) == "waveform" and "input_features" not in dataset.column_names
    assert max(dataset["duration"]) <= 6 * 0.9 + 1e-6  # packed to fit the window at the slowest speed
    assert any(i.startswith("nonspeech-") for i in dataset["id"])
    summary = train.train(params, "whisper")
    assert summary["global_step"] > 0 and summary["examples"]["train"] == len(examples)
    assert summary["augmentation"] == pieces
