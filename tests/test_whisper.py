"""Whisper: the tiny model's conventions, the features cache, the collator, training, resume and accelerate."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import demo_slice
from lib import audio, config, decoding, families, manifest, packing, split
from lib.families import whisper


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Whisper built from demo texts, loaded back through `load_whisper` (the hub code path)."""
    folder = tmp_path_factory.mktemp("whisper")
    texts = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon.",
             "Anh check email giúp em với", "Please check the email for me."] * 20
    whisper.build_tiny_whisper(folder, texts, window_seconds=8, vocab_size=400)
    return whisper.load_whisper(folder)


def test_tiny_whisper_follows_the_real_token_layout(tiny):
    model, tok = tiny.model, tiny.tokenizer
    ids = tok.convert_tokens_to_ids
    sot = ids("<|startoftranscript|>")
    # openai/whisper-tiny: <|endoftext|> 50257, <|startoftranscript|> 50258, 99 languages, then the task tokens.
    assert ids("<|endoftext|>") == sot - 1 and ids("<|en|>") == sot + 1
    assert [ids(t) - sot for t in whisper.WHISPER_SPECIALS] == [100, 101, 102, 103, 104, 105]
    assert ids("<|0.00|>") == ids("<|notimestamps|>") + 1 and ids("<|30.00|>") == len(tok) - 1
    tok.set_prefix_tokens(language="vietnamese", task="translate")
    encoded = tok("Anh check email").input_ids
    assert tok.convert_ids_to_tokens(encoded[:4]) == ["<|startoftranscript|>", "<|vi|>", "<|translate|>",
                                                      "<|notimestamps|>"]
    assert encoded[-1] == tok.eos_token_id == tok.pad_token_id
    assert tok.decode(encoded, skip_special_tokens=True) == "Anh check email"
    gen = model.generation_config
    assert gen.lang_to_id["<|vi|>"] == ids("<|vi|>") and gen.task_to_id == {"translate": sot + 100,
                                                                             "transcribe": sot + 101}
    assert gen.decoder_start_token_id == model.config.decoder_start_token_id == sot
    assert gen.no_timestamps_token_id == ids("<|notimestamps|>")
    assert tiny.feature_extractor.nb_max_frames == 2 * model.config.max_source_positions == 800  # 8 s window


def test_on_a_cpu_the_encoder_attends_through_sdpa_and_the_decoder_eagerly_with_sdpas_results(tiny, tmp_path):
    model = tiny.model.eval()
    assert model.config._attn_implementation == whisper.CPU_ATTENTION  # no GPU here: load_whisper's CPU choice
    sdpa_model = whisper.load_whisper(model.name_or_path, attn_implementation="sdpa").model.eval()
    features = torch.randn(2, 80, tiny.feature_extractor.nb_max_frames)
    prompt = torch.tensor([[model.config.decoder_start_token_id, *tiny.tokenizer.convert_tokens_to_ids(
        ["<|vi|>", "<|transcribe|>", "<|notimestamps|>"])]] * 2)
    queries, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, *args, **kwargs):
        queries.append(query.shape[-2])
        return sdpa(query, *args, **kwargs)

    with torch.inference_mode():
        expected = sdpa_model(input_features=features, decoder_input_ids=prompt).logits
        torch.nn.functional.scaled_dot_product_attention = recording_sdpa
        try:
            logits = model(input_features=features, decoder_input_ids=prompt).logits
        finally:
            torch.nn.functional.scaled_dot_product_attention = sdpa
    layers = model.config.encoder_layers
    assert queries == [model.config.max_source_positions] * layers  # the encoder's frames only: no decoder row
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_dev_default_goes_through_the_same_loader(monkeypatch):
    params = config.load("params/dev.yaml")
    assert params.whisper.model == "openai/whisper-tiny" and not params.whisper.build_tiny
    called = []
    monkeypatch.setattr(whisper, "load_whisper", lambda name: called.append(name))
    families.get("whisper").starting_model(params.whisper, params.paths, params.seed)
    assert called == ["openai/whisper-tiny"]  # the hub id, as the tiny model's folder is passed in the demo


