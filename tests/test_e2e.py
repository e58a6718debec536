"""The E2E model: wav2vec2 + mBART-50 built from saved folders, its decoder weights, and LNA."""
import numpy as np
import pytest
import torch

from lib import decoding, families
from lib.families import e2e

TEXTS = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon.",
         "Anh check email giúp em với", "Please check the email for me.", "Hôm nay trời đẹp quá"] * 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return e2e.build_tiny_e2e(root / "wav2vec2", root / "mbart", TEXTS, vocab_size=50)


def test_decoder_embeddings_and_head_come_from_the_saved_decoder(folders):
    from transformers import MBartForConditionalGeneration

    encoder, decoder = folders
    bundle = e2e.load_e2e(encoder, decoder)
    model, tokenizer = bundle.model, bundle.tokenizer
    saved = MBartForConditionalGeneration.from_pretrained(decoder)
    assert torch.equal(model.decoder.model.decoder.embed_tokens.weight, saved.model.shared.weight)
    assert torch.equal(model.decoder.lm_head.weight, saved.lm_head.weight)
    assert model.config.decoder_start_token_id == 2 and model.config.pad_token_id == tokenizer.pad_token_id == 1
    assert model.config.encoder.add_adapter and model.config.encoder.layerdrop == 0.0
    tokenizer.tgt_lang = "en_XX"
    ids = tokenizer(text_target="Please check the email.").input_ids
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "en_XX" and ids[-1] == tokenizer.eos_token_id == 2
    # mBART-50's order: <s> <pad> </s> <unk>, the pieces, the 52 language codes, <mask>
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tokenizer.convert_tokens_to_ids("<mask>") == len(tokenizer) - 1
    codes = tokenizer.convert_tokens_to_ids(["en_XX", "vi_VN"])
    assert all(len(tokenizer) - 53 <= c < len(tokenizer) - 1 for c in codes)


def test_a_decoder_weight_that_did_not_load_is_caught(folders):
    from transformers import MBartForConditionalGeneration

    encoder, decoder = folders
    model = e2e.load_e2e(encoder, decoder).model
    saved = MBartForConditionalGeneration.from_pretrained(decoder)
    with torch.no_grad():
        model.decoder.model.decoder.embed_tokens.weight.normal_()  # what plain from_encoder_decoder_pretrained leaves
    with pytest.raises(e2e.DecoderNotLoaded, match="embed_tokens"):
        e2e.check_decoder_loaded(model, saved)


