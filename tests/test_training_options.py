"""Options for small GPUs and long runs: LoRA adapters (they train, save, resume and merge), a frozen encoder, and the
guard that stops a run whose loss turns NaN."""
import json

import pytest
import torch

from conftest import demo_slice
from lib import adapters, config, families, split, train
from lib.families import whisper

TEXTS = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon."] * 20


def tiny_run(tmp_path, **whisper_keys) -> config.Params:
    """The demo params on two segments per demo speaker, with a tiny Whisper, split."""
    out = tmp_path / "out"
    section = {"model": str(out / "models" / "whisper-demo"), "import_from": "", "build_tiny": True,
               "pack_seconds": 0, "batch_size": 8, "epochs": 1, "checkpoint_steps": 2, "logging_steps": 1,
               "eval_segments": 4, "max_length": 16, **whisper_keys}
    params = config.load("params/demo.yaml", {"manifest": str(demo_slice(tmp_path / "corpus", per_speaker=2)),
                                              "output_dir": str(out), "whisper": section})
    split.run(params)
    return params


def test_a_frozen_encoder_leaves_only_the_decoder_to_train(tmp_path):
    bundle = whisper.load_whisper(whisper.build_tiny_whisper(tmp_path / "tiny", TEXTS, vocab_size=300))
    hp = config.load("params/demo.yaml").whisper
    settings = adapters.apply(families.get("whisper"), bundle, type(hp)(**{**vars(hp), "freeze_encoder": True}))
    assert settings == {"freeze_encoder": True, "lora": None}
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.decoder.", "proj_out")) for n in trainable)
    assert not any(p.requires_grad for p in bundle.model.model.encoder.parameters())


def test_a_frozen_encoder_with_lora_puts_adapters_on_the_decoder_only(tmp_path):
    bundle = whisper.load_whisper(whisper.build_tiny_whisper(tmp_path / "tiny", TEXTS, vocab_size=300))
    hp = config.load("params/demo.yaml").whisper
    adapters.apply(families.get("whisper"), bundle, type(hp)(**{**vars(hp), "freeze_encoder": True, "lora_rank": 4}))
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".model.decoder." in n for n in trainable)
    assert any(".encoder_attn.q_proj.lora_A" in n for n in trainable) and any(".fc2.lora_B" in n for n in trainable)


@pytest.mark.slow
def test_lora_adapters_train_save_resume_and_merge_into_final(tmp_path):
    from peft import PeftModel

    params = tiny_run(tmp_path, lora_rank=4, lora_alpha=8, lora_targets=["q_proj", "v_proj"])
    summary = train.train(params, "whisper")
    out = params.paths.model("whisper")
    assert summary["lora"] == {"rank": 4, "alpha": 8.0, "targets": ["q_proj", "v_proj"]}
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"] / 10  # the adapters only
    checkpoint = out / summary["best_checkpoint"]
    assert (checkpoint / "adapter_model.safetensors").exists() and not (checkpoint / "model.safetensors").exists()

    base = whisper.load_whisper(params.whisper.model).model.eval()
    adapted = PeftModel.from_pretrained(base, checkpoint).eval()
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means the adapters trained
    final = whisper.load_whisper(out / "final").model.eval()  # a plain Whisper: the adapters merged in
    assert not any("lora" in n for n in final.state_dict())
    features = torch.randn(2, 80, final.config.max_source_positions * 2)
    decoder_input_ids = torch.tensor([[final.config.decoder_start_token_id, 5, 6]] * 2)
    with torch.no_grad():
        expected = adapted(input_features=features, decoder_input_ids=decoder_input_ids).logits
        merged = final(input_features=features, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)

    longer = config.load("params/demo.yaml", json.loads(json.dumps({**params.to_dict(), "whisper": {
        **params.to_dict()["whisper"], "epochs": 2}})))
    resumed = train.train(longer, "whisper")
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.name != summary["best_checkpoint"])
    assert resumed["resumed_from"].startswith("checkpoint-") and resumed["global_step"] == 2 * summary["global_step"]
    assert last == resumed["global_step"] and (out / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_naming_the_step_and_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    params = tiny_run(tmp_path)
    family = families.get("whisper")
    collate, batches = family.collate, []

    def corrupt_third_batch(bundle, batch):
        inputs = collate(bundle, batch)
        if "segment_index" in inputs:  # a training batch (val batches have none)
            batches.append(1)
            if len(batches) == 3:
                inputs["input_features"][0, 0, 0] = float("nan")  # as a corrupt audio file would
        return inputs

    monkeypatch.setattr(family, "collate", corrupt_third_batch)
    with pytest.raises(train.TrainingDiverged) as stopped:
        train.train(params, "whisper")
    out = params.paths.model("whisper")
    error = stopped.value
    assert error.step == 3 and error.checkpoint == out / "checkpoint-2"
    assert "the training loss is nan at optimizer step 3" in str(error)
    assert all(word in str(error) for word in ("learning_rate", "bf16", "max_grad_norm"))
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and not (out / "final").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state["log_history"] if "loss" in h)


