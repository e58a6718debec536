"""Stages 03 and 04: multitask fine-tuning, the code-switched transcript and the English translation of each segment.

Whisper (03): each segment gives `<|startoftranscript|><|vi|><|transcribe|><|notimestamps|>` + transcript and
`...<|vi|><|translate|>...` + translation; the language is forced, never detected (detection fails on code-switched
audio). wav2vec2 + mBART-50 (04): `vi_VN` + transcript and `en_XX` + translation (see lib.e2e_data). Both run on one
loop over Hugging Face's Seq2SeqTrainer, so `accelerate launch` spreads them over GPUs or machines:

    python -m lib.train --params params/dev.yaml whisper
    python -m lib.train --params params/dev.yaml e2e
    accelerate launch --multi_gpu --num_processes 2 -m lib.train --params params/prod.yaml whisper

Without a GPU the same `--multi_gpu` launch (torchrun underneath) runs the processes on the CPU over gloo;
`accelerate launch --cpu` would start one process only.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import atomic, config, e2e_data, features, metrics, models, whisper_data

log = logging.getLogger("lib.train")


# --- trainer --------------------------------------------------------------------------------------------------------

def make_trainer_class():
    from transformers import Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class MultitaskTrainer(Seq2SeqTrainer):
        """Evaluates each task on its own eval set with that task forced at generation (`generation_kwargs`), and
        scores transcripts by WER and CER, translations by BLEU and chrF."""

        task_being_evaluated: str | None = None
        generation_kwargs = None  # task -> generate() keyword arguments, set by the caller
        text_tokenizer = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            task = next((t for t in whisper_data.TASKS if metric_key_prefix.endswith(f"_{t}")), None)
            if task:
                gen_kwargs = {**gen_kwargs, **self.generation_kwargs(task)}
                self.task_being_evaluated = task
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                                    **gen_kwargs)

        def score(self, prediction) -> dict[str, float]:
            tokenizer = self.text_tokenizer
            label_ids = np.where(prediction.label_ids != -100, prediction.label_ids, tokenizer.pad_token_id)
            pred_ids = np.where(prediction.predictions != -100, prediction.predictions, tokenizer.pad_token_id)
            hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
            refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
            if self.task_being_evaluated == "translate":
                return {"bleu": metrics.bleu(refs, hyps), "chrf": metrics.chrf(refs, hyps)}
            return {"wer": metrics.wer(refs, hyps), "cer": metrics.cer(refs, hyps)}

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
                # known lengths: no pass over the whole dataset to measure them
                return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            lengths=dataset.lengths)
            return super()._get_train_sampler(train_dataset)

        def _get_eval_sampler(self, eval_dataset):
            if self.args.train_sampling_strategy == "group_by_length" and hasattr(eval_dataset, "lengths"):
                return LengthGroupedSampler(self.args.eval_batch_size, lengths=eval_dataset.lengths)
            return super()._get_eval_sampler(eval_dataset)

    return MultitaskTrainer


def precision_flags(precision: str) -> dict[str, bool]:
    """Trainer flags for the params' precision; fp16/bf16 need a GPU, so the CPU trains in fp32."""
    if precision == "fp32":
        return {}
    if not torch.cuda.is_available():
        log.warning("%s needs a GPU; training in fp32 on the CPU", precision)
        return {}
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("precision bf16: this GPU does not support bfloat16; use fp16 in the params")
    return {precision: True}


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint-N whose trainer state was written (the Trainer writes it last); partial ones, left by a
    crash during a save, are removed."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for candidate in reversed(checkpoints):
        if (candidate / "trainer_state.json").exists():
            return candidate
        log.warning("removing incomplete checkpoint %s (the run stopped while saving it)", candidate)
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def peak_memory_mb() -> float | None:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --- the stage ------------------------------------------------------------------------------------------------------