def test_lna_trains_only_layer_norms_attention_and_adapter(folders):
    model = e2e.load_e2e(*folders).model
    e2e.freeze_for_training(model, lna=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "feature_extractor" in n)
    full = families.count_parameters(model)["trainable"]
    e2e.freeze_for_training(model, lna=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 0 < families.count_parameters(model)["trainable"] < full
    for name in trainable:
        assert any(k in name for k in ("layer_norm", "layernorm", "attention", "self_attn", "encoder_attn", "adapter"))
        assert "feature_extractor" not in name and "fc1" not in name and "feed_forward" not in name
    for wanted in ("encoder.encoder.layers.0.attention.q_proj.weight", "encoder.adapter.layers.0.conv.weight",
                   "decoder.model.decoder.layers.0.encoder_attn.k_proj.weight",
                   "decoder.model.decoder.layers.1.self_attn.v_proj.weight",
                   "decoder.model.decoder.layers.0.final_layer_norm.weight"):
        assert wanted in trainable
    for frozen in ("decoder.model.decoder.embed_tokens.weight", "decoder.model.decoder.layers.0.fc1.weight",
                   "encoder.encoder.layers.0.feed_forward.intermediate_dense.weight"):
        assert frozen not in trainable


def test_a_batch_mixing_vi_and_en_targets_trains_and_generates_each_language(folders):
    family = families.get("e2e")
    torch.manual_seed(0)
    bundle = e2e.load_e2e(*folders)
    model, tokenizer = bundle.model, bundle.tokenizer
    e2e.freeze_for_training(model, lna=False)
    texts = {"transcribe": "Anh check email giúp em với", "translate": "Please check the email for me."}
    batch = []
    for i, task in enumerate(["transcribe", "translate", "transcribe", "translate"]):
        tokenizer.tgt_lang = e2e.LANGUAGE_CODES[task]
        wave = torch.randn(8000 + 1600 * i).numpy() * 0.1  # different lengths: padding and attention mask matter
        batch.append({"input_values": wave, "labels": tokenizer(text_target=texts[task]).input_ids})
    inputs = family.collate(bundle, batch)
    assert inputs["attention_mask"][0].sum() == 8000 and inputs["attention_mask"][3].sum() == 12800
    first = tokenizer.convert_ids_to_tokens(inputs["labels"][:, 0].tolist())
    assert first == ["vi_VN", "en_XX", "vi_VN", "en_XX"]  # nothing stripped: mBART labels start with the language
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    for task, code in e2e.LANGUAGE_CODES.items():
        options = decoding.DecodingOptions(task=task, max_length=12, batch_size=4)
        out = model.generate(inputs["input_values"], attention_mask=inputs["attention_mask"],
                             **family.generation_kwargs(bundle, options))
        assert out[:, 0].tolist() == [2] * 4  # </s>, mBART's decoder start
        assert tokenizer.convert_ids_to_tokens(out[:, 1].tolist()) == [code] * 4
    waves = [b["input_values"] for b in batch[:2]]
    found = decoding.decode(family.decoder(bundle), waves, [len(w) / 16_000 for w in waves],
                            [decoding.DecodingOptions(task=task, max_length=48, batch_size=16)
                             for task in ("transcribe", "translate")])  # both from one encoder pass
    assert found["transcribe"][0].text == texts["transcribe"] and found["translate"][1].text == texts["translate"]
    assert found["transcribe"][0].no_speech_prob is None  # no no-speech probability: never gated


def test_one_encoder_pass_per_segment_gives_the_loss_and_gradients_of_separate_examples(folders):
    from lib.families import base

    family = families.get("e2e")
    torch.manual_seed(0)
    bundle = e2e.load_e2e(*folders)
    model, tokenizer = bundle.model, bundle.tokenizer
    e2e.freeze_for_training(model, lna=False)
    waves = [torch.randn(8000).numpy() * 0.1, torch.randn(11200).numpy() * 0.1]
    labels = {}
    for task, text in (("transcribe", "Anh check email giúp em với"), ("translate", "Please check the email.")):
        tokenizer.tgt_lang = e2e.LANGUAGE_CODES[task]
        labels[task] = tokenizer(text_target=text).input_ids
    separate = family.collate(bundle, [{"input_values": waves[0], "labels": labels["transcribe"]},
                                       {"input_values": waves[0], "labels": labels["translate"]},
                                       {"input_values": waves[1], "labels": labels["translate"]}])
    shared = family.collate(bundle, [{"input_values": waves[0], "task_labels": [labels["transcribe"],
                                                                               labels["translate"]]},
                                     {"input_values": waves[1], "task_labels": [labels["translate"]]}])

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()  # no dropout, so that both ways see the same network; gradients flow all the same
    expected, expected_grads = loss_and_grads(separate)
    handles = base.share_encoder(family, bundle)
    try:
        got, got_grads = loss_and_grads(shared)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert got_grads.keys() == expected_grads.keys() and len(got_grads) > 50
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_lora_trains_the_randomly_started_adapter_in_full_and_merges_it(folders):
    from lib import adapters, config

    bundle = e2e.load_e2e(*folders)
    hp = config.load("params/demo.yaml").e2e
    adapters.apply(families.get("e2e"), bundle, type(hp)(**{**vars(hp), "lora_rank": 4}))
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert any(".adapter.modules_to_save." in n and n.endswith("conv.weight") for n in trainable)
    assert any("lora_A" in n for n in trainable) and not any("embed_tokens" in n for n in trainable)
    adapter = next(p for n, p in bundle.model.named_parameters() if ".adapter.modules_to_save." in n)
    with torch.no_grad():
        adapter.add_(1.0)  # as training would move it
    plain = adapters.plain(bundle.model)
    assert any(torch.equal(p, adapter) for n, p in plain.named_parameters() if n.startswith("encoder.adapter."))
    assert "encoder.adapter.layers.0.conv.weight" in plain.state_dict()
    assert e2e.is_lna_parameter("enc_to_dec_proj.weight") and e2e.is_lna_parameter("encoder.adapter.layers.0.conv.bias")


def test_english_speech_is_transcribed_with_the_english_code(folders):
    bundle = e2e.load_e2e(*folders)
    family = families.get("e2e")
    english = decoding.DecodingOptions(task="transcribe", max_length=8, batch_size=4, language="en")
    en_xx = bundle.tokenizer.convert_tokens_to_ids("en_XX")
    assert family.generation_kwargs(bundle, english)["forced_bos_token_id"] == en_xx
    assert family.generation_kwargs(bundle, decoding.DecodingOptions(task="transcribe"))["forced_bos_token_id"] == \
        bundle.tokenizer.convert_tokens_to_ids("vi_VN")
    assert family.forced_prefix("transcribe", "en") == family.forced_prefix("translate") == "en_XX"


def test_a_beam_search_leaves_the_next_task_the_batchs_own_rows(folders):
    """With beams (dev and prod decode with 4 and 5), the batch's encoder output is the same after a task as before:
    transformers' beam search repeats the rows of the output it is given in place, and the next task would read the
    first rows' audio in place of the others'."""
    bundle = e2e.load_e2e(*folders)
    decoder = families.get("e2e").decoder(bundle)
    rng = np.random.default_rng(3)
    encoded = decoder.encode([decoder.input(rng.standard_normal(16_000).astype(np.float32)) for _ in range(3)])
    tensors = {key: value.last_hidden_state if key == "encoder_outputs" else value for key, value in encoded.items()}
    decoder.generate(encoded, decoding.DecodingOptions(task="transcribe", max_length=12, num_beams=3), 0.0)
    for key, value in encoded.items():
        assert (value.last_hidden_state if key == "encoder_outputs" else value) is tensors[key]