@pytest.mark.slow
def test_packed_windows_train_with_a_share_of_timestamped_labels(tmp_path):
    params = tiny_run(tmp_path, pack_seconds=6, timestamp_share=0.5, checkpoint_steps=100, nonspeech_share=0)
    family = families.get("whisper")
    hp = params.whisper
    bundle = family.starting_model(hp, params.paths, params.seed)
    windows = family.training_cache(hp, params.paths, bundle).load()
    examples, filtered = family.training_examples(hp, bundle, windows, params.seed)
    segments = sum(len(t) for t in windows["texts"])
    assert len(windows) < segments and not filtered  # several segments per window, none over the 6 s window
    timestamp = bundle.tokenizer.convert_tokens_to_ids("<|0.00|>")
    timed = [e for e in examples if e.labels[3] >= timestamp]
    assert 0.3 < len(timed) / len(examples) < 0.7  # about the share asked for
    assert all(e.labels[-2] >= timestamp for e in timed)  # each timed label ends on its last segment's end time
    summary = train.train(params, "whisper")
    assert summary["examples"]["train"] == len(examples) and summary["global_step"] == -(-len(windows) // 8)


def test_a_cpu_trains_and_decodes_in_bf16_only_where_it_computes_bfloat16_itself(monkeypatch, caplog):
    from lib import precision

    cpu = precision.torch.device("cpu")
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert precision.training("bf16") == "bf16" and precision.trainer_flags("bf16") == {"bf16": True}
    assert precision.training("fp16") == "fp32" and "fp16 needs a GPU; training in fp32" in caplog.text
    assert precision.dtype("bf16", cpu) == precision.torch.bfloat16  # 05 decodes in it
    assert precision.dtype("fp16", cpu) == precision.dtype("fp32", cpu) == precision.torch.float32
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)  # emulated bf16 would be slower
    caplog.clear()
    assert precision.training("bf16") == "fp32" and "a CPU with native bfloat16" in caplog.text
    assert precision.training("fp32") == "fp32" and precision.trainer_flags("fp32") == {}
    assert precision.dtype("bf16", cpu) == precision.torch.float32


def test_the_shared_encoder_pass_and_val_decoding_compute_in_the_trainings_precision(tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from lib import precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)  # bf16 autocast on any CPU (slower where emulated)
    family = families.get("whisper")
    encode, generate, seen, generating = type(family).encode, WhisperForConditionalGeneration.generate, [], []

    def autocast_dtype():
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32

    def recording_encode(self, bundle, batch):
        seen.append(autocast_dtype())
        return encode(self, bundle, batch)

    def recording_generate(self, *args, **kwargs):
        generating.append(autocast_dtype())
        return generate(self, *args, **kwargs)

    encoder_forward, evaluating = WhisperEncoder.forward, []

    def recording_encoder(self, *args, **kwargs):
        evaluating.extend([] if self.training else [1])
        return encoder_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(family), "encode", recording_encode)
    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", recording_generate)
    monkeypatch.setattr(WhisperEncoder, "forward", recording_encoder)
    params = tiny_run(tmp_path, precision="bf16", share_encoder=True, epochs=0.5, eval_segments=1)
    summary = train.train(params, "whisper")
    assert summary["precision"] == "bf16" and summary["global_step"] >= 1
    assert seen and set(seen) == {torch.bfloat16}  # accelerate autocasts forward(); the pre-hook runs before it
    assert generating and set(generating) == {torch.bfloat16}  # and generate() encodes outside forward()
    assert summary["final"]["final_transcribe_loss"] > 0  # the val loss is still computed
    assert len(evaluating) == len(generating)  # each val batch: one encoder pass for its decode and its loss