def train_whisper(params: config.Params) -> dict:
    """Fine-tune Whisper on the cached log-mels; write checkpoints, whisper/final and results/. Returns the summary."""
    state = _start()
    hp, paths = params.whisper, params.paths
    with state.main_process_first():  # one process builds the demo model and the caches, the others reuse them
        model, processor = models.whisper_for_run(params)
        cached = features.prepare_whisper(paths.splits, paths.features, processor.feature_extractor)
    window_seconds = processor.feature_extractor.chunk_length
    train_set, val_set = cached["train"].load(), cached["val"].load()
    train_examples, filtered = whisper_data.multitask_examples(train_set, processor.tokenizer, window_seconds, "train")
    val_examples, val_filtered = whisper_data.multitask_examples(val_set, processor.tokenizer, window_seconds, "val")
    model.config.use_cache = False
    return _run("whisper", params, hp, state, model, processor, processor.tokenizer, [processor],
                whisper_data.WhisperExamples(train_set, train_examples),
                _eval_sets(whisper_data.WhisperExamples, val_set, val_examples, hp.eval_segments),
                whisper_data.WhisperCollator(processor.tokenizer, model.config.decoder_start_token_id,
                                             models.whisper_window_frames(processor)),
                lambda task: whisper_data.generation_kwargs(model, task), "random",
                {"filtered": len(filtered) + len(val_filtered)})


def train_e2e(params: config.Params) -> dict:
    """Fine-tune wav2vec2 + mBART-50 on the cached waveforms; write checkpoints, e2e/final and results/."""
    state = _start()
    hp, paths = params.e2e, params.paths
    with state.main_process_first():
        model, feature_extractor, tokenizer = models.e2e_for_run(params)
        cached = features.prepare_waveforms(paths.splits, paths.features, feature_extractor.sampling_rate)
    models.freeze_for_training(model, lna=hp.lna)
    model.config.decoder.use_cache = False
    max_tokens = model.config.decoder.max_position_embeddings
    train_set, val_set = cached["train"].load(), cached["val"].load()
    train_examples, filtered = e2e_data.multitask_examples(train_set, tokenizer, max_tokens, "train")
    val_examples, val_filtered = e2e_data.multitask_examples(val_set, tokenizer, max_tokens, "val")
    return _run("e2e", params, hp, state, model, tokenizer, tokenizer, [tokenizer, feature_extractor],
                e2e_data.WaveformExamples(train_set, train_examples),
                _eval_sets(e2e_data.WaveformExamples, val_set, val_examples, hp.eval_segments),
                e2e_data.WaveformCollator(feature_extractor, tokenizer),
                lambda task: e2e_data.generation_kwargs(tokenizer, task), "group_by_length",
                {"filtered": len(filtered) + len(val_filtered), "lna": hp.lna})


def _start():
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: CPU processes form a gloo group, not singletons
    log.info("process %d of %d started (device %s)", state.process_index, state.num_processes, state.device)
    return state


def _eval_sets(dataset_class, val_set, examples, limit: int) -> dict:
    sets = {}
    for task in whisper_data.TASKS:
        chosen = [e for e in examples if e.task == task]
        sets[task] = dataset_class(val_set, chosen[:limit] if limit else chosen)
    return sets


def _run(name: str, params: config.Params, hp: config.TrainingParams, state, model, processing_class, tokenizer,
         artifacts: list, train_dataset, eval_sets: dict, collator, generation_kwargs, sampling: str,
         extra: dict) -> dict:
    """The training loop both model families share: Seq2SeqTrainer, resume, untrained and final scores, results."""
    from transformers import Seq2SeqTrainingArguments, set_seed

    set_seed(params.seed)
    out_dir, results = params.paths.root / name, params.paths.results
    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.eval_batch_size, gradient_accumulation_steps=hp.grad_accum,
        learning_rate=hp.learning_rate, warmup_steps=hp.warmup_ratio, lr_scheduler_type="linear",  # < 1: a ratio
        num_train_epochs=hp.epochs, activation_checkpointing=hp.gradient_checkpointing,
        eval_strategy="steps", eval_steps=hp.checkpoint_steps, save_strategy="steps", save_steps=hp.checkpoint_steps,
        logging_steps=hp.logging_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="transcribe_wer", greater_is_better=False, predict_with_generate=True,
        generation_max_length=hp.generation_max_length, generation_num_beams=1, train_sampling_strategy=sampling,
        dataloader_num_workers=hp.dataloader_workers, report_to="none", seed=params.seed,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), **precision_flags(hp.precision),
    )
    trainer = make_trainer_class()(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_sets,
                                   data_collator=collator, processing_class=processing_class)
    trainer.generation_kwargs, trainer.text_tokenizer = generation_kwargs, tokenizer
    trainer.compute_metrics = trainer.score

    resume_from = last_complete_checkpoint(out_dir) if hp.resume and out_dir.exists() else None
    results_file = results / f"{name}_train.json"
    previous = json.loads(results_file.read_text()) if resume_from and results_file.exists() else {}
    untrained = previous.get("untrained") or trainer.evaluate(metric_key_prefix="untrained")
    log.info("%s", f"resuming from {resume_from}" if resume_from else "training from the start")
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - began
    final = trainer.evaluate(metric_key_prefix="final")
    no_new_steps = previous and resume_from and trainer.state.global_step == int(resume_from.name.split("-")[1])
    summary = {
        "model": {"whisper": getattr(hp, "model", None), "encoder": getattr(hp, "encoder", None),
                  "decoder": getattr(hp, "decoder", None)},
        "parameters": models.count_parameters(model), "world_size": args.world_size,
        "resumed_from": resume_from.name if resume_from else None, "global_step": trainer.state.global_step,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
        "examples": {"train": len(train_dataset), **{f"val_{t}": len(s) for t, s in eval_sets.items()}}, **extra,
        "train_seconds": previous["train_seconds"] if no_new_steps else round(seconds, 1),
        "train_samples_per_second": previous["train_samples_per_second"] if no_new_steps
        else output.metrics.get("train_samples_per_second"),
        "peak_memory_mb": round(peak_memory_mb() or 0, 1), "precision": hp.precision,
        "device": str(state.device), "untrained": untrained, "final": final,
    }
    staging, final_dir = out_dir / "final.partial", out_dir / "final"
    trainer.save_model(str(staging))  # on every process: sharded setups gather the weights together
    if state.is_main_process:
        for artifact in artifacts:
            artifact.save_pretrained(staging)
        shutil.rmtree(final_dir, ignore_errors=True)
        staging.rename(final_dir)  # final/ is the old model or the new one, never half of one
        atomic.write_json(results_file, summary)
        atomic.write_json(results / f"{name}_history.json", trainer.state.log_history)
    return {**summary, "history": trainer.state.log_history}


