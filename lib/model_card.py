"""The model card (`README.md`, Hugging Face conventions) of a trained model: what it starts from, the data it saw,
how it was trained, and its scores with intervals on each evaluated set, saying which set measures generalization.

Written into `<family>/final/` at the end of training (val scores) and again by 05 (test scores), from the files the
stages wrote; a card says only what those files hold.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib import atomic, config, decoding, families, manifest, split as splitting

SET_NAMES = {"test": "test split", "heldout": "held-out set", "voiceshift": "voice-shift set"}


def write(params: config.Params, name: str) -> Path:
    """Write `<name>/final/README.md` from the run's results; returns its path."""
    from huggingface_hub import EvalResult, ModelCardData

    family, hp, paths = families.get(name), params.section(name), params.paths
    folder = paths.model(name) / "final"
    train_file = paths.results / f"{name}_train.json"
    trained, report = _read(train_file), _read(paths.splits / "split_report.json")
    scored = {split: summary for split in params.eval_sets  # scores of this model, not of an earlier run's
              if _newer(paths.metrics(name, split), train_file) and (summary := _read(paths.metrics(name, split)))}
    base_model = family.base_model(hp)
    results = []
    for split, summary in scored.items():
        for task, metric, task_type, task_name in (("transcribe", "wer", "automatic-speech-recognition",
                                                    "Speech recognition (code-switched transcript)"),
                                                   ("translate", "bleu", "translation",
                                                    "Speech translation (Vietnamese-English to English)")):
            score = summary["tasks"].get(task, {}).get("metrics", {}).get(metric)
            if score and score["value"] is not None:
                results.append(EvalResult(task_type=task_type, task_name=task_name, dataset_type="custom",
                                          dataset_name=f"{params.profile} {SET_NAMES[split]}", dataset_split=split,
                                          metric_type=metric, metric_name=metric.upper(), metric_value=score["value"]))
    data = ModelCardData(language=["vi", "en"], base_model=base_model, license=hp.license or family.license,
                         datasets=[_data_name(params)], pipeline_tag="automatic-speech-recognition",
                         model_name=f"{params.profile}-{name}",
                         tags=["code-switching", "vietnamese", "speech-translation", family.name],
                         eval_results=results or None)
    title = f"{families.model_label(params, name)} for Vietnamese-English code-switched speech ({params.profile})"
    body = [f"# {title}", "",
            f"Fine-tuned by vi-en-cs-speech from {base_model or _started_from(params, name)} to give "
            "the code-switched transcript of Vietnamese speech that switches into English, and its English "
            f"translation; the task is chosen at generation ({_prefixes(family)}).", "",
            *_usage(family, params, folder), *_data(report, _data_name(params)), *_training(hp, trained),
            *_scores(scored, report), *_limitations(params, name, scored, report)]
    return atomic.write_text(folder / "README.md", f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def _started_from(params: config.Params, name: str) -> str:
    """The starting models by name (a folder's name, never its path), said to be random where the run built them."""
    names = ", ".join(Path(model).name for model in families.get(name).model_names(params.section(name)).values())
    return f"random weights ({names}, built by the run)" if params.section(name).build_tiny else names


def _prefixes(family: families.Family) -> str:
    return ", ".join(f"{task}: `{family.forced_prefix(task)}`" for task in ("transcribe", "translate"))


def _usage(family: families.Family, params: config.Params, folder: Path) -> list[str]:
    usage = family.usage_for(decoding.DecodingOptions.for_test("transcribe", params.evaluation))
    exports = sorted(p.name for p in folder.parent.glob("ct2-*") if (p / "model.bin").exists())
    lines = ["## How to use", "", "Whole recordings of any length, transcript and translation with timestamps (txt, "
             "srt, vtt, tsv, json), with the vi-en-cs-speech package:", "", "```bash",
             "python -m lib.transcribe meeting.wav --model PATH", "```", "",
             "Hugging Face's `pipeline(\"automatic-speech-recognition\", model=PATH)` loads it too, and transcribes "
             "without arguments (`generate_kwargs={\"task\": \"translate\"}` translates; the gate's arguments below "
             "go there too). In Python, one segment:", "",
             "```python", usage.strip("\n"), "```", ""]
    if exports:
        lines += [f"CTranslate2 exports beside this folder ({', '.join(exports)}) load in faster-whisper "
                  "(`WhisperModel(\"PATH/../" + exports[0] + "\")`) and in `lib.transcribe`.", ""]
    return lines


def _data_name(params: config.Params) -> str:
    """The training data by name: the folder of its manifest (`data/demo/manifest.tsv`: demo), never a path."""
    return Path(params.manifest_path).parent.name


def _data(report: dict | None, data_name: str) -> list[str]:
    if not report:
        return []
    lines = ["## Training data", "", f"From the `{data_name}` manifest "
             f"({report['manifest']['hours']:.2f} h, {report['manifest']['valid_rows']} segments, "
             f"{report['groups']} {report['disjoint_by']}), split by audio duration and {report['disjoint_by']}:", "",
             "| split | hours | segments | speakers | word trigrams seen in train (%) |", "|---|---|---|---|---|"]
    for split, stats in report["splits"].items():
        overlap = stats["trigram_overlap_with_train"]
        lines.append(f"| {split} | {stats['hours']:.3f} | {stats['segments']} | {stats['speakers']} | "
                     f"{'' if overlap is None else overlap} |")
    for name, what in (("heldout", "held-out set (not trained on)"),
                       ("voiceshift", "voice-shift set (not trained on; voices and channels unlike training's)")):
        if name in report:
            held = report[name]
            lines.append(f"| {what} | {held['hours']:.3f} | {held['valid_rows']} | {held['speakers']} | "
                         f"{held['trigram_overlap_with_train']} |")
    return [*lines, ""]


def _training(hp, trained: dict | None) -> list[str]:
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    for key in ("learning_rate", "batch_size", "grad_accum", "epochs", "warmup_ratio", "precision",
                "gradient_checkpointing", "share_encoder", "freeze_encoder", "lora_rank"):
        lines.append(f"| {key} | {getattr(hp, key)} |")
    if trained:
        lines += [f"| optimizer steps | {trained['global_step']} |",
                  f"| checkpoint kept (best val WER) | {trained['best_checkpoint']} |",
                  f"| trainable parameters | {trained['parameters']['trainable']:,} of "
                  f"{trained['parameters']['total']:,} |", f"| device | {trained['device']} |",
                  f"| precision computed | {trained.get('precision', hp.precision)} |"]
        final, untrained = trained["final"], trained["untrained"]
        lines += ["", f"Val scores during training (greedy, {hp.eval_segments or 'all'} val segments per task, no "
                  "interval: a check that training moves, not a score; the evaluation below is the one to read), as "
                  "it started and fine-tuned:", "",
                  "| | WER (%) | BLEU |", "|---|---|---|",
                  f"| as it started | {untrained.get('untrained_transcribe_wer', 0):.1f} | "
                  f"{untrained.get('untrained_translate_bleu', 0):.1f} |",
                  f"| fine-tuned | {final.get('final_transcribe_wer', 0):.1f} | "
                  f"{final.get('final_translate_bleu', 0):.1f} |"]
    return [*lines, ""]


def _scores(scored: dict[str, dict], report: dict | None) -> list[str]:
    if not scored:
        return ["## Evaluation", "", "Not evaluated yet (05_evaluate writes the scores here).", ""]
    lines = ["## Evaluation", "", "95 % bootstrap intervals over utterances; WER and CER on normalized text "
             "(Vietnamese diacritics kept), BLEU and chrF by sacrebleu.", "",
             "| set | segments | WER (%) | CER (%) | BLEU | chrF |", "|---|---|---|---|---|---|"]
    for split, summary in scored.items():
        cells = []
        for task, metric in (("transcribe", "wer"), ("transcribe", "cer"), ("translate", "bleu"),
                             ("translate", "chrf")):
            score = summary["tasks"].get(task, {}).get("metrics", {}).get(metric)
            low, high = score["ci95"] if score else (None, None)
            cells.append("" if not score or score["value"] is None else
                         f"{score['value']:.1f}" + (f" [{low:.1f}, {high:.1f}]" if low is not None else ""))
        lines.append(f"| {SET_NAMES[split]} | {summary['segments']} of {summary['segments_in_split']} | "
                     + " | ".join(cells) + " |")
    exported = {split: summary["export"] for split, summary in scored.items()
                if summary.get("export", {}).get("decoded")}
    if exported:
        first = next(iter(exported.values()))
        parity = first["parity_on_test"]
        parts = ", ".join(f"the {SET_NAMES[s]}'s {' and '.join(e['decoded'])}" for s, e in exported.items())
        lines += ["", f"{parts[:1].upper()}{parts[1:]} were decoded by this model's {first['runtime']} export "
                  f"({first['dtype']}), which scored {parity['delta_wer']:+.2f} WER and {parity['delta_bleu']:+.2f} "
                  f"BLEU against the model itself on {parity['segments']} test segments."]
    if report:
        overlap = splitting.trigram_overlap(report)
        held, shifted = overlap["heldout"], overlap["voiceshift"]
        lines += ["", f"The test split's speakers are not in training, but {overlap['test']} % of its word trigrams "
                  "occur in the training transcripts: its score says how well the model handles new voices saying "
                  "familiar sentences, and flatters it when the sentences share templates with training."
                  + (f" The held-out set has new speakers and new sentences ({held} % of its trigrams occur in "
                     "training): its score is the one that measures generalization." if held is not None else "")
                  + (f" The voice-shift set has new sentences ({shifted} % of its trigrams occur in training) spoken "
                     "by voices whose pitch, rate and channel (a room, a telephone line, a codec) are far from the "
                     "training speakers': its score says how the model holds up on voices and recordings unlike "
                     "its training." if shifted is not None else "")]
    return [*lines, ""]


def _limitations(params: config.Params, name: str, scored: dict[str, dict], report: dict | None) -> list[str]:
    lines = ["## Limitations", ""]
    if getattr(params.section(name), "build_tiny", False):
        lines.append(f"- This model is {families.TINY.replace(':', ';')}. Built with random weights and trained "
                     "briefly, it shows that the pipeline runs end to end; its outputs and scores mean nothing.")
    if _bundled(params.manifest_path):
        lines.append("- Trained and scored on the bundled demo corpus: synthetic speech from espeak-ng voices, "
                     "not recordings of people. Nothing here says how it does on real speech.")
    if report:
        train = report["splits"]["train"]
        lines.append(f"- Trained on {train['hours']:.2f} h from {train['speakers']} speakers; voices, accents and "
                     "recording conditions far from those are untested.")
    sets = ", ".join(f"{found['segments']} of {found['segments_in_split']} segments of the {SET_NAMES[split]}"
                     for split, found in scored.items())
    lines += [f"- Scored on {sets}: read the intervals, not only the values." if scored else "- Not evaluated yet.",
              "- The language is forced (Vietnamese speech; English words inside it are transcribed as English): "
              "it does not detect languages, and speech in other languages is out of scope.", ""]
    return lines


def _bundled(manifest_path: Path) -> bool:
    """Whether the manifest's audio is the bundled (synthetic) corpus under the project's `data/`."""
    first = manifest.read(manifest_path).segments[0].audio.resolve()
    return (config.PROJECT_ROOT / "data").resolve() in first.parents


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _newer(path: Path, than: Path) -> bool:
    """Whether `path` exists and was written after `than` (or `than` does not exist)."""
    return path.exists() and (not than.exists() or path.stat().st_mtime >= than.stat().st_mtime)
