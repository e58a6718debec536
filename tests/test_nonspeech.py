"""Non-speech clips (lib.nonspeech) and how training uses them: the no-speech targets of each family, the prefix that is
read but not learned, the clips as training rows, and noisy pauses in packed windows."""
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import demo_slice
from lib import config, families, nonspeech, split, tasks


def test_clips_have_their_kind_level_and_length():
    rng = np.random.default_rng(0)
    speech = [np.sin(np.arange(8000) / (5 + i)).astype(np.float32) for i in range(3)]
    for kind in nonspeech.TRAINING_KINDS + nonspeech.HELD_OUT_KINDS:
        wave = nonspeech.generate(kind, 2.5, -30.0, rng, babble=speech)
        assert wave.dtype == np.float32 and len(wave) == 40_000 and np.isfinite(wave).all()
        assert nonspeech.rms_db(wave) == pytest.approx(-30.0, abs=0.5), kind
    assert not nonspeech.generate("silence", 1.0, nonspeech.SILENCE_DB - 10, rng).any()  # digital zero
    with pytest.raises(ValueError, match="babble needs speech to mix"):
        nonspeech.generate("babble", 1.0, -30.0, rng)
    with pytest.raises(ValueError, match="non-speech kind: expected one of"):
        nonspeech.generate("applause", 1.0, -30.0, rng)


def test_spectral_slopes_tell_the_noise_colours_apart():
    rng = np.random.default_rng(1)
    power = {}
    for kind in ("white noise", "pink noise", "brown noise"):
        spectrum = np.abs(np.fft.rfft(nonspeech.generate(kind, 4.0, -20.0, rng))) ** 2
        frequencies = np.fft.rfftfreq(64_000, 1 / 16_000)
        low, high = spectrum[(frequencies > 100) & (frequencies < 200)].mean(), \
            spectrum[(frequencies > 3200) & (frequencies < 6400)].mean()
        power[kind] = 10 * np.log10(low / high)  # dB from 150 Hz to 4.8 kHz: 0, 15 and 30 for 1/f**0, 1, 2
    assert abs(power["white noise"]) < 3 and 12 < power["pink noise"] < 18 and 26 < power["brown noise"] < 34


def test_the_evaluation_set_holds_kinds_training_never_sees_and_other_draws():
    speech = [np.random.default_rng(i).standard_normal(16_000).astype(np.float32) for i in range(4)]
    clips = nonspeech.evaluation_set(speech)
    kinds = {c.kind for c in clips}
    assert len(clips) >= 20 and len(kinds) >= 8
    assert set(nonspeech.HELD_OUT_KINDS) <= kinds and not set(nonspeech.HELD_OUT_KINDS) & set(
        nonspeech.TRAINING_KINDS)
    assert all(5 <= len(c.wave) / 16_000 <= 28 for c in clips)
    again = nonspeech.evaluation_set(speech)
    assert all(np.array_equal(a.wave, b.wave) for a, b in zip(clips, again))  # a fixed set
    training = nonspeech.training_clips([c.wave.size / 16_000 for c in clips], seed=2027)
    assert not any(np.array_equal(a.wave, b.wave) for a in clips for b in training)


def test_training_draws_the_babble_kinds_most_often_and_only_with_speech_to_mix():
    from collections import Counter

    speech = [np.random.default_rng(i).standard_normal(8000).astype(np.float32) for i in range(4)]
    kinds = Counter(c.kind for c in nonspeech.training_clips([0.5] * 240, seed=4, babble=speech))
    others = [n for kind, n in kinds.items() if kind not in nonspeech.BABBLE_KINDS]
    assert set(kinds) == set(nonspeech.TRAINING_KINDS)
    assert all(kinds[kind] > 2 * np.mean(others) for kind in nonspeech.BABBLE_KINDS)
    assert not set(nonspeech.BABBLE_KINDS) & {c.kind for c in nonspeech.training_clips([0.5] * 60, seed=4)}


def test_speech_shaped_noise_has_the_spectrum_of_its_speech_and_pulses_at_a_syllable_rate():
    rng = np.random.default_rng(5)
    t = np.arange(32_000) / 16_000
    speech = [(np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 900 * t)).astype(np.float32)]
    wave = nonspeech.generate("speech-shaped noise", 4.0, -25.0, rng, babble=speech)
    spectrum, frequencies = np.abs(np.fft.rfft(wave)) ** 2, np.fft.rfftfreq(len(wave), 1 / 16_000)
    near = [spectrum[np.abs(frequencies - f) < 50].sum() for f in (300, 900)]
    assert sum(near) > 0.9 * spectrum.sum()  # its power where the speech's is
    envelope = np.abs(wave).reshape(-1, 400).mean(1)  # 25 ms frames
    assert envelope.min() < 0.1 * envelope.max()  # bursts with gaps between, not steady noise


def test_training_clips_come_from_the_noise_folder_too(tmp_path):
    (tmp_path / "noise" / "free-sound").mkdir(parents=True)
    sf.write(tmp_path / "noise" / "free-sound" / "fan.wav", 0.1 * np.ones(48_000, np.float32), 48_000)
    clips = nonspeech.training_clips([1.5] * 6, seed=3, noise_dir=tmp_path / "noise")
    from_folder = [c for c in clips if c.kind == "noise_dir"]
    assert len(from_folder) == 3 and all(len(c.wave) == 24_000 and c.name.startswith("fan.wav") for c in from_folder)
    with pytest.raises(ValueError, match="holds no audio files"):
        nonspeech.training_clips([1.0], seed=3, noise_dir=tmp_path / "noise" / "empty-not-there")


