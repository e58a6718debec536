"""Training throughput: samples/s of our Whisper and E2E training against the reference recipe, same model and data.

Both sides train the demo's tiny models from the same saved weights for one epoch of the demo's training split (two
examples per segment: transcript and translation), with the same batch size, learning rate, schedule, precision and
seed, and no evaluation during the epoch. `train_samples_per_second` is the Trainer's own figure on both sides.
- ours: `lib.train.train` as 03 and 04 run it (cached features, our collators, E2E batches
  grouped by length);
- reference: `Seq2SeqTrainer` with the blog's collator over features computed per example in `datasets.map`
  (Whisper: log-mels padded to the window by the extractor; E2E: normalized waveforms, as in
  `run_speech_recognition_seq2seq.py`, whose `group_by_length` is off by default).

    python -m bench.train
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench import common
from lib import families, precision, train
from lib.families import e2e, whisper

OVERRIDES = {section: {"epochs": 1, "checkpoint_steps": 100_000, "eval_segments": 4, "resume": False}
             for section in ("whisper", "e2e")}


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    """The blog's collator, as published."""

    processor: Any
    decoder_start_token_id: int

    def __call__(self, features):
        input_name = "input_features" if "input_features" in features[0] else "input_values"
        batch = self.processor.feature_extractor.pad([{input_name: f[input_name]} for f in features],
                                                     return_tensors="pt")
        labels_batch = self.processor.tokenizer.pad([{"input_ids": f["labels"]} for f in features],
                                                    return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


@dataclass
class Processor:
    """A feature extractor and a tokenizer, as the collator expects them (the E2E model has no processor class)."""

    feature_extractor: Any
    tokenizer: Any


def reference_dataset(params, prepare_example):
    """One row per (train segment, task), mapped by `prepare_example` as the blog maps its dataset."""
    from datasets import Dataset

    segments = common.split_segments(params, ("train",))
    rows = common.reference_rows(segments)
    tasks = [("transcribe", i) for i in range(len(segments))] + [
        ("translate", i) for i in range(len(segments)) if segments[i].translation]
    dataset = Dataset.from_dict({**{k: [rows[k][i] for _, i in tasks] for k in rows}, "task": [t for t, _ in tasks]})
    return dataset.map(prepare_example, remove_columns=dataset.column_names)


def reference_trainer(params, hp, model, dataset, collator, name: str):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    args = Seq2SeqTrainingArguments(
        output_dir=str(params.paths.root / f"reference-{name}"), per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum, learning_rate=hp.learning_rate, warmup_steps=hp.warmup_ratio,
        lr_scheduler_type="linear", num_train_epochs=1, eval_strategy="no", save_strategy="no",
        logging_steps=hp.logging_steps, report_to="none", seed=params.seed, disable_tqdm=True,
        dataloader_num_workers=hp.dataloader_workers, use_cpu=not torch.cuda.is_available(),
        **precision.trainer_flags(hp.precision))
    return Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)


def whisper_reference(params) -> tuple[float, int]:
    """The reference's samples/s and its number of examples."""
    bundle = families.get("whisper").load(params.whisper)
    model, tokenizer, extractor = bundle.model, bundle.tokenizer, bundle.feature_extractor

    def prepare_dataset(row):
        tokenizer.set_prefix_tokens(language=whisper.SOURCE_LANGUAGE, task=row["task"], predict_timestamps=False)
        text = row["transcript"] if row["task"] == "transcribe" else row["translation"]
        return {"input_features": extractor(common.decode_row(row), sampling_rate=16_000).input_features[0],
                "labels": tokenizer(text).input_ids}

    dataset = reference_dataset(params, prepare_dataset)
    collator = DataCollatorSpeechSeq2SeqWithPadding(bundle.processor, model.config.decoder_start_token_id)
    trainer = reference_trainer(params, params.whisper, model, dataset, collator, "whisper")
    return trainer.train().metrics["train_samples_per_second"], len(dataset)


def e2e_reference(params) -> tuple[float, int]:
    hp = params.e2e
    torch.manual_seed(params.seed)  # the adapter's random start, as ours gets it
    bundle = families.get("e2e").load(hp)
    model, extractor, tokenizer = bundle.model, bundle.feature_extractor, bundle.tokenizer
    model.freeze_feature_encoder()  # the example script's --freeze_feature_encoder (on by default)

    def prepare_dataset(row):
        tokenizer.tgt_lang = e2e.LANGUAGE_CODES[row["task"]]
        text = row["transcript"] if row["task"] == "transcribe" else row["translation"]
        return {"input_values": extractor(common.decode_row(row), sampling_rate=16_000).input_values[0],
                "labels": tokenizer(text_target=text).input_ids}

    dataset = reference_dataset(params, prepare_dataset)
    collator = DataCollatorSpeechSeq2SeqWithPadding(Processor(extractor, tokenizer), e2e.MBART_DECODER_START)
    trainer = reference_trainer(params, hp, model, dataset, collator, "e2e")
    return trainer.train().metrics["train_samples_per_second"], len(dataset)


def main() -> None:
    params = common.bench_params("train", OVERRIDES)
    whisper_ours = train.train(params, "whisper")
    whisper_ref, whisper_examples = whisper_reference(params)
    e2e_ours = train.train(params, "e2e")
    e2e_ref, e2e_examples = e2e_reference(params)
    assert whisper_ours["examples"]["train"] == whisper_examples and e2e_ours["examples"]["train"] == e2e_examples
    common.report("train", [
        common.Row(f"Whisper training ({whisper_examples} examples, batch {params.whisper.batch_size}, fp32)",
                   "samples/s", whisper_ours["train_samples_per_second"], whisper_ref),
        common.Row(f"E2E training ({e2e_examples} examples, batch {params.e2e.batch_size}, fp32)",
                   "samples/s", e2e_ours["train_samples_per_second"], e2e_ref),
    ], {"overrides": OVERRIDES})


if __name__ == "__main__":
    main()
