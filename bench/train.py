"""Training throughput at the size users train: OpenAI's whisper-base (imported from PyPI) and the demo's tiny E2E
model, ours against the reference recipe, on the same examples for the same optimizer steps.

Every case trains one epoch over one demo segment per speaker (the train split of that slice: two examples per
segment, transcript and translation), fp32, learning rate, schedule and seed alike, and reports examples/s and
seconds of speech trained per second, timed on both sides by the same clock from the start of training to the end of
its last optimizer step (our runs then evaluate and write a checkpoint, which the reference does not; that time is
in the JSON, not in the ratio):
- reference: the "Fine-Tune Whisper" blog's recipe (features per example in `datasets.map`, its collator,
  `Seq2SeqTrainer`; for the E2E model `run_speech_recognition_seq2seq.py`'s defaults), batches of 8 examples;
- ours, one example per row (`share_encoder: false`), batches of 8 examples: what the data path alone changes;
- ours, one encoder pass per segment (`share_encoder: true`), batches of 4 segments = 8 examples;
- the same with a frozen encoder, and with LoRA adapters (rank 32 on every attention and feed-forward projection).
Then the one-example-per-row and the shared-pass models, trained on the same examples, are scored on 16 val
segments of the full demo split: the shared pass must not cost accuracy.

    python -m bench.train
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench import common
from lib import demo_corpus, families, precision
from lib.families import e2e, whisper

SLICE = 1  # demo segments per speaker for whisper-base
E2E_SLICE = 4  # and for the tiny E2E model
CASES = {  # name -> whisper params section overrides
    "one example per row": {"share_encoder": False, "batch_size": 8},
    "one encoder pass per segment": {"share_encoder": True, "batch_size": 4},
    "shared pass, frozen encoder": {"share_encoder": True, "batch_size": 4, "freeze_encoder": True},
    "shared pass, LoRA rank 32": {"share_encoder": True, "batch_size": 4, "lora_rank": 32, "learning_rate": 1e-3},
}
COMMON = {"epochs": 1, "checkpoint_steps": 100_000, "eval_segments": 2, "resume": False, "logging_steps": 1,
          "learning_rate": 1e-4, "grad_accum": 1}
WHISPER = {**COMMON, "timestamp_share": 0.0}  # labels as the reference writes them


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


def reference_run(params, hp, model, dataset, collator, name: str) -> dict:
    """Train as the reference does, timed on the `step_clock`."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    args = Seq2SeqTrainingArguments(
        output_dir=str(params.paths.root / f"reference-{name}"), per_device_train_batch_size=8,
        gradient_accumulation_steps=hp.grad_accum, learning_rate=hp.learning_rate, warmup_steps=hp.warmup_ratio,
        lr_scheduler_type="linear", num_train_epochs=1, eval_strategy="no", save_strategy="no",
        logging_steps=hp.logging_steps, report_to="none", seed=params.seed, disable_tqdm=True,
        dataloader_num_workers=hp.dataloader_workers, use_cpu=not torch.cuda.is_available(),
        **precision.trainer_flags(precision.training(hp.precision)))
    clock = common.step_clock()
    output = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                            callbacks=[clock]).train()
    return {"examples": len(dataset), "seconds": round(clock.seconds, 1), "steps": output.global_step}


def whisper_reference(params) -> dict:
    # imports whisper-base on first use
    bundle = families.get("whisper").starting_model(params.whisper, params.paths, params.seed)
    model, tokenizer, extractor = bundle.model, bundle.tokenizer, bundle.feature_extractor

    def prepare_dataset(row):
        tokenizer.set_prefix_tokens(language=whisper.SOURCE_LANGUAGE, task=row["task"], predict_timestamps=False)
        text = row["transcript"] if row["task"] == "transcribe" else row["translation"]
        return {"input_features": extractor(common.decode_row(row), sampling_rate=16_000).input_features[0],
                "labels": tokenizer(text).input_ids}

    dataset = reference_dataset(params, prepare_dataset)
    collator = DataCollatorSpeechSeq2SeqWithPadding(bundle.processor, model.config.decoder_start_token_id)
    return reference_run(params, params.whisper, model, dataset, collator, "whisper")


