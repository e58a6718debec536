"""Stages 03 and 04: multitask fine-tuning, the code-switched transcript and the English translation of each segment.

One loop for every model family (lib.families): the family gives the starting model, its cached inputs, its examples
(one per segment, or packed window, and task) and how it decodes; Hugging Face's Seq2SeqTrainer runs the loop, so
`accelerate launch` spreads it over GPUs or machines:

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import adapters, atomic, augment, config, decoding, families, metrics, model_card, precision, tasks

log = logging.getLogger("lib.train")


# --- trainer --------------------------------------------------------------------------------------------------------

def make_trainer(family: families.Family, bundle: families.Bundle, hp: config.TrainingParams, **kwargs):
    """A Seq2SeqTrainer that scores each task's val set with that task forced at generation: transcripts by WER and
    CER, translations by BLEU and chrF. `eval_dataset` is a dict of per-task `tasks.ExampleSet`s."""
    from transformers import Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class MultitaskTrainer(Seq2SeqTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss):  # the stock Trainer would filter it out of the log and train on
                raise TrainingDiverged(family.name, loss.item(), self.state.global_step + 1,
                                       last_complete_checkpoint(Path(self.args.output_dir)))
            return loss

        def compute_loss_context_manager(self):
            # accelerate autocasts the model's forward, but `share_encoder`'s pre-hook runs the encoder before it:
            # autocast the whole call, so the encoder too computes in the params' precision
            stack = super().compute_loss_context_manager()
            stack.enter_context(self.accelerator.autocast())
            return stack

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            # generate() runs the encoder outside the forward accelerate autocasts, and the val loss would run it
            # again: one encoder pass, in the training's precision, for both
            with self.accelerator.autocast():
                if self.args.predict_with_generate and not prediction_loss_only:
                    inputs = self._prepare_inputs(inputs)
                    with torch.no_grad():
                        encoded = family.encode(bundle, inputs)
                    inputs = {k: v for k, v in inputs.items() if k != family.input_column} | encoded
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                               **gen_kwargs)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            dataset = self.eval_dataset.get(eval_dataset) if isinstance(eval_dataset, str) else eval_dataset
            if isinstance(dataset, tasks.ExampleSet):
                options = decoding.DecodingOptions.for_validation(dataset.task, hp)
                gen_kwargs = {**gen_kwargs, **family.generation_kwargs(bundle, options)}
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                                    **gen_kwargs)

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                            metric_key_prefix="eval"):
            task = getattr(dataloader.dataset, "task", None)
            output = super().evaluation_loop(dataloader, description, prediction_loss_only=task is None,
                                             ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            if task is not None:
                output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in score(task, output).items()})
            return output

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy == "group_by_length":
                # known lengths: no pass over the whole dataset to measure them
                return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            lengths=dataset.lengths)
            return super()._get_train_sampler(train_dataset)

        def _get_eval_sampler(self, eval_dataset):
            if self.args.train_sampling_strategy == "group_by_length":
                return LengthGroupedSampler(self.args.eval_batch_size, lengths=eval_dataset.lengths)
            return super()._get_eval_sampler(eval_dataset)

    def score(task: str, prediction) -> dict[str, float]:
        tokenizer = bundle.tokenizer
        label_ids = np.where(prediction.label_ids != -100, prediction.label_ids, tokenizer.pad_token_id)
        pred_ids = np.where(prediction.predictions != -100, prediction.predictions, tokenizer.pad_token_id)
        hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        if task == "translate":
            return {"bleu": metrics.bleu(refs, hyps), "chrf": metrics.chrf(refs, hyps)}
        return {"wer": metrics.wer(refs, hyps), "cer": metrics.cer(refs, hyps)}

    return MultitaskTrainer(model=bundle.model, data_collator=lambda batch: family.collate(bundle, batch), **kwargs)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops before the optimizer steps on it."""

    def __init__(self, name: str, loss: float, step: int, checkpoint: Path | None):
        kept = (f"the last good checkpoint, {checkpoint}, is kept and a rerun resumes from it" if checkpoint else
                "no checkpoint had been saved yet")
        super().__init__(
            f"{name}: the training loss is {loss} at optimizer step {step}; training stopped there ({kept}). "
            "Try a lower learning_rate, bf16 instead of fp16 where the GPU has it (fp16 overflows), a longer "
            "warmup_ratio, or a lower max_grad_norm (gradient clipping); a NaN from the first steps points at the "
            "data (a corrupt audio file, an empty label).")
        self.step, self.loss, self.checkpoint = step, loss, checkpoint