def test_generation_forces_language_and_task_and_stays_short_form(tiny):
    family = families.get("whisper")
    mel = np.zeros((120, 80), np.float16)
    options = decoding.DecodingOptions(task="translate", max_length=12, batch_size=16)
    kwargs = family.generation_kwargs(tiny, options)
    assert kwargs["language"] == "vi" and kwargs["task"] == "translate" and kwargs["max_length"] == 12
    [no_timestamps] = kwargs["logits_processor"]  # every timestamp token forbidden, one slice a step
    first = tiny.tokenizer.convert_tokens_to_ids("<|0.00|>")
    scores = no_timestamps(None, torch.zeros(1, len(tiny.tokenizer)))
    assert torch.isinf(scores[0, first:]).all() and not torch.isinf(scores[0, :first]).any()
    decoder = family.decoder(tiny)
    both = decoding.decode(decoder, [mel, mel], [1.2, 1.2], [options, replace(options, task="transcribe")])
    assert {task: len(found) for task, found in both.items()} == {"translate": 2, "transcribe": 2}
    alone = decoding.decode(decoder, [mel, mel], [1.2, 1.2], [options])["translate"]
    assert [o.text for o in both["translate"]] == [o.text for o in alone]  # one encoder pass for both


def test_a_batchs_cross_attention_is_projected_once_and_decodes_as_generate_does(tiny):
    """The decoder hands the cross-attention keys and values of its no-speech step to every greedy or sampling
    generate() on the batch: each task, timestamps, a fallback temperature and a subset of the rows write the tokens a
    plain generate() writes on the same encoder output, without projecting the encoder's frames again; a beam search,
    which expands its rows itself, decodes as before."""
    family = families.get("whisper")
    decoder = family.decoder(tiny)
    rng = np.random.default_rng(1)
    encoded = decoder.encode([rng.standard_normal((120, 80)).astype(np.float16) for _ in range(3)])
    projected = []
    hook = tiny.model.model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
        lambda module, args, output: projected.append(args[0].shape[1]))
    frames = tiny.model.config.max_source_positions
    try:
        for options, temperature, batch in [
                (decoding.DecodingOptions(task="transcribe", max_length=16), 0.0, encoded),
                (decoding.DecodingOptions(task="translate", max_length=16), 0.0, encoded),
                (decoding.DecodingOptions(task="transcribe", max_length=16, timestamps=True), 0.0, encoded),
                (decoding.DecodingOptions(task="translate", max_length=16), 0.6, encoded),
                (decoding.DecodingOptions(task="transcribe", max_length=16), 0.0, decoder.rows(encoded, [2, 0])),
                (decoding.DecodingOptions(task="transcribe", max_length=16, num_beams=3), 0.0, encoded)]:
            written = [o.tokens for o in decoder.generate(batch, options, temperature)]
            beams = options.num_beams > 1
            assert projected == ([frames] if beams else [])  # greedy and sampling: the no-speech step's keys
            arguments = family.generation_kwargs(tiny, options) | decoding.sampling_arguments(temperature)
            with torch.inference_mode(), decoding.seeded(decoder.device, temperature):
                plain = tiny.model.generate(**batch.kwargs, **arguments, return_dict_in_generate=True,
                                            output_scores=beams)
            assert written == plain.sequences.tolist()
            assert projected[-1] == frames  # a plain generate() projects them in every call
            projected.clear()
    finally:
        hook.remove()


def test_a_beam_search_leaves_the_next_task_the_batchs_own_rows(tiny):
    """With beams (dev and prod decode with 4 and 5), the second task of a batch reads its own rows' encoder output:
    transformers' beam search repeats the rows of the output it is given in place, and the translation of every row
    was the first row's."""
    decoder = families.get("whisper").decoder(tiny)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((120, 80)).astype(np.float16) * scale for scale in (0.1, 1, 3)]
    options = [decoding.DecodingOptions(task=task, max_length=16, num_beams=3) for task in ("transcribe", "translate")]
    both = decoding.decode(decoder, inputs, [1.2] * 3, options)["translate"]
    alone = decoding.decode(decoder, inputs, [1.2] * 3, options[1:])["translate"]
    assert [o.tokens for o in both] == [o.tokens for o in alone]
    assert len({tuple(o.tokens) for o in alone}) == 3  # three inputs, three outputs: a repeated row would show


