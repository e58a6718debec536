"""The end-to-end model: a wav2vec2 encoder and an mBART-50 decoder in a SpeechEncoderDecoderModel.

A transcript's label is `vi_VN` + transcript + `</s>`, a translation's `en_XX` + translation + `</s>` (mBART-50's
target format); the model prepends `</s>` (decoder_start_token_id 2) when it shifts the labels, and at generation the
task's language code is forced as the first token (`forced_bos_token_id`). Waveforms are padded to the longest of
their batch with an attention mask, so training batches are grouped by length.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from lib import atomic, decoding, features, tasks
from lib.families.base import Bundle, Family, local_or_hub, unwrap
from lib.schema import TrainingParams, resolve

LANGUAGE_CODES = {"transcribe": "vi_VN", "translate": "en_XX"}  # mBART-50 codes of each task's target text
SPEECH_CODES = {"vi": "vi_VN", "en": "en_XX"}  # a transcript's code, by the language of the speech
MBART_DECODER_START = 2  # </s>, as in mBART-50
NEW_MODULES = ("adapter", "enc_to_dec_proj")  # wav2vec2's adapter and the 768 -> 1024 bridge start random


@dataclass(frozen=True)
class E2EParams(TrainingParams):
    encoder: str  # wav2vec2: hub id or local folder
    decoder: str  # mBART-50: hub id or local folder
    lna: bool  # train only LayerNorms, attention and the new modules (adapter, bridge to the decoder)


class DecoderNotLoaded(RuntimeError):
    """A pretrained decoder weight did not come from the checkpoint."""


class E2E(Family):
    name = "e2e"
    label = "wav2vec2 + mBART-50"
    license = "apache-2.0"  # wav2vec2 XLS-R's (mBART-50's is MIT): the stricter of the two bases
    notebook = "04_train_e2e"
    params_class = E2EParams
    input_column = "input_values"
    sampling = "group_by_length"
    new_modules = NEW_MODULES
    waveform_input = True
    model_type = "speech-encoder-decoder"
    usage = """
from transformers import AutoFeatureExtractor, MBart50TokenizerFast, SpeechEncoderDecoderModel

