"""The E2E model: wav2vec2 + mBART-50 built from saved folders, its decoder weights, and LNA."""
import pytest
import torch

from lib import models

TEXTS = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon.",
         "Anh check email giúp em với", "Please check the email for me.", "Hôm nay trời đẹp quá"] * 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return models.build_tiny_e2e(root / "wav2vec2", root / "mbart", TEXTS, vocab_size=50)


def test_decoder_embeddings_and_head_come_from_the_saved_decoder(folders):
    from transformers import MBartForConditionalGeneration

    encoder, decoder = folders
    model, _, tokenizer = models.load_e2e(encoder, decoder)
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
    model, _, _ = models.load_e2e(encoder, decoder)
    saved = MBartForConditionalGeneration.from_pretrained(decoder)
    with torch.no_grad():
        model.decoder.model.decoder.embed_tokens.weight.normal_()  # what plain from_encoder_decoder_pretrained leaves
    with pytest.raises(models.DecoderNotLoaded, match="embed_tokens"):
        models.check_decoder_loaded(model, saved)


def test_lna_trains_only_layer_norms_attention_and_adapter(folders):
    model, _, _ = models.load_e2e(*folders)
    models.freeze_for_training(model, lna=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "feature_extractor" in n)
    full = models.count_parameters(model)["trainable"]
    models.freeze_for_training(model, lna=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 0 < models.count_parameters(model)["trainable"] < full
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
