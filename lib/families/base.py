"""What a model family is: the one place that knows how its models load, read audio, learn and decode.

`lib.train`, `lib.evaluate`, the notebooks and the charts ask the family registered under a params section name
(`lib.families.get("whisper")`) instead of branching on it. A family subclasses `Family`, fills in the class
attributes and the methods that raise NotImplementedError, and ends its module with `FAMILY = TheFamily()`: the
registry in `lib/families/__init__.py` finds it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib import config, features, manifest, tasks
from lib.audio import SAMPLE_RATE

LONG_FORM_TOKENS = 8  # label tokens per second of speech a one-pass long-form decode is given room for

log = logging.getLogger("lib.families")


@dataclass
class Bundle:
    """A model with what turns audio into its inputs and text into its labels."""

    model: torch.nn.Module
    tokenizer: object
    feature_extractor: object
    processor: object | None = None  # saved in place of the two above when the family has one

    def save_processing(self, folder: Path) -> None:
        """Save the tokenizer and feature extractor beside the weights, as `from_pretrained` expects them."""
        for artifact in [self.processor] if self.processor else [self.tokenizer, self.feature_extractor]:
            artifact.save_pretrained(folder)


class Family:
    """A model family. Subclasses set the attributes and implement the methods that raise NotImplementedError."""

    name: str  # its params section, its folder under outputs/<profile>/, its results' file prefix
    label: str  # what reports and charts call it
    notebook: str  # the stage that trains it, named in errors when its model is missing
    params_class: type[config.TrainingParams]  # its params section
    input_column: str  # the model input its feature cache holds
    sampling: str = "random"  # the Trainer's train_sampling_strategy ("group_by_length" for variable-length input)
    usage: str  # Python that loads a trained model from "PATH" and decodes 16 kHz audio, for its model card
    long_form_decoding = "each recording in one pass"  # what `decode_long` does, as the metrics file records it
    new_modules: tuple[str, ...] = ()  # modules that start from random weights: trained in full even under LoRA

    # --- models ------------------------------------------------------------------------------------------------------

    def model_names(self, hp) -> dict[str, str]:
        """Params key -> hub id or folder, for every pretrained model the section names."""
        raise NotImplementedError

    def build_tiny(self, hp, texts: list[str], seed: int) -> None:
        """Build the demo's tiny random-weight models at the folders the section names (tokenizers on `texts`)."""
        raise NotImplementedError

    def maker(self, hp) -> str | None:
        """How a run makes the section's models where their folders are missing (None: they must be had)."""
        return "built tiny (build_tiny)" if hp.build_tiny else None

    def make(self, hp, params: config.Params) -> None:
        """Make the section's missing models as `maker` says."""
        self.build_tiny(hp, training_texts(params), seed=params.seed)

    def load(self, hp) -> Bundle:
        """The pretrained starting point named in the params section."""
        raise NotImplementedError

    def load_trained(self, folder: Path) -> Bundle:
        """A model trained and saved by lib.train (`<name>/final`)."""
        raise NotImplementedError

    def describe(self, bundle: Bundle) -> dict:
        """The model's size and vocabulary, as stage 02 shows them."""
        return {"parameters": count_parameters(bundle.model)["total"], "tokens": len(bundle.tokenizer)}

    def encoder(self, model) -> torch.nn.Module:
        """The part that reads the audio, which `freeze_encoder` freezes."""
        return unwrap(model).get_encoder()

    def setup_training(self, bundle: Bundle, hp) -> dict:
        """Freeze what the params say stays frozen; returns the settings the training summary reports."""
        return {}

    # --- data --------------------------------------------------------------------------------------------------------

    def prepare_features(self, paths: config.RunPaths, bundle: Bundle,
                         splits: tuple[str, ...] = config.SPLITS) -> dict[str, features.CachedSplit]:
        """The splits' cached model inputs (computed where missing or stale)."""
        raise NotImplementedError

    def examples(self, bundle: Bundle, dataset, split: str) -> tuple[list[tasks.Example], list[dict]]:
        """The split's examples (one per segment and task), and those left out with their reasons."""
        raise NotImplementedError

    def training_cache(self, params: config.Params, bundle: Bundle) -> features.CachedSplit:
        """The cache training draws from (computed where missing or stale): by default the train split's segments."""
        return self.prepare_features(params.paths, bundle, splits=("train",))["train"]

    def training_examples(self, params: config.Params, bundle: Bundle,
                          dataset) -> tuple[list[tasks.Example], list[dict]]:
        """The examples training draws from `dataset` (the rows of `training_cache`), and those left out."""
        return self.examples(bundle, dataset, "train")

    def model_inputs(self, bundle: Bundle, inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """A batch of model inputs from cached inputs."""
        raise NotImplementedError

    def collate(self, bundle: Bundle, batch: list[dict]) -> dict[str, torch.Tensor]:
        """A batch: padded model inputs and labels padded with -100. Items of a `tasks.SegmentSet` (several tasks'
        labels per input) also give `segment_index`, the input of each label row, for `share_encoder`."""
        start = bundle.model.config.decoder_start_token_id
        inputs = self.model_inputs(bundle, [b[self.input_column] for b in batch])
        if "task_labels" not in batch[0]:
            return {**inputs, "labels": tasks.pad_labels(bundle.tokenizer, [b["labels"] for b in batch], start)}
        labels = [labels for b in batch for labels in b["task_labels"]]
        index = [i for i, b in enumerate(batch) for _ in b["task_labels"]]
        return {**inputs, "labels": tasks.pad_labels(bundle.tokenizer, labels, start),
                "segment_index": torch.tensor(index)}

    def share(self, encoded: dict, index: torch.Tensor) -> dict:
        """Forward keyword arguments for label rows drawn from encoded inputs by `index`: by default the encoder
        output and any attention mask are repeated for each row (see `cross_attention_projections` for more)."""
        from transformers.modeling_outputs import BaseModelOutput
        from transformers.utils import ModelOutput

        return {key: BaseModelOutput(last_hidden_state=value[0].index_select(0, index))
                if isinstance(value, ModelOutput) else value.index_select(0, index) for key, value in encoded.items()}

    def cross_attention_projections(self, model) -> list[torch.nn.Module]:
        """The decoder's cross-attention key and value projections, when the family's `share` passes the encoder
        output once per input and these projections' outputs are repeated for each row instead (default: none)."""
        return []

    # --- decoding ----------------------------------------------------------------------------------------------------

    def forced_prefix(self, task: str) -> str:
        """What decoding forces for the task, as the metrics file records it."""
        raise NotImplementedError

    def generation_kwargs(self, bundle: Bundle, options: tasks.DecodingOptions) -> dict:
        """`generate()` keyword arguments for the options: the task forced, the beam width and length."""
        raise NotImplementedError

    def encode(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> dict:
        """`generate()` keyword arguments that carry the batch's encoder output, so that every task decodes from one
        encoder pass."""
        raise NotImplementedError

    def decode(self, bundle: Bundle, inputs: list[np.ndarray],
               options: list[tasks.DecodingOptions]) -> dict[str, list[str]]:
        """Generate for cached inputs, each task of `options` from the same encoder pass, in batches of the first
        options' batch size; returns task -> decoded texts."""
        model = bundle.model
        device = next(model.parameters()).device
        size = options[0].batch_size
        texts: dict[str, list[str]] = {o.task: [] for o in options}
        model.eval()
        for first in range(0, len(inputs), size):
            batch = self.model_inputs(bundle, inputs[first:first + size])
            batch = {k: v.to(device, model.dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
            with torch.inference_mode():
                encoded = self.encode(bundle, batch)
                for o in options:
                    ids = model.generate(**encoded, **self.generation_kwargs(bundle, o))
                    texts[o.task] += [t.strip() for t in bundle.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts

    def audio_input(self, bundle: Bundle, wave: np.ndarray) -> np.ndarray:
        """The cached form of 16 kHz audio (what `prepare_features` stores for a segment)."""
        raise NotImplementedError

    def long_form_seconds(self, bundle: Bundle, wanted: float) -> float:
        """How long a recording `decode_long` takes may be, `wanted` at most: by default what the decoder's positions
        hold at LONG_FORM_TOKENS a second (mBART-50's 1,024: 128 s)."""
        return min(wanted, self.max_label_tokens(bundle) / LONG_FORM_TOKENS)

    def decode_long(self, bundle: Bundle, waves: list[np.ndarray],
                    options: list[tasks.DecodingOptions]) -> dict[str, list[str]]:
        """Decode whole recordings (long-form; see `long_form_seconds`): by default each in one pass, the length limit
        grown with the longest recording (LONG_FORM_TOKENS a second) up to the decoder's positions."""
        import dataclasses

        seconds = max(len(w) for w in waves) / SAMPLE_RATE
        limit = self.max_label_tokens(bundle)
        grown = [dataclasses.replace(o, max_length=min(limit, max(o.max_length, int(LONG_FORM_TOKENS * seconds))),
                                     batch_size=1) for o in options]
        return self.decode(bundle, [self.audio_input(bundle, w) for w in waves], grown)

    def max_label_tokens(self, bundle: Bundle) -> int:
        """The most label tokens the decoder takes."""
        raise NotImplementedError

    # --- for a run -----------------------------------------------------------------------------------------------------

    def for_run(self, params: config.Params) -> Bundle:
        """The starting model of a run: made first where the section says how (`maker`) and a folder is missing;
        new layers start from the run's seed whether or not the models were just made."""
        hp = params.section(self.name)
        maker = self.maker(hp)
        if maker and not all((config.resolve(n) / "config.json").exists() for n in self.model_names(hp).values()):
            log.info("%s: the starting model is %s", self.name, maker)
            self.make(hp, params)
        torch.manual_seed(params.seed)
        return self.load(hp)

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


def share_encoder(family: Family, bundle: Bundle) -> list:
    """Make the model run its encoder once per input of a `tasks.SegmentSet` batch: a forward pre-hook takes the
    batch's `segment_index`, encodes the inputs once (`family.encode`) and hands the decoder what `family.share` makes
    of it, so a segment's transcribe and translate rows attend to one encoder output and their gradients add up in
    it. Where the family names its cross-attention projections, their keys and values are computed once per input
    too and repeated per row (in training mode: checkpointed layers recompute them during the backward pass).
    Batches without `segment_index` (evaluation, generation) pass untouched. Returns the hook handles."""
    rows: dict[str, torch.Tensor | None] = {"index": None}  # also read when checkpointed layers recompute

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
    folder = config.resolve(name)
    return str(folder) if folder.exists() else name


def model_unavailable(name: str) -> str | None:
    """Why `from_pretrained(name)` would fail, or None: a complete local folder, a hub id in the Hugging Face cache,
    or a hub id the hub answers for."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    folder = config.resolve(name)
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


def training_texts(params: config.Params) -> list[str]:
    """Transcripts and translations of the train split: what the tiny models' tokenizers are trained on."""
    split_file = params.paths.splits / "train.tsv"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file} not found: run 01_split first")
    train = manifest.read(split_file, check_audio=False).segments
    return [s.transcript for s in train] + [s.translation for s in train if s.translation]


def count_parameters(model) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
