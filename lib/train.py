"""Stage 03: Whisper fine-tuned multitask, the code-switched transcript and the English translation of each segment.

Each segment gives two examples, `<|startoftranscript|><|vi|><|transcribe|><|notimestamps|>` + transcript and
`...<|vi|><|translate|>...` + translation; the language is forced, never detected (detection fails on code-switched
audio). Training runs on Hugging Face's Seq2SeqTrainer, so `accelerate launch` spreads it over GPUs or machines:

    python -m lib.train --params params/dev.yaml whisper
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

from lib import atomic, config, features, metrics, models, whisper_data

log = logging.getLogger("lib.train")


# --- trainer --------------------------------------------------------------------------------------------------------

def make_trainer_class():
    from transformers import Seq2SeqTrainer

    class MultitaskTrainer(Seq2SeqTrainer):
        """Evaluates each task on its own eval set, forcing the language and that task at generation, and scores
        transcripts by WER and CER, translations by BLEU and chrF."""

        task_being_evaluated: str | None = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            task = next((t for t in whisper_data.TASKS if metric_key_prefix.endswith(f"_{t}")), None)
            if task:
                gen_kwargs = {**gen_kwargs, **whisper_data.generation_kwargs(self.model, task)}
                self.task_being_evaluated = task
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                                    **gen_kwargs)

        def score(self, prediction) -> dict[str, float]:
            tokenizer = self.processing_class.tokenizer
            label_ids = np.where(prediction.label_ids != -100, prediction.label_ids, tokenizer.pad_token_id)
            pred_ids = np.where(prediction.predictions != -100, prediction.predictions, tokenizer.pad_token_id)
            hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
            refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
            if self.task_being_evaluated == "translate":
                return {"bleu": metrics.bleu(refs, hyps), "chrf": metrics.chrf(refs, hyps)}
            return {"wer": metrics.wer(refs, hyps), "cer": metrics.cer(refs, hyps)}

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
    """Fine-tune Whisper on the cached features; write checkpoints, final/, and results/. Returns the summary."""
    from accelerate import PartialState
    from transformers import Seq2SeqTrainingArguments, set_seed

    on_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)  # cpu=True: several CPU processes form a gloo group instead of running alone
    log.info("process %d of %d started (device %s)", state.process_index, state.num_processes, state.device)
    hp, paths = params.whisper, params.paths
    set_seed(params.seed)
    with state.main_process_first():  # one process builds the demo model and the caches, the others reuse them
        model, processor = models.whisper_for_run(params)
        cached = features.prepare_whisper(paths.splits, paths.features, processor.feature_extractor)
    window_frames = models.whisper_window_frames(processor)
    window_seconds = processor.feature_extractor.chunk_length
    train_set, val_set = cached["train"].load(), cached["val"].load()
    train_examples, filtered = whisper_data.multitask_examples(train_set, processor.tokenizer, window_seconds, "train")
    val_examples, val_filtered = whisper_data.multitask_examples(val_set, processor.tokenizer, window_seconds, "val")
    eval_sets = {}
    for task in whisper_data.TASKS:
        chosen = [e for e in val_examples if e.task == task]
        eval_sets[task] = whisper_data.WhisperExamples(val_set, chosen[:hp.eval_segments] if hp.eval_segments else chosen)

    model.config.use_cache = False
    collator = whisper_data.WhisperCollator(processor.tokenizer, model.config.decoder_start_token_id, window_frames)
    args = Seq2SeqTrainingArguments(
        output_dir=str(paths.whisper), per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.eval_batch_size, gradient_accumulation_steps=hp.grad_accum,
        learning_rate=hp.learning_rate, warmup_steps=hp.warmup_ratio, lr_scheduler_type="linear",  # < 1: a ratio
        num_train_epochs=hp.epochs, activation_checkpointing=hp.gradient_checkpointing,
        eval_strategy="steps", eval_steps=hp.checkpoint_steps, save_strategy="steps", save_steps=hp.checkpoint_steps,
        logging_steps=hp.logging_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="transcribe_wer", greater_is_better=False, predict_with_generate=True,
        generation_max_length=hp.generation_max_length, generation_num_beams=1,
        dataloader_num_workers=hp.dataloader_workers, report_to="none", seed=params.seed,
        disable_tqdm=True, use_cpu=on_cpu, **precision_flags(hp.precision),
    )
    trainer_class = make_trainer_class()
    trainer = trainer_class(model=model, args=args, train_dataset=whisper_data.WhisperExamples(train_set, train_examples),
                            eval_dataset=eval_sets, data_collator=collator, processing_class=processor)
    trainer.compute_metrics = trainer.score

    resume_from = last_complete_checkpoint(paths.whisper) if hp.resume and paths.whisper.exists() else None
    results_file = paths.results / "whisper_train.json"
    previous = json.loads(results_file.read_text()) if resume_from and results_file.exists() else {}
    untrained = previous.get("untrained") or trainer.evaluate(metric_key_prefix="untrained")
    log.info("%s", f"resuming from {resume_from}" if resume_from else "training from the start")
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - began
    final = trainer.evaluate(metric_key_prefix="final")

    summary = {
        "model": hp.model, "parameters": models.count_parameters(model), "world_size": args.world_size,
        "resumed_from": resume_from.name if resume_from else None, "global_step": trainer.state.global_step,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
        "examples": {"train": len(train_examples), **{f"val_{t}": len(s) for t, s in eval_sets.items()}},
        "filtered": len(filtered) + len(val_filtered),
        "train_seconds": round(seconds, 1), "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        **({k: previous[k] for k in ("train_seconds", "train_samples_per_second")}  # a finished run, rerun: no new steps
           if previous and resume_from and trainer.state.global_step == int(resume_from.name.split("-")[1]) else {}),
        "peak_memory_mb": round(peak_memory_mb() or 0, 1), "precision": hp.precision,
        "device": str(state.device), "untrained": untrained, "final": final,
    }
    staging, final_dir = paths.whisper / "final.partial", paths.whisper / "final"
    trainer.save_model(str(staging))  # on every process: sharded setups gather the weights together
    if state.is_main_process:
        processor.save_pretrained(staging)
        shutil.rmtree(final_dir, ignore_errors=True)
        staging.rename(final_dir)  # final/ is the old model or the new one, never half of one
        atomic.write_json(results_file, summary)
        atomic.write_json(paths.results / "whisper_history.json", trainer.state.log_history)
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
    cached = features.prepare_whisper(params.paths.splits, params.paths.features, processor.feature_extractor)
    val = cached["val"].load()
    rows = []
    for task in whisper_data.TASKS:
        column = "transcript" if task == "transcribe" else "translation"
        picked = [i for i in range(len(val)) if val[i][column]][:per_task]
        mels = [np.asarray(val[i]["input_features"]) for i in picked]
        hyps = whisper_data.decode(model, processor, mels, task, params.whisper.generation_max_length)
        rows += [{"task": task, "id": val[i]["id"], "reference": val[i][column], "hypothesis": h}
                 for i, h in zip(picked, hyps)]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("model", choices=["whisper"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    overrides: dict = {}
    for item in args.set:
        overrides = config.deep_merge(overrides, config.parse_override(item))
    params = config.load(args.params, overrides)
    summary = train_whisper(params)
    print(json.dumps({k: summary[k] for k in ("global_step", "best_checkpoint", "world_size", "resumed_from")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