def summary_table(summary: dict) -> pd.DataFrame:
    """Val scores per task and metric, untrained against the kept checkpoint."""
    rows = []
    for key, value in summary["final"].items():
        _, task, metric = (key.split("_", 2) + ["", ""])[:3]
        if task in whisper_data.TASKS and metric in ("wer", "cer", "bleu", "chrf", "loss"):
            rows.append({"task": task, "metric": metric, "untrained": summary["untrained"][f"untrained_{task}_{metric}"],
                         "trained": value})
    return pd.DataFrame(rows).set_index(["task", "metric"]).round(2)


def whisper_samples(params: config.Params, per_task: int = 4) -> pd.DataFrame:
    """The first val segments of each task decoded by `whisper/final`, beside their references."""
    model, processor = models.load_whisper(params.paths.whisper / "final")
    val = features.prepare_whisper(params.paths.splits, params.paths.features, processor.feature_extractor,
                                   splits=("val",))["val"]
    return _samples(val.load(), "input_features", per_task, lambda inputs, task: whisper_data.decode(
        model, processor, inputs, task, params.whisper.generation_max_length))


def e2e_samples(params: config.Params, per_task: int = 4) -> pd.DataFrame:
    """The first val segments of each task decoded by `e2e/final`, beside their references."""
    model, feature_extractor, tokenizer = models.load_e2e_final(params.paths.e2e / "final")
    val = features.prepare_waveforms(params.paths.splits, params.paths.features, feature_extractor.sampling_rate,
                                     splits=("val",))["val"]
    return _samples(val.load(), "input_values", per_task, lambda inputs, task: e2e_data.decode(
        model, feature_extractor, tokenizer, inputs, task, params.e2e.generation_max_length))


def _samples(val, column: str, per_task: int, decode) -> pd.DataFrame:
    rows = []
    for task in whisper_data.TASKS:
        text = "transcript" if task == "transcribe" else "translation"
        picked = [i for i in range(len(val)) if val[i][text]][:per_task]
        hyps = decode([np.asarray(val[i][column], np.float32) for i in picked], task)
        rows += [{"task": task, "id": val[i]["id"], "reference": val[i][text], "hypothesis": h}
                 for i, h in zip(picked, hyps)]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("model", choices=["whisper", "e2e"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    overrides: dict = {}
    for item in args.set:
        overrides = config.deep_merge(overrides, config.parse_override(item))
    params = config.load(args.params, overrides)
    summary = (train_whisper if args.model == "whisper" else train_e2e)(params)
    print(json.dumps({k: summary[k] for k in ("global_step", "best_checkpoint", "world_size", "resumed_from")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