def test_english_speech_is_transcribed_with_the_english_token(tiny, monkeypatch):
    from lib.whisper_tokens import forced

    family = families.get("whisper")
    english = decoding.DecodingOptions(task="transcribe", max_length=12, batch_size=16, language="en")
    assert family.generation_kwargs(tiny, english)["language"] == "en"
    assert family.forced_prefix("transcribe", "en") == "<|en|><|transcribe|><|notimestamps|>"
    prompt, _ = forced(tiny.tokenizer, tiny.model.generation_config, "transcribe", "en")
    assert tiny.tokenizer.convert_ids_to_tokens(prompt)[:2] == ["<|startoftranscript|>", "<|en|>"]  # ctranslate2's
    seen = []
    generate = tiny.model.generate
    monkeypatch.setattr(tiny.model, "generate", lambda *a, **k: seen.append(k["language"]) or generate(*a, **k))
    decoding.decode(family.decoder(tiny), [np.zeros((120, 80), np.float16)], [1.2], [english])
    assert seen and set(seen) == {"en"}


def test_padded_log_mel_equals_the_extractors_30s_input(tmp_path):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=8)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", (0.2 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    wave = audio.load(tmp_path / "a.wav", 0.13, 2.71)
    reference = extractor(wave, sampling_rate=16000, return_tensors="np").input_features[0]
    cached = families.get("whisper").audio_input(families.Bundle(None, None, extractor), wave)
    assert cached.dtype == np.float16 and cached.shape[1] == 80 and cached.shape[0] < 300
    padded = whisper.pad_log_mel([cached], extractor.nb_max_frames)[0]
    np.testing.assert_allclose(padded, reference, atol=2e-3)  # float16 storage


def test_feature_cache_is_reused_and_invalidated(tmp_path, tiny):
    family = families.get("whisper")
    corpus = demo_slice(tmp_path / "corpus", per_speaker=1)
    params = config.load("params/demo.yaml", {"manifest": str(corpus), "output_dir": str(tmp_path / "out")})
    split.run(params)
    paths = params.paths
    first = family.prepare_features(paths, tiny)
    again = family.prepare_features(paths, tiny)
    assert not any(c.reused for c in first.values()) and all(c.reused for c in again.values())
    assert {n: c.key for n, c in first.items()} == {n: c.key for n, c in again.items()}
    assert len(first["train"].load()) + len(first["val"].load()) + len(first["test"].load()) == 30

    train_file = paths.splits / "train.tsv"
    train_file.write_bytes(train_file.read_bytes())  # same bytes, new modification time: the key is the content
    assert family.prepare_features(paths, tiny)["train"].reused
    val_audio = manifest.read(paths.splits / "val.tsv").segments[0].audio
    copy = tmp_path / "audio_copy.ogg"
    shutil.copy(val_audio, copy)
    sf.write(copy, np.zeros(16000, np.float32), 16000, format="OGG")  # different bytes, same name
    lines = (paths.splits / "val.tsv").read_text().splitlines()
    first_row = lines[1].split("\t")
    first_row[1] = str(copy)
    first_row[2], first_row[3], first_row[4] = "", "", "1.000"
    (paths.splits / "val.tsv").write_text("\n".join([lines[0], "\t".join(first_row), *lines[2:]]) + "\n")
    changed = family.prepare_features(paths, tiny)
    assert changed["train"].reused and not changed["val"].reused and changed["val"].key != first["val"].key
    assert len(list((paths.features / "whisper").glob("val-*"))) == 1  # the stale cache is gone