def progress_callbacks(name: str, tensorboard_dir: Path) -> list:
    """What a multi-hour run shows while it runs: a line per logging step (step of total, loss, learning rate,
    elapsed time and ETA) and per checkpoint (val scores), and TensorBoard curves in `tensorboard_dir`; and each
    checkpoint made shareable."""
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    class ProgressLine(TrainerCallback):
        began, first_step = 0.0, 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.began, self.first_step = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            elapsed = time.perf_counter() - self.began
            if "loss" in logs:
                done = state.global_step - self.first_step
                eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
                print(f"{name} step {state.global_step}/{state.max_steps} ({state.global_step / state.max_steps:.0%})"
                      f" loss {logs['loss']:.3f} lr {logs.get('learning_rate', 0):.2e} elapsed "
                      f"{_clock(elapsed)} ETA {_clock(eta)}", flush=True)
            scores = {k: v for k, v in logs.items() if k.rsplit("_", 1)[-1] in ("wer", "cer", "bleu", "chrf", "loss")
                      and "_" in k and not k.startswith("train")}
            if scores:
                print(f"{name} step {state.global_step} val: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()),
                      flush=True)

    class RunTensorBoard(TensorBoardCallback):
        def __init__(self):
            super().__init__()
            self.logging_dir = str(tensorboard_dir)

    class ShareableCheckpoints(TrainerCallback):
        """Each checkpoint's files with the umask's permissions (transformers writes the weights owner-only)."""

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.exists():
                atomic.make_shareable(checkpoint)

    return [ProgressLine(), RunTensorBoard(), ShareableCheckpoints()]


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


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
    """The GPU memory PyTorch allocated at most; on the CPU, the process's peak resident memory since it started
    (loading and earlier stages in the same kernel included). None where neither can be read (Windows CPU)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


# --- the stage ------------------------------------------------------------------------------------------------------

def train(params: config.Params, name: str, callbacks: Sequence = ()) -> dict:
    """Fine-tune the model family `name` on its cached inputs; write checkpoints, `<name>/final` and results/.
    Returns the summary, with the loss and eval history. `callbacks`: more TrainerCallbacks (the benchmarks' clock)."""
    from accelerate import PartialState
    from transformers import PrinterCallback, Seq2SeqTrainingArguments, set_seed

    family, hp = families.get(name), params.section(name)
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: CPU processes form a gloo group, not singletons
    log.info("process %d of %d started (device %s)", state.process_index, state.num_processes, state.device)
    with state.main_process_first():  # one process builds the demo models and the caches, the others reuse them
        bundle = family.starting_model(hp, params.paths, params.seed)
        train_set, train_examples, filtered = family.training_data(hp, params.paths, bundle, params.seed,
                                                                   params.noise_dir)
        val_set = family.prepare_features(params.paths, bundle, splits=("val",))["val"].load()
    family.plain_decoding(bundle, tasks.SOURCE_LANGUAGE)  # saved with every checkpoint and final/
    settings = {**family.setup_training(bundle, hp), **adapters.apply(family, bundle, hp)}
    val_examples, val_filtered = family.examples(bundle, val_set, "val")
    column = family.training_column(hp)
    noises = family.augmentation_noises(hp, params.paths, params.seed, params.noise_dir)
    augmented = family.training_transform(hp, bundle, augment.for_training(hp, noises, params.seed))
    if hp.share_encoder:
        train_dataset = tasks.SegmentSet(train_set, train_examples, column, augmented)
        families.share_encoder(family, bundle)
    else:
        train_dataset = tasks.ExampleSet(train_set, train_examples, column, transform=augmented)
    eval_sets = tasks.val_sets(val_set, val_examples, family.input_column, hp.eval_segments)

    set_seed(params.seed)
    out_dir, results = params.paths.model(name), params.paths.results
    computed = precision.training(hp.precision)
    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.eval_batch_size, gradient_accumulation_steps=hp.grad_accum,
        learning_rate=hp.learning_rate, warmup_steps=hp.warmup_ratio, lr_scheduler_type="linear",  # < 1: a ratio
        max_grad_norm=hp.max_grad_norm,
        num_train_epochs=hp.epochs, activation_checkpointing=hp.gradient_checkpointing,
        eval_strategy="steps", eval_steps=hp.checkpoint_steps, save_strategy="steps", save_steps=hp.checkpoint_steps,
        logging_steps=hp.logging_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="transcribe_wer", greater_is_better=False, predict_with_generate=True,
        train_sampling_strategy=family.sampling, dataloader_num_workers=hp.dataloader_workers, report_to="none",
        remove_unused_columns=False,  # the family's collator reads every field of its items (task_labels too)
        seed=params.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        **precision.trainer_flags(computed),
    )
    trainer = make_trainer(family, bundle, hp, args=args, train_dataset=train_dataset, eval_dataset=eval_sets,
                           processing_class=bundle.processor or bundle.tokenizer,
                           callbacks=[*progress_callbacks(name, params.paths.tensorboard / name), *callbacks])
    trainer.remove_callback(PrinterCallback)  # the progress line says it, with the ETA

    resume_from = last_complete_checkpoint(out_dir) if hp.resume and out_dir.exists() else None
    results_file = results / f"{name}_train.json"
    previous = json.loads(results_file.read_text()) if resume_from and results_file.exists() else {}
    untrained = previous.get("untrained") or trainer.evaluate(metric_key_prefix="untrained")
    log.info("%s", f"resuming from {resume_from}" if resume_from else "training from the start")
    start_epoch = json.loads((resume_from / "trainer_state.json").read_text())["epoch"] if resume_from else 0.0
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - began
    final = kept_scores(trainer.state) or trainer.evaluate(metric_key_prefix="final")
    no_new_steps = previous and resume_from and trainer.state.global_step == int(resume_from.name.split("-")[1])
    examples_per_second = train_dataset.example_count * (trainer.state.epoch - start_epoch) / \
        output.metrics["train_runtime"]
    summary = {
        "model": family.model_names(hp), "parameters": families.count_parameters(bundle.model),
        "world_size": args.world_size, "resumed_from": resume_from.name if resume_from else None,
        "global_step": trainer.state.global_step,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
        "examples": {"train": train_dataset.example_count, **{f"val_{t}": len(s) for t, s in eval_sets.items()}},
        "share_encoder": hp.share_encoder, "augmentation": augment.settings(hp),
        "filtered": len(filtered) + len(val_filtered), **settings,
        "train_seconds": previous["train_seconds"] if no_new_steps else round(seconds, 1),
        "train_samples_per_second": previous["train_samples_per_second"] if no_new_steps
        else round(examples_per_second, 3),  # examples (one segment and task each), whether or not batches share
        "peak_memory_mb": round(peak_memory_mb() or 0, 1), "precision": computed,
        "device": str(state.device), "untrained": untrained, "final": final,
    }
    staging, final_dir = out_dir / "final.partial", out_dir / "final"
    if hp.lora_rank:  # adapters merged into the weights: final/ is a plain model
        if state.is_main_process:
            adapters.plain(trainer.model).save_pretrained(staging)
    else:
        trainer.save_model(str(staging))  # on every process: sharded setups gather the weights together
    if state.is_main_process:
        bundle.save_processing(staging)
        decoding.save_settings(staging, decoding.DecodingOptions.for_test("transcribe", params.evaluation))
        atomic.replace_folder(atomic.make_shareable(staging), final_dir)  # the old model or the new, never half
        atomic.write_json(results_file, summary)
        atomic.write_json(results / f"{name}_history.json", trainer.state.log_history)
        model_card.write(params, name)
    return {**summary, "history": trainer.state.log_history}


