"""Models: load Whisper (and the E2E model) from a hub id or a local folder, and build the demo's tiny models.

The same `from_pretrained` code loads `openai/whisper-tiny` on a user's machine and the tiny model that
`build_tiny_whisper` saves here. The tiny model follows the real checkpoints' conventions: a byte-level BPE whose
`<|endoftext|>` closes the base vocabulary, then `<|startoftranscript|>`, the 99 language tokens in Whisper's order,
`<|translate|>`, `<|transcribe|>`, `<|startoflm|>`, `<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>` and the
timestamp tokens, and a `generation_config` with `lang_to_id`, `task_to_id` and `no_timestamps_token_id`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lib import config, manifest

WHISPER_LANGUAGES = 99  # whisper tiny ... large-v2; large-v3 adds <|yue|>
WHISPER_SPECIALS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                    "<|notimestamps|>")


def load_whisper(name: str | Path, attn_implementation: str = "sdpa"):
    """(model, processor) from a hub id ("openai/whisper-tiny") or a folder saved with `save_pretrained`."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(str(name))
    model = WhisperForConditionalGeneration.from_pretrained(str(name), attn_implementation=attn_implementation)
    return model, processor


def whisper_for_run(params: config.Params):
    """The model named in params, built first when `build_tiny` asks for a tiny demo model that does not exist yet."""
    name = params.whisper.model
    folder = config.resolve(name)
    if params.whisper.build_tiny and not (folder / "config.json").exists():
        build_tiny_whisper(folder, _training_texts(params), seed=params.seed)
    return load_whisper(folder if folder.exists() else name)


def _training_texts(params: config.Params) -> list[str]:
    """Transcripts and translations of the train split: what the tiny models' tokenizers are trained on."""
    split_file = params.paths.splits / "train.tsv"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file} not found: run 01_split first")
    train = manifest.read(split_file, check_audio=False).segments
    return [s.transcript for s in train] + [s.translation for s in train if s.translation]


def whisper_window_frames(processor) -> int:
    """Mel frames in the model's input window (3000 for the real 30 s checkpoints)."""
    return processor.feature_extractor.nb_max_frames


def build_tiny_whisper(out: str | Path, texts: Iterable[str], window_seconds: int = 6, vocab_size: int = 2000,
                       d_model: int = 96, layers: int = 2, seed: int = 0) -> Path:
    """Build a tiny Whisper with random weights and a BPE trained on `texts`; save it in `out` and return `out`.

    `window_seconds` shortens the input window from Whisper's 30 s, which makes the tiny encoder cheaper; the
    feature extractor's `chunk_length` and the encoder's `max_source_positions` agree, as in the real checkpoints.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out = Path(out)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(texts), trainer)
    vocab = bpe.get_vocab()
    vocab["<|endoftext|>"] = len(vocab)  # as in GPT-2 and Whisper: the last base token
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")  # as the hub tokenizers
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:WHISPER_LANGUAGES]]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", *languages,
                                                                *WHISPER_SPECIALS]})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])  # timestamps, as the hub tokenizers have
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")

    feature_extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=window_seconds)
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
        max_source_positions=feature_extractor.nb_max_frames // 2, max_target_positions=448,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        begin_suppress_tokens=None, suppress_tokens=None,  # generation settings live in generation_config
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        begin_suppress_tokens=[ids("Ġ"), eot], suppress_tokens=[], is_multilingual=True,
        lang_to_id={token: ids(token) for token in languages},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False,
    )
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    return out


def count_parameters(model) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


# --- E2E: wav2vec2 encoder + mBART-50 decoder ------------------------------------------------------------------------

E2E_LANGUAGES = {"transcribe": "vi_VN", "translate": "en_XX"}  # mBART-50 codes of each task's target text
MBART_DECODER_START = 2  # </s>, as in mBART-50


class DecoderNotLoaded(RuntimeError):
    """A pretrained decoder weight did not come from the checkpoint."""


def load_e2e(encoder: str | Path, decoder: str | Path, adapter: bool = True):
    """(model, feature_extractor, tokenizer): wav2vec2 + mBART-50 as a SpeechEncoderDecoderModel.

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
        encoder_feat_proj_dropout=0.0, encoder_mask_time_prob=0.0)
    source = MBartForConditionalGeneration.from_pretrained(str(decoder))
    with torch.no_grad():
        model.decoder.model.decoder.load_state_dict(source.model.decoder.state_dict())
        model.decoder.lm_head.weight.copy_(source.lm_head.weight)
    check_decoder_loaded(model, source)
    tokenizer = MBart50TokenizerFast.from_pretrained(str(decoder), src_lang="vi_VN", tgt_lang="vi_VN")
    feature_extractor = AutoFeatureExtractor.from_pretrained(str(encoder))
    model.config.decoder_start_token_id = MBART_DECODER_START
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.decoder_start_token_id = MBART_DECODER_START
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, feature_extractor, tokenizer


def e2e_for_run(params: config.Params):
    """The E2E model named in params, with tiny demo models built first where `build_tiny` asks and they are missing."""
    hp = params.e2e
    encoder, decoder = config.resolve(hp.encoder), config.resolve(hp.decoder)
    if hp.build_tiny and not ((encoder / "config.json").exists() and (decoder / "config.json").exists()):
        build_tiny_e2e(encoder, decoder, _training_texts(params), seed=params.seed)
    import torch

    torch.manual_seed(params.seed)  # the adapter's random start, whether or not the models were just built
    return load_e2e(encoder if encoder.exists() else hp.encoder, decoder if decoder.exists() else hp.decoder)


def load_e2e_final(folder: str | Path):
    """(model, feature_extractor, tokenizer) of a trained E2E model saved by lib.train (e2e/final)."""
    from transformers import AutoFeatureExtractor, MBart50TokenizerFast, SpeechEncoderDecoderModel

    return (SpeechEncoderDecoderModel.from_pretrained(str(folder)), AutoFeatureExtractor.from_pretrained(str(folder)),
            MBart50TokenizerFast.from_pretrained(str(folder)))


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
    """Freeze the wav2vec2 feature encoder; with `lna`, train only LayerNorms, attention and the adapter (LNA)."""
    model.encoder.freeze_feature_encoder()
    if not lna:
        return
    for name, parameter in model.named_parameters():
        parameter.requires_grad = is_lna_parameter(name)


def is_lna_parameter(name: str) -> bool:
    """LayerNorms anywhere, encoder self-attention, decoder self- and cross-attention, and the encoder adapter."""
    if "feature_extractor" in name:  # the convolutional feature encoder stays frozen
        return False
    return ("layer_norm" in name or "layernorm" in name or ".attention." in name or "self_attn" in name
            or "encoder_attn" in name or ".adapter." in name)


def build_tiny_e2e(encoder_out: str | Path, decoder_out: str | Path, texts: Iterable[str], vocab_size: int = 1000,
                   seed: int = 0) -> tuple[Path, Path]:
    """A tiny wav2vec2 and a tiny mBART with an mBART-50-style SentencePiece tokenizer trained on `texts`.

    The mBART keeps as many encoder as decoder layers, as mBART-50 does (12 and 12): generation sizes its cache by
    `num_hidden_layers`, which MBartConfig reads from the encoder. The tokenizer follows mBART-50: <s>=0, <pad>=1,
    </s>=2, <unk>=3, the SentencePiece pieces, then the 52 language codes (vi_VN, en_XX ...) and <mask>; the model's
    decoder_start_token_id is 2 and pad_token_id 1.
    """
    import tempfile

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
    return encoder_out, decoder_out