def test_collator_on_real_tokenizer_output(tiny):
    family = families.get("whisper")
    rows = {"duration": [2.0, 3.0, 9.5], "id": ["a", "b", "c"],
            "transcript": ["Anh check email giúp em với", "Chiều nay em gửi report cho manager nhé", "quá dài"],
            "translation": ["Please check the email for me.", "", "Too long."]}
    dataset = _Rows(rows)
    examples, filtered = family.examples(tiny, dataset, "train")
    assert [(e.row, e.task) for e in examples] == [(0, "transcribe"), (1, "transcribe"), (0, "translate")]
    assert {(f["id"], f["task"]) for f in filtered} == {("c", "transcribe"), ("c", "translate")}
    batch = family.collate(tiny, [{"input_features": np.zeros((100 + 50 * i, 80), np.float16), "labels": e.labels}
                      for i, e in enumerate(examples)])
    assert batch["input_features"].shape == (3, 80, 800)
    labels = batch["labels"]
    tok = tiny.tokenizer.convert_ids_to_tokens
    assert [tok(row[:2].tolist()) for row in labels] == [["<|vi|>", "<|transcribe|>"]] * 2 + [["<|vi|>", "<|translate|>"]]
    eos = tiny.tokenizer.eos_token_id
    for row, example in zip(labels.tolist(), examples):
        real = example.labels[1:]  # the start token is stripped
        assert row[:len(real)] == real and real[-1] == eos  # the first EOS is kept
        assert set(row[len(real):]) <= {-100}  # and everything after it is padding
    assert (labels == -100).sum() > 0


class _Rows:
    """Just enough of a datasets.Dataset for multitask_examples."""

    def __init__(self, columns):
        self.columns = columns

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.columns[key]
        return {k: v[key] for k, v in self.columns.items()}