def test_whisper_learns_its_pretraining_no_speech_target_and_an_empty_text_after_the_prompt(tiny_whisper):
    examples = families.get("whisper").nonspeech_examples(tiny_whisper, row=7)
    tokens = [tiny_whisper.tokenizer.convert_ids_to_tokens(e.labels) for e in examples]
    assert tokens[0] == ["<|startoftranscript|>", "<|nospeech|>", "<|endoftext|>"] and examples[0].prefix == 0
    no_speech = tiny_whisper.model.generation_config.no_timestamps_token_id - 1
    assert tokens[0][1] == tiny_whisper.tokenizer.convert_ids_to_tokens(no_speech)
    assert tokens[1:] == [["<|startoftranscript|>", "<|vi|>", f"<|{task}|>", "<|notimestamps|>", "<|endoftext|>"]
                          for task in tasks.TASKS]
    assert [e.prefix for e in examples[1:]] == [3, 3] and {e.row for e in examples} == {7}


def test_a_prefix_is_read_by_the_decoder_but_not_learned(tiny_whisper):
    """The loss of a no-speech example after the prompt is the loss of `<|endoftext|>` alone, with the decoder reading
    the whole prompt: as if the prompt were forced, as it is at decoding."""
    family = families.get("whisper")
    examples = family.nonspeech_examples(tiny_whisper, row=0)
    mel = np.zeros((300, 80), np.float16)
    batch = family.collate(tiny_whisper, [{"input_features": mel, "task_labels": [e.labels for e in examples],
                                   "task_prefixes": [e.prefix for e in examples]}])
    tokens = tiny_whisper.tokenizer.convert_ids_to_tokens
    assert tokens(batch["decoder_input_ids"][1].tolist()) == ["<|startoftranscript|>", "<|vi|>", "<|transcribe|>",
                                                             "<|notimestamps|>"]
    assert batch["labels"][1].tolist()[:4] == [-100, -100, -100, tiny_whisper.tokenizer.eos_token_id]
    assert batch["labels"][0].tolist()[:2] == [tiny_whisper.model.generation_config.no_timestamps_token_id - 1,
                                               tiny_whisper.tokenizer.eos_token_id]  # the detector's target is learned
    model = tiny_whisper.model.eval()
    with torch.no_grad():
        out = model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"][1:2],
                    labels=batch["labels"][1:2])
        expected = torch.nn.functional.cross_entropy(out.logits[0, 3:4], batch["labels"][1, 3:4])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name, per_clip", [("whisper", 3), ("e2e", 2)])
def test_training_data_adds_the_share_of_clips_with_their_examples(name, per_clip, tmp_path):
    out = tmp_path / "out"
    overrides = {"manifest": str(demo_slice(tmp_path / "corpus", per_speaker=2)), "output_dir": str(out),
                 "families": [name]}
    if name == "whisper":  # a tiny Whisper in packed windows of up to 6 s, its pauses filled
        overrides["whisper"] = {"model": str(out / "whisper"), "import_from": "", "build_tiny": True,
                                "pack_seconds": 6, "nonspeech_share": 0.25}
    else:
        overrides["e2e"] = {"encoder": str(out / "w2v"), "decoder": str(out / "mbart"), "nonspeech_share": 0.25}
    params = config.load("params/demo.yaml", overrides)
    split.run(params)
    family, hp = families.get(name), params.section(name)
    bundle = family.starting_model(hp, params.paths, params.seed)
    speech = family.training_cache(hp, params.paths, bundle).load()
    dataset, examples, _ = family.training_data(hp, params.paths, bundle, params.seed)
    clips = len(dataset) - len(speech)
    assert clips == round(len(speech) / 3) and dataset["id"][len(speech):][0] == "nonspeech-00000"
    assert [e.row for e in examples if e.row >= len(speech)] == [r for r in range(len(speech), len(dataset))
                                                                for _ in range(per_clip)]
    lengths = np.array(speech["duration"])
    assert not any(dataset["transcript"][len(speech):])
    assert all(np.abs(lengths - d).min() < 1e-3 for d in dataset["duration"][len(speech):])  # as long as speech rows
    again = family.training_data(hp, params.paths, bundle, params.seed)[0]
    assert again["id"] == dataset["id"]  # the clips' cache is found again
    if name == "whisper":  # pauses of room tone or noise, where the window's times say
        windows = speech.select_columns(["starts", "ends", "input_features"]).with_format("numpy")
        pauses = [row["input_features"][int(end * 100) + 3:int(start * 100) - 3].astype(np.float32)
                  for row in windows for end, start in zip(row["ends"], row["starts"][1:])]
        assert len(pauses) > 5 and sum(p.std() > 0.01 for p in pauses) > len(pauses) / 3  # not all silent
        quiet = replace(hp, nonspeech_share=0.0)
        assert family.training_cache(quiet, params.paths, bundle).key != family.training_cache(
            hp, params.paths, bundle).key
