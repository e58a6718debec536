"""A third model family, kept in the tests: a tiny transformers Speech2Text, trained multitask like the others.

It is a real other kind of model: 80-bin filterbanks (Kaldi's, normalized per utterance) read by a convolutional
subsampler and a transformer encoder-decoder, with no fixed input window (batches padded to their longest, with an
attention mask over frames) and a SentencePiece vocabulary. Each label is the task's token (`<transcribe>` or
`<translate>`) + text + `</s>`; the model starts decoding from `</s>` and the task's token is forced as the first
generated one, as mBART-50's language codes are for the E2E family.

It needs only this module, its params section and its training notebook (beside this file): a run names it in its
params as `families: [tests.families.speech2text]` (see speech2text.yaml), and lib.families registers it on import.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from lib import decoding, tasks
from lib.families import Bundle, Family
from lib.families.base import local_or_hub, unwrap
from lib.schema import TrainingParams, resolve

TASK_TOKENS = {"transcribe": "<transcribe>", "translate": "<translate>"}
CACHE_VERSION = 1  # bump when the cached filterbanks are computed differently


@dataclass(frozen=True)
class Speech2TextParams(TrainingParams):
    model: str  # hub id or local folder


class Speech2Text(Family):
    name = "speech2text"
    label = "Speech2Text (tests)"
    notebook = "04c_train_speech2text"
    notebook_dir = Path(__file__).parent
    model_type = "speech_to_text"
    params_class = Speech2TextParams
    input_column = "input_features"
    sampling = "group_by_length"
    usage = """
from transformers import Speech2TextForConditionalGeneration, Speech2TextProcessor

processor = Speech2TextProcessor.from_pretrained("PATH")
model = Speech2TextForConditionalGeneration.from_pretrained("PATH")
inputs = processor(audio=audio_16khz, sampling_rate=16000, return_tensors="pt")
task = processor.tokenizer.convert_tokens_to_ids("<transcribe>")  # "<translate>": the English translation
ids = model.generate(inputs.input_features, attention_mask=inputs.attention_mask, forced_bos_token_id=task)
print(processor.batch_decode(ids, skip_special_tokens=True))
"""

    def model_names(self, hp: Speech2TextParams) -> dict[str, str]:
        return {"model": hp.model}

    def build_tiny(self, hp: Speech2TextParams, texts: list[str], seed: int) -> None:
        build_tiny_speech2text(resolve(hp.model), texts, seed=seed)

    def load(self, hp: Speech2TextParams) -> Bundle:
        return load_speech2text(local_or_hub(hp.model))

    def load_trained(self, folder: Path) -> Bundle:
        return load_speech2text(folder)

    def cache_settings(self, bundle: Bundle) -> dict:
        extractor = bundle.feature_extractor
        return {"kind": "speech2text-fbank", "version": CACHE_VERSION, "dtype": "float16",
                "num_mel_bins": extractor.num_mel_bins, "sampling_rate": extractor.sampling_rate,
                "normalize_means": extractor.normalize_means, "normalize_vars": extractor.normalize_vars}

    def input_feature(self, bundle: Bundle):
        from datasets import Array2D

        return Array2D(shape=(None, bundle.feature_extractor.num_mel_bins), dtype="float16")

    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        """Filterbanks normalized per utterance; a constant signal (digital silence) has no variance to divide by,
        and its frames are 0, the normalized mean, instead of NaN."""
        extractor = bundle.feature_extractor
        with np.errstate(divide="ignore", invalid="ignore"):
            fbank = extractor(wave, sampling_rate=extractor.sampling_rate, return_tensors="np").input_features[0]
        return np.nan_to_num(fbank, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float16)

    def examples(self, bundle: Bundle, dataset, split: str):
        """One example per segment and task; labels over the decoder's positions are left out and listed."""
        tokenizer, most = bundle.tokenizer, self.max_label_tokens(bundle)

        def tokenize(task, rows, texts):
            first = tokenizer.convert_tokens_to_ids(TASK_TOKENS[task])
            return [[first, *ids] for ids in tokenizer(texts).input_ids]

        def reject(row, labels):
            return f"label has {len(labels)} tokens, over the decoder's {most}" if len(labels) > most else None

        return tasks.task_examples(dataset, split, tokenize, reject)

    def nonspeech_examples(self, bundle: Bundle, row: int) -> list[tasks.Example]:
        """An empty output for each task: its token, then `</s>` at once."""
        tokenizer = bundle.tokenizer
        return [tasks.Example(row, task, [tokenizer.convert_tokens_to_ids(token), tokenizer.eos_token_id])
                for task, token in TASK_TOKENS.items()]

    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict:
        """Filterbanks padded with zeros to the longest, with an attention mask over frames."""
        import torch

        longest = max(len(x) for x in inputs)
        features = np.zeros((len(inputs), longest, inputs[0].shape[1]), np.float32)
        mask = np.zeros((len(inputs), longest), np.int64)
        for i, x in enumerate(inputs):
            features[i, :len(x)], mask[i, :len(x)] = x, 1
        return {"input_features": torch.from_numpy(features), "attention_mask": torch.from_numpy(mask)}

    def encode(self, bundle: Bundle, batch: dict) -> dict:
        """The encoder output, and the frames' attention mask (the model subsamples it for cross-attention)."""
        encoder = unwrap(bundle.model).get_encoder()
        return {"encoder_outputs": encoder(batch["input_features"], attention_mask=batch["attention_mask"]),
                "attention_mask": batch["attention_mask"]}

    def forced_prefix(self, task: str, language: str = tasks.SOURCE_LANGUAGE) -> str:
        return TASK_TOKENS[task]  # a transcript in whichever language is spoken

    def generation_kwargs(self, bundle: Bundle, options: decoding.DecodingOptions) -> dict:
        return {"forced_bos_token_id": bundle.tokenizer.convert_tokens_to_ids(TASK_TOKENS[options.task]),
                "decoder_start_token_id": unwrap(bundle.model).config.decoder_start_token_id, "use_cache": True,
                "max_length": options.max_length, "num_beams": options.num_beams}

    def max_label_tokens(self, bundle: Bundle) -> int:
        return unwrap(bundle.model).config.max_target_positions


