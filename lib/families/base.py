"""What a model family is: the one place that knows how its models load, read audio, learn and decode.

`lib.train`, `lib.evaluate`, the notebooks and the charts ask the family registered under a params section name
(`lib.families.get("whisper")`) instead of branching on it. A family subclasses `Family` (an abstract base class),
sets the class attributes, implements the abstract methods and ends its module with `FAMILY = TheFamily()`: the
registry in `lib/families/__init__.py` finds it. The other methods are hooks with defaults that suit most families.
Methods take values already resolved (a family's own params section `hp`, the run's folders `paths`, the seed), never
the whole run's params.

A family module imports torch, transformers and peft inside the functions that use them, so that reading params
(lib.config, which imports every family's params dataclass) never loads them.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lib import audio, augment, decoding, features, manifest, nonspeech, tasks
from lib.schema import NOTEBOOK_DIR, SPLITS, RunPaths, TrainingParams, resolve

BABBLE_SEGMENTS = 24  # train segments whose speech the non-speech clips' crowd babble mixes
WAVEFORM = "waveform"  # the training cache's column where training augments waveforms the model does not read

log = logging.getLogger("lib.families")


@dataclass
class Bundle:
    """A model with what turns audio into its inputs and text into its labels."""

    model: object  # a torch module (or, for an export, what its runtime loads)
    tokenizer: object
    feature_extractor: object
    processor: object | None = None  # saved in place of the two above when the family has one

    def save_processing(self, folder: Path) -> None:
        """Save the tokenizer and feature extractor beside the weights, as `from_pretrained` expects them."""
        for artifact in [self.processor] if self.processor else [self.tokenizer, self.feature_extractor]:
            artifact.save_pretrained(folder)


@dataclass
class Export:
    """A trained model converted for deployment (see `Family.export_models`): what decodes it, and what the parity
    report says of it (its format, size, ...)."""

    decoder: decoding.Decoder
    facts: dict = field(default_factory=dict)


class Family(abc.ABC):
    """A model family. Subclasses set the attributes and implement the abstract methods."""

    name: str  # its params section, its folder under outputs/<profile>/, its results' file prefix
    label: str  # what reports and charts call it
    license = "other"  # the base model's license, a Hugging Face license id (the model card's default)
    notebook: str  # the stage that trains it (its notebook's name), named in errors when its model is missing
    notebook_dir: Path = NOTEBOOK_DIR  # where that notebook lives
    params_class: type[TrainingParams]  # its params section
    input_column: str  # the model input its feature cache holds
    sampling: str = "random"  # the Trainer's train_sampling_strategy ("group_by_length" for variable-length input)
    usage: str  # Python that loads a trained model from "PATH" and decodes 16 kHz audio, for its model card
    new_modules: tuple[str, ...] = ()  # modules that start from random weights: trained in full even under LoRA
    export_format: str | None = None  # what `export_models` converts to, naming 05's parity file (None: no exports)
    export_runtime: str | None = None  # what decodes its exports, as reports name it
    model_type: str | None = None  # the `model_type` of its saved models' config.json (how lib.transcribe finds it)
    waveform_input: bool = False  # the model reads the waveform itself (`input_column` holds it)

    REQUIRED = ("name", "label", "notebook", "params_class", "input_column", "usage")

    @property
    def notebook_path(self) -> Path:
        return self.notebook_dir / f"{self.notebook}.ipynb"

    # --- models ------------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def model_names(self, hp) -> dict[str, str]:
        """Params key -> hub id or folder, for every pretrained model the section names."""

    @abc.abstractmethod
    def build_tiny(self, hp, texts: list[str], seed: int) -> None:
        """Build the demo's tiny random-weight models at the folders the section names (tokenizers on `texts`)."""

    @abc.abstractmethod
    def load(self, hp) -> Bundle:
        """The pretrained starting point named in the params section."""

    @abc.abstractmethod
    def load_trained(self, folder: Path) -> Bundle:
        """A model trained and saved by lib.train (`<name>/final`)."""

    def maker(self, hp) -> str | None:
        """How a run makes the section's models where their folders are missing (None: they must be had)."""
        return "built tiny (build_tiny)" if hp.build_tiny else None

    def make(self, hp, paths: RunPaths, seed: int) -> None:
        """Make the section's missing models as `maker` says: by default tiny ones, tokenizers on the train split."""
        self.build_tiny(hp, training_texts(paths), seed=seed)

    def starting_model(self, hp, paths: RunPaths, seed: int) -> Bundle:
        """The starting model of a run: made first where the section says how (`maker`) and a folder is missing;
        new layers start from the run's seed whether or not the models were just made."""
        import torch

        self.make_missing(hp, paths, seed)
        torch.manual_seed(seed)
        return self.load(hp)

    def make_missing(self, hp, paths: RunPaths, seed: int) -> None:
        """Make the starting model's folders where the section says how (`maker`) and one is missing."""
        maker = self.maker(hp)
        if maker and not all((resolve(n) / "config.json").exists() for n in self.model_names(hp).values()):
            log.info("%s: the starting model is %s", self.name, maker)
            self.make(hp, paths, seed)

    def base_model(self, hp) -> str | None:
        """The hub id a run starts from, for the model card: the section's own model when it names one hub id."""
        names = list(self.model_names(hp).values())
        return names[0] if len(names) == 1 and not resolve(names[0]).exists() else None

    def describe(self, bundle: Bundle) -> dict:
        """The model's size and vocabulary, as stage 02 shows them."""
        return {"parameters": count_parameters(bundle.model)["total"], "tokens": len(bundle.tokenizer)}

    def encoder(self, model):
        """The part that reads the audio, which `freeze_encoder` freezes."""
        return unwrap(model).get_encoder()

    def setup_training(self, bundle: Bundle, hp) -> dict:
        """Freeze what the params say stays frozen; returns the settings the training summary reports."""
        return {}

    def unavailable(self, hp) -> list[str]:
        """Why each model the section names cannot be had, naming its key (empty when all can)."""
        if self.maker(hp):
            return []
        return [f"{self.name}.{key}: {reason}; {self.advice(name)}" for key, name in self.model_names(hp).items()
                if (reason := model_unavailable(name))]

    def advice(self, name: str) -> str:
        """What to do about a model that cannot be had."""
        return (f"download it where the hub is reachable (`hf download {name}`, into the same cache), or point the "
                "key at a local folder")

    # --- inputs ------------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def cache_settings(self, bundle: Bundle) -> dict:
        """What makes the cached input (kind, version, dtype, the extractor's settings): part of the cache key."""

    @abc.abstractmethod
    def input_feature(self, bundle: Bundle):
        """The datasets type of the cached input (`input_column`)."""

    @abc.abstractmethod
    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        """The cached form of 16 kHz audio (what `prepare_features` stores for a segment)."""

    def prepare_features(self, paths: RunPaths, bundle: Bundle, splits: tuple[str, ...] = SPLITS,
                         column: str | None = None) -> dict[str, features.CachedSplit]:
        """The splits' cached model inputs (or what `column` names, see `stored_as`), one row per segment (computed
        where missing or stale)."""
        column = column or self.input_column
        settings, feature, convert = self.stored_as(column, bundle)

        def rows(segments):
            for seg in segments:
                wave = audio.load(seg.audio, seg.start, seg.end, audio.SAMPLE_RATE)
                yield {**features.segment_columns(seg), column: convert(wave)}

        return {split: features.prepare(self.cache_name(split, column), paths.splits / f"{split}.tsv",
                                        paths.features / self.name, settings, rows, {column: feature})
                for split in splits}

    def stored_as(self, column: str, bundle: Bundle) -> tuple[dict, object, Callable[[np.ndarray], np.ndarray]]:
        """What a cache column holds: its settings (part of the cache key), its datasets type, and how 16 kHz audio
        becomes a value of it; the model input (`input_column`), or the waveform itself (WAVEFORM)."""
        if column == WAVEFORM:
            from datasets import List, Value

            return ({"kind": "waveform", "version": features.FEATURE_VERSION, "dtype": "float16",
                     "sampling_rate": audio.SAMPLE_RATE}, List(Value("float16")), lambda w: w.astype(np.float16))
        return self.cache_settings(bundle), self.input_feature(bundle), lambda w: self.audio_input(bundle, w)

    def cache_name(self, name: str, column: str) -> str:
        """A cache's name, told apart by what it holds, so that switching augmentation on and off reuses both."""
        return name if column == self.input_column else f"{name}-{column}"

    @abc.abstractmethod
    def examples(self, bundle: Bundle, dataset, split: str) -> tuple[list[tasks.Example], list[dict]]:
        """The split's examples (one per segment and task), and those left out with their reasons."""

    def training_cache(self, hp, paths: RunPaths, bundle: Bundle) -> features.CachedSplit:
        """The cache training draws from (computed where missing or stale): by default the train split's segments."""
        return self.prepare_features(paths, bundle, ("train",), self.training_column(hp))["train"]

    def training_column(self, hp) -> str:
        """The training cache's input column: the model input, or the waveform where the params augment waveforms
        and the model reads something else (`training_transform` then makes its input on the fly)."""
        return WAVEFORM if augment.on_waveforms(hp) and not self.waveform_input else self.input_column

    def input_window(self, bundle: Bundle) -> float | None:
        """The longest input the model reads, in seconds (None: any length); speed perturbation keeps within it."""
        return None

    def training_transform(self, hp, bundle: Bundle,
                           augmentation: augment.WaveAugmentation | None) -> Callable[[dict], dict] | None:
        """What training does to each item it reads (lib.augment, as `augment.for_training` makes it from the params):
        its waveform by another voice, at another speed, in a room, with noise, through a band and a codec, made the
        model input, and its labels' times scaled (`retimed`); None when the params augment no waveforms."""
        if augmentation is None:
            return None
        column, window = self.training_column(hp), self.input_window(bundle)
        longest = int(window * audio.SAMPLE_RATE) if window else None

        def transform(item: dict) -> dict:
            wave, factor = augmentation(item.pop(column), augment.item_generator(), longest)
            item[self.input_column] = self.audio_input(bundle, wave)
            return self.retimed(bundle, item, factor) if factor != 1 else item

        return transform

    def retimed(self, bundle: Bundle, item: dict, factor: float) -> dict:
        """An item whose audio plays `factor` times as fast: times in its labels divided by it (default: none)."""
        return item

    def augmentation_noises(self, hp, paths: RunPaths, seed: int, noise_dir: str = "") -> list[np.ndarray]:
        """What additive noise mixes into training inputs: non-speech clips as `nonspeech_cache` makes them (crowd
        babble of BABBLE_SEGMENTS train segments; `noise_dir`'s recordings), from another seed, silence left out;
        none when `additive_noise` is off."""
        if not hp.additive_noise:
            return []
        babble = babble_speech(manifest.read(paths.splits / "train.tsv").segments)
        count = augment.NOISE_CLIPS_PER_KIND * len(nonspeech.TRAINING_KINDS)
        clips = nonspeech.training_clips([augment.NOISE_CLIP_SECONDS] * count, seed + 1,
                                         resolve(noise_dir) if noise_dir else None, babble)
        return [clip.wave for clip in clips if clip.kind != "silence"]

    def training_examples(self, hp, bundle: Bundle, dataset, seed: int) -> tuple[list[tasks.Example], list[dict]]:
        """The examples training draws from `dataset` (the rows of `training_cache`), and those left out."""
        return self.examples(bundle, dataset, "train")

    def nonspeech_examples(self, bundle: Bundle, row: int) -> list[tasks.Example]:
        """The examples of a non-speech clip at `row`: what the model should give for audio without speech."""
        raise NotImplementedError(f"{self.name}: the family has no no-speech target; "
                                  f"set {self.name}.nonspeech_share: 0")

    def training_data(self, hp, paths: RunPaths, bundle: Bundle, seed: int,
                      noise_dir: str = "") -> tuple[object, list[tasks.Example], list[dict]]:
        """What training draws from: the rows of `training_cache` with their examples, then, with `nonspeech_share`,
        non-speech clips (lib.nonspeech) as further rows, each with `nonspeech_examples`; and the examples left out."""
        dataset = self.training_cache(hp, paths, bundle).load()
        examples, filtered = self.training_examples(hp, bundle, dataset, seed)
        if not hp.nonspeech_share:
            return dataset, examples, filtered
        from datasets import concatenate_datasets

        clips = self.nonspeech_cache(hp, paths, bundle, dataset, seed, noise_dir).load()
        examples += [e for row in range(len(dataset), len(dataset) + len(clips))
                     for e in self.nonspeech_examples(bundle, row)]
        return concatenate_datasets([dataset, clips]), examples, filtered

    def nonspeech_cache(self, hp, paths: RunPaths, bundle: Bundle, speech, seed: int,
                        noise_dir: str = "") -> features.CachedSplit:
        """Non-speech clips as rows shaped like `speech`'s (the training rows), `nonspeech_share` of all rows, as long
        as speech rows drawn at random (computed where missing or stale)."""
        import random

        count = round(hp.nonspeech_share / (1 - hp.nonspeech_share) * len(speech))
        durations = random.Random(f"nonspeech-{seed}").choices(speech["duration"], k=count)
        folder = resolve(noise_dir) if noise_dir else None
        listing = [f"{p.relative_to(folder)}:{p.stat().st_size}" for p in nonspeech.noise_files(folder)] if folder \
            else []
        column = self.training_column(hp)
        stored, _, convert = self.stored_as(column, bundle)
        settings = {**stored, "nonspeech": nonspeech.VERSION, "count": count, "seed": seed,
                    "durations": durations, "noise_dir": listing, "babble_segments": BABBLE_SEGMENTS}
        extra = {c: t for c, t in speech.features.items() if c not in features.ROW_COLUMNS}

        def rows(segments):
            babble = babble_speech(segments)
            for i, clip in enumerate(nonspeech.training_clips(durations, seed, folder, babble)):
                yield {"id": f"nonspeech-{i:05d}", "speaker": "", "transcript": "", "translation": "",
                       "lang_tags": "", "duration": len(clip.wave) / audio.SAMPLE_RATE,
                       **{c: [] for c in extra}, column: convert(clip.wave)}

        return features.prepare(self.cache_name("train-nonspeech", column), paths.splits / "train.tsv",
                                paths.features / self.name, settings, rows, extra)

    @abc.abstractmethod
    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict:
        """A batch of model inputs (tensors) from cached inputs."""

    def collate(self, bundle: Bundle, batch: list[dict]) -> dict:
        """A batch: padded model inputs and labels padded with -100. Items of a `tasks.SegmentSet` (several tasks'
        labels per input) also give `segment_index`, the input of each label row, for `share_encoder`; examples with
        a `prefix` give `decoder_input_ids` too, so that the prefix is read but not learned."""
        import torch

        config = bundle.model.config
        inputs = self.model_inputs(bundle, [b[self.input_column] for b in batch])
        if "task_labels" in batch[0]:
            rows = [labels for b in batch for labels in b["task_labels"]]
            prefixes = [prefix for b in batch for prefix in b.get("task_prefixes", [0] * len(b["task_labels"]))]
            inputs["segment_index"] = torch.tensor([i for i, b in enumerate(batch) for _ in b["task_labels"]])
        else:
            rows, prefixes = [b["labels"] for b in batch], [b.get("prefix", 0) for b in batch]
        labels = tasks.pad_labels(bundle.tokenizer, rows, config.decoder_start_token_id)
        if not any(prefixes):
            return {**inputs, "labels": labels}
        return {**inputs, **tasks.with_prefixes(labels, prefixes, config.decoder_start_token_id, config.pad_token_id)}

    @abc.abstractmethod
    def encode(self, bundle: Bundle, batch: dict) -> dict:
        """`generate()` keyword arguments that carry the batch's encoder output, so that every task decodes from one
        encoder pass."""

    def share(self, encoded: dict, index) -> dict:
        """Forward keyword arguments for label rows drawn from encoded inputs by `index`: by default the encoder
        output and any attention mask are repeated for each row (see `cross_attention_projections` for more)."""
        return decoding.select_rows(encoded, index)

    def cross_attention_projections(self, model) -> list:
        """The decoder's cross-attention key and value projections, when the family's `share` passes the encoder
        output once per input and these projections' outputs are repeated for each row instead (default: none)."""
        return []

    # --- decoding ----------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def forced_prefix(self, task: str, language: str = tasks.SOURCE_LANGUAGE) -> str:
        """What decoding forces for the task on speech in `language`, as the metrics file records it."""

    @abc.abstractmethod
    def generation_kwargs(self, bundle: Bundle, options: decoding.DecodingOptions) -> dict:
        """`generate()` keyword arguments for the options: the task forced, the beam width and length."""

    def usage_for(self, options: decoding.DecodingOptions) -> str:
        """`usage` with the decoding settings of `options` (as its model card shows it); by default as it is."""
        return self.usage

    def plain_decoding(self, bundle: Bundle, language: str) -> None:
        """Set on the model what a plain `generate()` of its saved folders does (training sets it before the first
        checkpoint, so every checkpoint and `final/` carries it): by default nothing."""

    @abc.abstractmethod
    def max_label_tokens(self, bundle: Bundle) -> int:
        """The most label tokens the decoder takes."""

    def decoder(self, bundle: Bundle) -> decoding.Decoder:
        """What decodes the model (lib.decoding's driver runs it): by default `generate()` of a transformers
        encoder-decoder through this family's `model_inputs`, `encode` and `generation_kwargs`."""
        return decoding.Seq2SeqDecoder(self, bundle)

    # --- deployment --------------------------------------------------------------------------------------------------

    def load_export(self, folder: Path, device: str) -> decoding.Decoder:
        """An export `export_models` wrote, loaded by its runtime on `device` (lib.transcribe)."""
        raise NotImplementedError(f"{self.name}: the family has no exports")

    def export_models(self, hp, model_dir: Path, device: str) -> tuple[dict, list[Export]]:
        """The trained model in `model_dir` converted for deployment as the section asks, each export loaded on
        `device`; with facts about the conversion for the parity report. Default: no exports."""
        return {}, []

    def export_folder(self, model_dir: Path, quantization: str) -> Path:
        """Where `export_models` writes the export of the trained model in `model_dir` in `quantization`."""
        return model_dir.parent / f"{self.export_format}-{quantization}"

    def export(self, source: str | Path, out: Path, quantization: str, device: str) -> Export:
        """A model (a trained folder, or a starting model's hub id or folder) converted into `out` in
        `quantization`, loaded on `device`."""
        raise NotImplementedError(f"{self.name}: the family has no exports")

    def evaluation_export(self, hp) -> str:
        """The quantization whose export 05 decodes the sets after the test split with, once its parity holds
        ("": the model itself decodes every set). Default: none."""
        return ""


