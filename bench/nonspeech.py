"""What non-speech training and the no-speech gate each do, alone and together, at whisper-base size: the 2x2.

whisper-base (imported from PyPI) is fine-tuned as the demo fine-tunes it (packed windows, the same steps' worth of
speech) twice, with `nonspeech_share` 0 and the demo's share; each model then decodes 05's non-speech set and the
held-out set once, and both are scored with the gate off and on from that one decode:

- non-speech clips with text (%), per task, the kinds training never sees apart;
- held-out WER and BLEU with intervals, and how many speech segments the gate emptied (it should empty none).

    python -m bench.nonspeech      # about 10 minutes on 2 CPU cores; outputs/bench/nonspeech.json
"""
from __future__ import annotations

from bench import common
from lib import config, decoding, evaluate, families, tasks, train


def run(share: float) -> dict:
    """Train with `share` of non-speech inputs and score the held-out set and the non-speech set."""
    params = common.bench_params(f"nonspeech-{share:g}", {
        "whisper": {"pack_seconds": 30, "nonspeech_share": share}, "families": ["whisper"],
        "evaluation": {"segments": 0, "long_form_seconds": 0, "untrained": []}}, whisper_base=True)
    trained = train.train(params, "whisper")
    heldout = evaluate.evaluate(params, "whisper", split="heldout")
    family = families.get("whisper")
    decoder = family.decoder(evaluate.load(family, params.paths.model("whisper") / "final"))
    quiet = evaluate.nonspeech_set(decoder, [decoding.DecodingOptions.for_test(t, params.evaluation)
                                             for t in tasks.TASKS], params.paths.splits / "heldout.tsv")
    return {"share": share, "steps": trained["global_step"], "examples": trained["examples"]["train"],
            "train_seconds": trained["train_seconds"], "heldout": heldout, "nonspeech": quiet}


def main() -> None:
    demo_share = config.load("params/demo.yaml").whisper.nonspeech_share
    runs = [run(0.0), run(demo_share)]
    rows, table = [], []
    for found in runs:
        for gate in ("off", "on"):
            key = "with_text" if gate == "off" else "with_text_gated"
            transcribe, translate = (found["heldout"]["tasks"][t] for t in ("transcribe", "translate"))
            wer = transcribe["metrics"]["wer"] if gate == "on" else {"value": transcribe["gate"]["ungated"]["wer"]}
            bleu = translate["metrics"]["bleu"] if gate == "on" else {"value": translate["gate"]["ungated"]["bleu"]}
            table.append({
                "nonspeech_share": found["share"], "gate": gate,
                **{f"nonspeech {t} with text (%)": found["nonspeech"]["tasks"][t][key] for t in ("transcribe",
                                                                                             "translate")},
                "held-out kinds, transcribe, gated (%)": found["nonspeech"]["tasks"]["transcribe"][
                    "held_out_kinds_with_text_gated"],
                "held-out WER": wer["value"], "held-out WER ci95": wer.get("ci95"),
                "held-out BLEU": bleu["value"],
                "speech segments emptied": transcribe["gate"]["silenced"] if gate == "on" else 0})
    for line in table:
        print(line)
    trained_gated, plain = table[3], table[0]
    rows.append(common.Row("non-speech transcripts with text: trained and gated vs neither", "% of clips",
                           trained_gated["nonspeech transcribe with text (%)"],
                           plain["nonspeech transcribe with text (%)"], higher_is_better=False))
    rows.append(common.Row("held-out WER: trained and gated vs neither", "WER %", trained_gated["held-out WER"],
                           plain["held-out WER"], higher_is_better=False))
    common.report("nonspeech", rows, {"table": table, "runs": [
        {k: v for k, v in found.items() if k != "heldout"} | {"heldout_tasks": found["heldout"]["tasks"]}
        for found in runs]})


if __name__ == "__main__":
    main()