model = SpeechEncoderDecoderModel.from_pretrained("PATH")
extractor, tokenizer = AutoFeatureExtractor.from_pretrained("PATH"), MBart50TokenizerFast.from_pretrained("PATH")
inputs = extractor(audio_16khz, sampling_rate=16000, return_tensors="pt")
ids = model.generate(**inputs, forced_bos_token_id=tokenizer.convert_tokens_to_ids("vi_VN"))  # en_XX: translate
print(tokenizer.batch_decode(ids, skip_special_tokens=True))
"""

    def model_names(self, hp: E2EParams) -> dict[str, str]:
        return {"encoder": hp.encoder, "decoder": hp.decoder}

    def build_tiny(self, hp: E2EParams, texts: list[str], seed: int) -> None:
        build_tiny_e2e(resolve(hp.encoder), resolve(hp.decoder), texts, seed=seed)

    def load(self, hp: E2EParams) -> Bundle:
        return load_e2e(local_or_hub(hp.encoder), local_or_hub(hp.decoder), spec_augment=hp.spec_augment)

    def load_trained(self, folder: Path) -> Bundle:
        from transformers import AutoFeatureExtractor, MBart50TokenizerFast, SpeechEncoderDecoderModel

        return Bundle(SpeechEncoderDecoderModel.from_pretrained(str(folder)),
                      MBart50TokenizerFast.from_pretrained(str(folder)), AutoFeatureExtractor.from_pretrained(str(folder)))

    def setup_training(self, bundle: Bundle, hp: E2EParams) -> dict:
        freeze_for_training(bundle.model, lna=hp.lna)
        bundle.model.config.decoder.use_cache = False
        return {"lna": hp.lna}

    def cache_settings(self, bundle: Bundle) -> dict:
        return {"kind": "waveform", "version": features.FEATURE_VERSION, "dtype": "float16",
                "sampling_rate": bundle.feature_extractor.sampling_rate}

    def input_feature(self, bundle: Bundle):
        from datasets import List, Value

        return List(Value("float16"))

    def examples(self, bundle: Bundle, dataset, split: str):
        """One example per segment and task (none for a missing translation); labels over the decoder's positions
        are left out and listed."""
        tokenizer, max_tokens = bundle.tokenizer, self.max_label_tokens(bundle)

        def tokenize(task, rows, texts):
            tokenizer.tgt_lang = LANGUAGE_CODES[task]
            return tokenizer(text_target=texts).input_ids

        def reject(row, labels):
            if len(labels) > max_tokens:
                return f"label has {len(labels)} tokens, over the decoder's {max_tokens}"
            return None

        return tasks.task_examples(dataset, split, tokenize, reject)

    def nonspeech_examples(self, bundle: Bundle, row: int) -> list[tasks.Example]:
        """An empty output for each task: its language code, then `</s>` at once."""
        tokenizer = bundle.tokenizer
        return [tasks.Example(row, task, [tokenizer.convert_tokens_to_ids(code), tokenizer.eos_token_id])
                for task, code in LANGUAGE_CODES.items()]

    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict:
        """Normalized waveforms padded to the longest, with an attention mask (wav2vec2 reads no fixed window)."""
        extractor = bundle.feature_extractor
        batch = extractor([np.asarray(w, np.float32) for w in inputs], sampling_rate=extractor.sampling_rate,
                          padding=True, return_attention_mask=True, return_tensors="pt")
        return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}

    def encode(self, bundle: Bundle, batch: dict) -> dict:
        """The encoder output, and the waveforms' attention mask from which the model masks it for cross-attention."""
        encoder = unwrap(bundle.model).get_encoder()
        return {"encoder_outputs": encoder(batch["input_values"], attention_mask=batch["attention_mask"]),
                "attention_mask": batch["attention_mask"]}

    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        return wave.astype(np.float16)

    def max_label_tokens(self, bundle: Bundle) -> int:
        return unwrap(bundle.model).config.decoder.max_position_embeddings

    def forced_prefix(self, task: str, language: str = tasks.SOURCE_LANGUAGE) -> str:
        return SPEECH_CODES[language] if task == "transcribe" else LANGUAGE_CODES[task]

    def generation_kwargs(self, bundle: Bundle, options: decoding.DecodingOptions) -> dict:
        """Start with </s> and force the target text's language code as the first generated token."""
        code = self.forced_prefix(options.task, options.language)
        return {"forced_bos_token_id": bundle.tokenizer.convert_tokens_to_ids(code),
                "decoder_start_token_id": MBART_DECODER_START, "use_cache": True,
                "max_length": options.max_length, "num_beams": options.num_beams}


FAMILY = E2E()


def load_e2e(encoder: str | Path, decoder: str | Path, adapter: bool = True, spec_augment: float = 0.0) -> Bundle:
    """wav2vec2 + mBART-50 as a SpeechEncoderDecoderModel, from hub ids or folders; in training, wav2vec2's own
    SpecAugment masks `spec_augment` of its feature frames and of their channels, in spans of 10 (at 0, none).

    `from_encoder_decoder_pretrained` loads the mBART checkpoint into an MBartForCausalLM, which looks for
    `model.decoder.embed_tokens.weight` and `lm_head.weight`; an MBartForConditionalGeneration checkpoint stores them as
    `model.shared.weight`, so they would stay randomly initialized (seen with transformers 5.23). The decoder's
    weights are therefore copied from the checkpoint loaded as MBartForConditionalGeneration, and every one of them is
    checked against it: any mismatch raises DecoderNotLoaded.
    """
    import torch
    from transformers import (AutoFeatureExtractor, MBart50TokenizerFast, MBartForConditionalGeneration,
                              SpeechEncoderDecoderModel)

    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(encoder), str(decoder), encoder_add_adapter=adapter, encoder_layerdrop=0.0,  # layerdrop breaks DDP
        encoder_feat_proj_dropout=0.0, encoder_mask_time_prob=spec_augment, encoder_mask_feature_prob=spec_augment)
    source = MBartForConditionalGeneration.from_pretrained(str(decoder))
    with torch.no_grad():
        model.decoder.model.decoder.load_state_dict(source.model.decoder.state_dict())
        model.decoder.lm_head.weight.copy_(source.lm_head.weight)
    check_decoder_loaded(model, source)
    tokenizer = MBart50TokenizerFast.from_pretrained(str(decoder), src_lang="vi_VN", tgt_lang="vi_VN")
    feature_extractor = AutoFeatureExtractor.from_pretrained(str(encoder))
    for settings in (model.config, model.generation_config):
        settings.decoder_start_token_id = MBART_DECODER_START
        settings.pad_token_id = tokenizer.pad_token_id
        settings.eos_token_id = tokenizer.eos_token_id
    return Bundle(model, tokenizer, feature_extractor)