def babble_speech(segments: list[manifest.Segment]) -> list[np.ndarray]:
    """The crowd's voices of generated babble: the audio of the first BABBLE_SEGMENTS train segments."""
    return [audio.load(s.audio, s.start, s.end) for s in segments[:BABBLE_SEGMENTS]]


def share_encoder(family: Family, bundle: Bundle) -> list:
    """Make the model run its encoder once per input of a `tasks.SegmentSet` batch: a forward pre-hook takes the
    batch's `segment_index`, encodes the inputs once (`family.encode`) and hands the decoder what `family.share` makes
    of it, so a segment's transcribe and translate rows attend to one encoder output and their gradients add up in
    it. Where the family names its cross-attention projections, their keys and values are computed once per input
    too and repeated per row (in training mode: checkpointed layers recompute them during the backward pass).
    Batches without `segment_index` (evaluation, generation) pass untouched. Returns the hook handles."""
    rows: dict = {"index": None}  # also read when checkpointed layers recompute

    def before_forward(module, args, kwargs):
        rows["index"] = kwargs.pop("segment_index", None)
        if rows["index"] is None:
            return None
        encoded = family.encode(bundle, kwargs)
        kwargs.pop(family.input_column)
        return args, {**kwargs, **family.share(encoded, rows["index"])}

    def repeat_rows(module, inputs, output):  # in training only: generation calls the inner model unhooked
        return output if rows["index"] is None or not module.training else output.index_select(0, rows["index"])

    projections = family.cross_attention_projections(bundle.model)
    return [bundle.model.register_forward_pre_hook(before_forward, with_kwargs=True),
            *[p.register_forward_hook(repeat_rows) for p in projections]]

