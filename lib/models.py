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
        split_file = params.paths.splits / "train.tsv"
        if not split_file.exists():
            raise FileNotFoundError(f"{split_file} not found: run 01_split first")
        train = manifest.read(split_file, check_audio=False).segments
        texts = [s.transcript for s in train] + [s.translation for s in train if s.translation]
        build_tiny_whisper(folder, texts, seed=params.seed)
    return load_whisper(folder if folder.exists() else name)


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