def kept_scores(state) -> dict:
    """The val scores of the checkpoint the Trainer kept, from its log (as `final_*`): the kept model scored at its
    checkpoint, so scoring it again would give the same numbers. Empty when no checkpoint was scored."""
    return {key.replace("eval_", "final_", 1): value for h in state.log_history
            if state.best_global_step is not None and h["step"] == state.best_global_step
            for key, value in h.items() if key.startswith("eval_")}


def summary_table(summary: dict) -> pd.DataFrame:
    """Val scores per task and metric, untrained against the kept checkpoint."""
    rows = []
    for key, value in summary["final"].items():
        _, task, metric = (key.split("_", 2) + ["", ""])[:3]
        if task in tasks.TASKS and metric in ("wer", "cer", "bleu", "chrf", "loss"):
            rows.append({"task": task, "metric": metric, "untrained": summary["untrained"][f"untrained_{task}_{metric}"],
                         "trained": value})
    return pd.DataFrame(rows).set_index(["task", "metric"]).round(2)


def val_samples(params: config.Params, name: str, per_task: int = 4) -> pd.DataFrame:
    """The first val segments of each task decoded by `<name>/final` (greedy and in the training's precision, as val
    is scored during training), beside their references."""
    family, hp = families.get(name), params.section(name)
    bundle = family.load_trained(params.paths.model(name) / "final")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bundle.model.to(device, precision.dtype(hp.precision, device))
    val = family.prepare_features(params.paths, bundle, splits=("val",))["val"].load()
    inputs = val.with_format("numpy", columns=[family.input_column])
    columns = {c: val[c] for c in ("id", "duration", *tasks.TEXT_COLUMN.values())}
    picked = {task: [i for i, t in enumerate(columns[tasks.TEXT_COLUMN[task]]) if t][:per_task] for task in tasks.TASKS}
    decoded = sorted(set().union(*picked.values()))  # each segment encoded once for both tasks
    options = [decoding.DecodingOptions.for_validation(task, hp) for task in tasks.TASKS]
    found = decoding.decode(family.decoder(bundle), [inputs[i][family.input_column] for i in decoded],
                            [columns["duration"][i] for i in decoded], options)
    return pd.DataFrame([{"task": o.task, "id": columns["id"][i], "reference": columns[tasks.TEXT_COLUMN[o.task]][i],
                          "hypothesis": found[o.task][decoded.index(i)].gated(o)}
                         for o in options for i in picked[o.task]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("model", choices=families.names())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    summary = train(config.load(args.params, config.parse_overrides(args.set)), args.model)
    print(json.dumps({k: summary[k] for k in ("global_step", "best_checkpoint", "world_size", "resumed_from")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