def e2e_reference(params) -> dict:
    hp = params.e2e
    # the adapter's random start from the seed, as ours gets it
    bundle = families.get("e2e").starting_model(hp, params.paths, params.seed)
    model, extractor, tokenizer = bundle.model, bundle.feature_extractor, bundle.tokenizer
    model.freeze_feature_encoder()  # the example script's --freeze_feature_encoder (on by default)

    def prepare_dataset(row):
        tokenizer.tgt_lang = e2e.LANGUAGE_CODES[row["task"]]
        text = row["transcript"] if row["task"] == "transcribe" else row["translation"]
        return {"input_values": extractor(common.decode_row(row), sampling_rate=16_000).input_values[0],
                "labels": tokenizer(text_target=text).input_ids}

    dataset = reference_dataset(params, prepare_dataset)
    collator = DataCollatorSpeechSeq2SeqWithPadding(Processor(extractor, tokenizer), e2e.MBART_DECODER_START)
    return reference_run(params, hp, model, dataset, collator, "e2e")


def ours(params, name: str) -> dict:
    summary, seconds = common.timed_train(params, name)
    return {"examples": summary["examples"]["train"], "steps": summary["global_step"], "seconds": round(seconds, 1),
            "seconds_with_closing_eval_and_checkpoint": summary["train_seconds"]}


def main() -> None:
    manifest = demo_corpus.subset(common.BENCH_DIR / f"demo-{SLICE}-per-speaker.tsv", SLICE)
    reference_params = common.bench_params("train-reference", {"manifest": str(manifest), "whisper": WHISPER},
                                           whisper_base=True)
    reference = whisper_reference(reference_params)
    audio = common.trained_speech(reference_params)
    runs, rows = {"reference": reference}, []
    for case, overrides in CASES.items():
        params = common.bench_params(f"train-{len(runs)}", {"manifest": str(manifest),
                                                              "whisper": {**WHISPER, **overrides}}, whisper_base=True)
        runs[case] = ours(params, "whisper")
        assert runs[case]["examples"] == reference["examples"], "both sides must train the same examples"
        if case in ("one example per row", "one encoder pass per segment"):
            runs[case]["val"] = common.val_scores(params.paths.model("whisper") / "final", params.paths.root / "eval")
        rows.append(common.Row(f"whisper-base training, {case} ({reference['examples']} examples)", "examples/s",
                               runs[case]["examples"] / runs[case]["seconds"],
                               reference["examples"] / reference["seconds"]))
        rows.append(common.Row(f"whisper-base training, {case}", "speech seconds/s", audio / runs[case]["seconds"],
                               audio / reference["seconds"]))
    e2e_slice = demo_corpus.subset(common.BENCH_DIR / f"demo-{E2E_SLICE}-per-speaker.tsv", E2E_SLICE)
    e2e_params = common.bench_params("train-e2e", {"manifest": str(e2e_slice), "e2e": {
        **COMMON, "batch_size": 4, "learning_rate": 1e-3}})
    e2e_ours, e2e_ref = ours(e2e_params, "e2e"), e2e_reference(e2e_params)
    runs["e2e, one encoder pass per segment"], runs["e2e reference"] = e2e_ours, e2e_ref
    rows.append(common.Row(f"tiny E2E training, one encoder pass per segment ({e2e_ref['examples']} examples)",
                           "examples/s", e2e_ours["examples"] / e2e_ours["seconds"],
                           e2e_ref["examples"] / e2e_ref["seconds"]))
    for case in ("one example per row", "one encoder pass per segment"):
        wer = runs[case]["val"]["wer"]
        print(f"val WER after the same {reference['examples']} examples, {case}: {wer['value']} {wer['ci95']}")
    common.report("train", rows, {"runs": runs, "slice": f"{SLICE} segment per speaker",
                                  "training_audio_seconds": round(audio, 1), "common": WHISPER, "cases": CASES})


if __name__ == "__main__":
    main()