def _train_command(tmp_path, *extra):
    corpus = demo_slice(tmp_path / "corpus", per_speaker=2)
    out = tmp_path / "out"
    overrides = [f"manifest={corpus}", f"output_dir={out}", f"whisper.model={out}/models/whisper-demo",
                 "whisper.import_from=", "whisper.build_tiny=true",
                 "whisper.batch_size=8", "whisper.epochs=2", "whisper.checkpoint_steps=4", "whisper.logging_steps=2",
                 "whisper.eval_segments=4", "whisper.max_length=24",
                 "whisper.pack_seconds=0"]  # one example per segment: enough steps to kill the run between checkpoints
    params = config.load("params/demo.yaml", config.parse_overrides(overrides))
    split.run(params)
    return [*extra, "lib.train", "--params", "params/demo.yaml", *[a for o in overrides for a in ("--set", o)],
            "whisper"], out


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_checkpoint(tmp_path):
    command, out = _train_command(tmp_path, sys.executable, "-m")
    proc = subprocess.Popen(command, cwd=config.PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 240
    while not list((out / "whisper").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.parent.name.split("-")[1]) for p in (out / "whisper").glob("checkpoint-*/trainer_state.json"))
    assert not (out / "whisper" / "final").exists()

    rerun = subprocess.run(command, cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resuming from {out / 'whisper'}/checkpoint-{killed_at}" in rerun.stdout
    summary = json.loads((out / "results" / "whisper_train.json").read_text())
    history = json.loads((out / "results" / "whisper_history.json").read_text())
    assert summary["resumed_from"] == f"checkpoint-{killed_at}"
    total = summary["global_step"]
    assert total > killed_at and total == history[-1]["step"]
    logged = [h["step"] for h in history if "loss" in h]
    assert logged == sorted(logged) and logged[-1] > killed_at  # the step count carried on
    assert (out / "whisper" / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_training_runs_under_accelerate_launch_with_two_processes(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    command, out = _train_command(tmp_path, accelerate, "launch", "--num_processes", "2", "--num_machines", "1",
                                  "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "-m")
    # --multi_gpu is accelerate's torchrun launcher; on a machine without a GPU the processes run on the CPU.
    proc = subprocess.run(command, cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "process 0 of 2 started" in log and "process 1 of 2 started" in log
    summary = json.loads((out / "results" / "whisper_train.json").read_text())
    assert summary["world_size"] == 2
    assert summary["final"]["final_transcribe_wer"] >= 0


@pytest.mark.parametrize("checkpointing", [False, True])
def test_one_encoder_pass_per_segment_gives_the_loss_and_gradients_of_separate_examples(tiny, checkpointing):
    from lib.families import base

    family, model, tok = families.get("whisper"), tiny.model, tiny.tokenizer
    rng = np.random.default_rng(0)
    mels = [rng.normal(size=(120, 80)).astype(np.float16), rng.normal(size=(200, 80)).astype(np.float16)]
    labels = {}
    for task, text in (("transcribe", "Anh check email giúp em với"), ("translate", "Please check the email.")):
        tok.set_prefix_tokens(language="vi", task=task, predict_timestamps=False)
        labels[task] = tok(text).input_ids
    separate = family.collate(tiny, [{"input_features": mels[0], "labels": labels["transcribe"]},
                                     {"input_features": mels[0], "labels": labels["translate"]},
                                     {"input_features": mels[1], "labels": labels["transcribe"]}])
    shared = family.collate(tiny, [{"input_features": mels[0], "task_labels": [labels["transcribe"],
                                                                              labels["translate"]]},
                                   {"input_features": mels[1], "task_labels": [labels["transcribe"]]}])
    assert shared["input_features"].shape[0] == 2 and shared["segment_index"].tolist() == [0, 0, 1]
    assert torch.equal(shared["labels"], separate["labels"])

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    if checkpointing:
        model.activation_checkpointing_enable()
    try:
        expected, expected_grads = loss_and_grads(separate)
        handles = base.share_encoder(family, tiny)
        calls = []
        handles.append(model.model.encoder.register_forward_hook(lambda *a: calls.append(a[1][0].shape[0])))
        got, got_grads = loss_and_grads(shared)
    finally:
        for handle in handles:
            handle.remove()
        model.activation_checkpointing_disable()
        model.zero_grad()
    assert calls[0] == 2  # the encoder ran on the two segments, not on three examples
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert model(**{k: v for k, v in separate.items()}).loss.isfinite()  # unhooked: the plain model again


def _segment(seg_id, speaker, seconds, translation="t"):
    return manifest.Segment(line=0, cells={"id": seg_id, "speaker": speaker, "transcript": "x",
                                                       "translation": translation, "audio_path": "a.wav"},
                                        audio=None, start=0.0, end=seconds, lang_tags=["vi"])


def test_packing_fills_windows_per_speaker_and_keeps_untranslated_segments_apart():
    segments = [_segment("a1", "A", 10), _segment("a2", "A", 10), _segment("a3", "A", 9.5),
                _segment("a4", "A", 3, translation=""), _segment("b1", "B", 31), _segment("b2", "B", 2),
                _segment("a5", "A", 4)]
    windows = [[s.id for s in w] for w in packing.pack(segments, 30, whisper.training_stream)]
    # 10 + 0.5 + 10 + 0.5 + 9.5 = 30.5 > 30; a4 has no translation; b1 is longer than a window and stays alone
    assert windows == [["a1", "a2"], ["a3", "a5"], ["a4"], ["b1"], ["b2"]]


def test_timestamped_labels_follow_whisper_and_round_to_its_grid(tiny):
    tok = tiny.tokenizer
    label = whisper.timestamped_label(tok, "translate", [(0.0, 2.845, "Hello there."), (3.345, 6.1, "Bye.")])
    assert tok.decode(label, decode_with_timestamps=True) == (
        "<|startoftranscript|><|vi|><|translate|><|0.00|> Hello there.<|2.84|><|3.34|> Bye.<|6.10|><|endoftext|>")
    assert tok.decode(label, skip_special_tokens=True).strip() == "Hello there. Bye."


def test_timed_pieces_read_a_timestamped_output_as_openai_whisper_does(tiny):
    tok, generation = tiny.tokenizer, tiny.model.generation_config
    label = whisper.timestamped_label(tok, "translate", [(0.0, 2.845, "Hello there."), (3.345, 6.1, "Bye.")])
    decode = partial(tok.decode, skip_special_tokens=True)
    assert whisper.timed_pieces(label, generation, decode) == [(0.0, 2.84, "Hello there."), (3.34, 6.1, "Bye.")]
    ids = tok.convert_tokens_to_ids
    hello, bye = tok.encode(" Hello", add_special_tokens=False), tok.encode(" Bye", add_special_tokens=False)
    # <|a|><|a|> is a boundary; one timestamp between texts ends one and starts the next; text after the last one
    # runs to the input's end (None); nothing after <|endoftext|> counts
    written = [ids("<|1.00|>"), *hello, ids("<|2.00|>"), *bye, ids("<|3.00|>"), *hello,
               ids("<|endoftext|>"), *bye]
    assert whisper.timed_pieces(written, generation, decode) == [(1.0, 2.0, "Hello"), (2.0, 3.0, "Bye"),
                                                                   (3.0, None, "Hello")]
    assert whisper.timed_pieces([*hello], generation, decode) == [(0.0, None, "Hello")]  # no timestamps at all
    assert whisper.timed_pieces([ids("<|0.00|>"), ids("<|endoftext|>")], generation, decode) == []


def test_packed_windows_are_cached_with_their_segment_times(tmp_path, tiny):
    corpus = demo_slice(tmp_path / "corpus", per_speaker=3)
    params = config.load("params/demo.yaml", {"manifest": str(corpus), "output_dir": str(tmp_path / "out")})
    split.run(params)
    family, hp = families.get("whisper"), replace(params.whisper, pack_seconds=8)  # tiny's 8 s window
    windows = family.training_cache(hp, params.paths, tiny).load()
    segments = manifest.read(params.paths.splits / "train.tsv").segments
    assert [w.split("+") for w in windows["id"]] == [[s.id for s in w]
                                                     for w in packing.pack(segments, 8, whisper.training_stream)]
    assert sum(len(t) for t in windows["texts"]) == len(segments)
    for row in windows.select_columns(["starts", "ends", "duration", "texts", "transcript"]):
        assert row["starts"][0] == 0 and row["ends"][-1] == pytest.approx(row["duration"], abs=1e-3)
        assert row["duration"] <= 8.0 + 1e-3 or len(row["texts"]) == 1
        gaps = [b - a for a, b in zip(row["ends"], row["starts"][1:])]
        assert all(g == pytest.approx(packing.PACK_GAP, abs=2e-3) for g in gaps)
        assert row["transcript"] == " ".join(row["texts"])
    frames = windows.with_format("numpy", columns=["input_features"])[0]["input_features"].shape[0]
    assert frames == pytest.approx(windows["duration"][0] * 100, abs=5)  # 10 ms hop
    assert family.training_cache(hp, params.paths, tiny).reused


def test_the_recorded_log_probabilities_are_those_of_the_returned_scores(tiny):
    """`TokenLogProbs` gives each output's average log-probability as the scores generate() can return give it (up to
    and with the first <|endoftext|>), without generate() returning them."""
    family = families.get("whisper")
    rng = np.random.default_rng(0)
    encoded = family.decoder(tiny).encode([rng.standard_normal((120, 80)).astype(np.float16) for _ in range(3)]).kwargs
    kwargs = family.generation_kwargs(tiny, decoding.DecodingOptions(task="transcribe", max_length=20))
    recorded = whisper.TokenLogProbs()
    kwargs["logits_processor"].append(recorded)
    with torch.inference_mode():
        out = tiny.model.generate(**encoded, **kwargs, return_dict_in_generate=True, output_scores=True)
    eos = tiny.tokenizer.eos_token_id
    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)
    tokens = out.sequences[:, -steps.shape[1]:]
    chosen = steps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    expected = []
    for row, ids in zip(chosen, tokens.tolist()):
        length = ids.index(eos) + 1 if eos in ids else len(ids)
        expected.append(row[:length].mean().item())
    assert recorded.average(out.sequences, eos) == pytest.approx(expected, abs=1e-5)