def check_decoder_loaded(model, source) -> None:
    """Raise DecoderNotLoaded unless the decoder's weights, embeddings and LM head included, equal the checkpoint's."""
    import torch

    expected = {f"model.decoder.{k}": v for k, v in source.model.decoder.state_dict().items()}
    expected["lm_head.weight"] = source.lm_head.weight
    actual = model.decoder.state_dict()
    wrong = [k for k, v in expected.items() if k not in actual or not torch.equal(actual[k], v)]
    if wrong:
        raise DecoderNotLoaded(f"{len(wrong)} decoder weight(s) do not match the checkpoint: {', '.join(wrong[:5])}")


def freeze_for_training(model, lna: bool) -> None:
    """Freeze the wav2vec2 feature encoder; with `lna`, train only LayerNorms, attention and the new modules (LNA)."""
    model.encoder.freeze_feature_encoder()
    if not lna:
        return
    for name, parameter in model.named_parameters():
        parameter.requires_grad = is_lna_parameter(name)


def is_lna_parameter(name: str) -> bool:
    """LayerNorms anywhere, encoder self-attention, decoder self- and cross-attention, and the new modules."""
    if "feature_extractor" in name:  # the convolutional feature encoder stays frozen
        return False
    return ("layer_norm" in name or "layernorm" in name or ".attention." in name or "self_attn" in name
            or "encoder_attn" in name or any(part in NEW_MODULES for part in name.split(".")))


def build_tiny_e2e(encoder_out: str | Path, decoder_out: str | Path, texts: Iterable[str], vocab_size: int = 1000,
                   seed: int = 0) -> tuple[Path, Path]:
    """A tiny wav2vec2 and a tiny mBART with an mBART-50-style SentencePiece tokenizer trained on `texts`.

    The mBART keeps as many encoder as decoder layers, as mBART-50 does (12 and 12): generation sizes its cache by
    `num_hidden_layers`, which MBartConfig reads from the encoder. The tokenizer follows mBART-50: <s>=0, <pad>=1,
    </s>=2, <unk>=3, the SentencePiece pieces, then the 52 language codes (vi_VN, en_XX ...) and <mask>; the model's
    decoder_start_token_id is 2 and pad_token_id 1.
    """
    import sentencepiece as spm
    import torch
    from transformers import (MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, Wav2Vec2Model)

    encoder_out, decoder_out = Path(encoder_out), Path(decoder_out)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "texts.txt"
        corpus.write_text("\n".join(texts), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=f"{tmp}/spm", vocab_size=vocab_size,
                                       model_type="unigram", character_coverage=1.0, minloglevel=2,
                                       hard_vocab_limit=False)  # a small corpus gets a smaller vocabulary
        pieces = spm.SentencePieceProcessor(model_file=f"{tmp}/spm.model")
    # SentencePiece order (<unk>, <s>, </s>, pieces); MBart50Tokenizer moves it to fairseq's, as for the real model.
    vocab = [(pieces.id_to_piece(i), pieces.get_score(i)) for i in range(pieces.get_piece_size())]
    tokenizer = MBart50Tokenizer(vocab=vocab, src_lang="vi_VN", tgt_lang="vi_VN")
    tokenizer.save_pretrained(decoder_out)
    decoder = MBartForConditionalGeneration(MBartConfig(
        vocab_size=len(tokenizer), d_model=96, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=384, decoder_ffn_dim=384, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=MBART_DECODER_START, forced_eos_token_id=tokenizer.eos_token_id, scale_embedding=True))
    decoder.save_pretrained(decoder_out)
    encoder = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384, conv_dim=(64,) * 7,
        feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, vocab_size=32))
    encoder.save_pretrained(encoder_out)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(encoder_out)
    return atomic.make_shareable(encoder_out), atomic.make_shareable(decoder_out)