FAMILY = Speech2Text()


def load_speech2text(name: str | Path) -> Bundle:
    """A hub id or a folder saved with `save_pretrained`, through `from_pretrained`."""
    from transformers import Speech2TextForConditionalGeneration, Speech2TextProcessor

    processor = Speech2TextProcessor.from_pretrained(str(name))
    model = Speech2TextForConditionalGeneration.from_pretrained(str(name))
    return Bundle(model, processor.tokenizer, processor.feature_extractor, processor)


def build_tiny_speech2text(out: Path, texts: Iterable[str], vocab_size: int = 600, seed: int = 0) -> Path:
    """A tiny Speech2Text with random weights and a SentencePiece vocabulary trained on `texts`, laid out as the hub's
    (<s>=0, <pad>=1, </s>=2, <unk>=3, the pieces), then the task tokens; saved in `out` with its processor."""
    import sentencepiece as spm
    import torch
    from transformers import (Speech2TextConfig, Speech2TextFeatureExtractor, Speech2TextForConditionalGeneration,
                              Speech2TextProcessor, Speech2TextTokenizer)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "texts.txt"
        corpus.write_text("\n".join(texts), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=f"{tmp}/spm", vocab_size=vocab_size,
                                       model_type="unigram", character_coverage=1.0, minloglevel=2,
                                       hard_vocab_limit=False)
        pieces = spm.SentencePieceProcessor(model_file=f"{tmp}/spm.model")
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for i in range(pieces.get_piece_size()):
            vocab.setdefault(pieces.id_to_piece(i), len(vocab))
        for token in TASK_TOKENS.values():
            vocab[token] = len(vocab)
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = Speech2TextTokenizer(f"{tmp}/vocab.json", f"{tmp}/spm.model",
                                         additional_special_tokens=list(TASK_TOKENS.values()))
        processor = Speech2TextProcessor(Speech2TextFeatureExtractor(), tokenizer)
        processor.save_pretrained(out)
    torch.manual_seed(seed)
    model = Speech2TextForConditionalGeneration(Speech2TextConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, conv_channels=64,
        max_source_positions=1500, max_target_positions=256, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2))
    model.save_pretrained(out)
    return Path(out)