def unwrap(model):
    """The Hugging Face model inside a peft (LoRA) wrapper; the model itself when there is none."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def local_or_hub(name: str) -> str:
    """A params model name as `from_pretrained` takes it: the folder when it exists, else the hub id as written."""
    folder = resolve(name)
    return str(folder) if folder.exists() else name


def model_unavailable(name: str) -> str | None:
    """Why `from_pretrained(name)` would fail, or None: a complete local folder, a hub id in the Hugging Face cache,
    or a hub id the hub answers for."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    folder = resolve(name)
    if folder.exists():
        weights = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.index.json")]
        return None if (folder / "config.json").exists() and weights else f"{folder} holds no complete model " \
            "(config.json and weights)"
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    if constants.HF_HUB_OFFLINE:
        return f"'{name}' is no local folder and is not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    try:
        HfApi().model_info(name, timeout=10)
    except RepositoryNotFoundError:
        return f"'{name}' is no local folder and no model on the Hugging Face hub"
    except Exception as err:  # no network, proxy, DNS: anything that stops the hub from answering
        return (f"'{name}' is no local folder, is not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the "
                f"hub cannot be reached ({type(err).__name__}: {err})")
    return None


def training_texts(paths: RunPaths) -> list[str]:
    """Transcripts and translations of the train split: what the tiny models' tokenizers are trained on."""
    split_file = paths.splits / "train.tsv"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file} not found: run 01_split first")
    train = manifest.read(split_file, check_audio=False).segments
    return [s.transcript for s in train] + [s.translation for s in train if s.translation]


def count_parameters(model) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
