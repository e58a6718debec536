"""lib.evaluate without a trained model: targets, the predictions round trip, the probes, clear errors, and which
scores a model card takes."""
import os

import pandas as pd
import pytest

from lib import atomic, config, evaluate, model_card


def params_for(tmp_path):
    return config.load("params/demo.yaml", {"output_dir": str(tmp_path / "out")})


def test_targets_are_marked_pass_or_fail():
    hp = config.load("params/demo.yaml").evaluation
    summary = {"tasks": {"transcribe": {"metrics": {"wer": {"value": 14.9}}},
                         "translate": {"metrics": {"bleu": {"value": 25.0}}}}}
    assert evaluate.targets(summary, hp) == [
        {"task": "transcribe", "metric": "wer", "target": "< 15", "value": 14.9, "pass": True},
        {"task": "translate", "metric": "bleu", "target": "> 25", "value": 25.0, "pass": False}]
    missing = evaluate.targets({"tasks": {}}, hp)
    assert [t["pass"] for t in missing] == [False, False] and missing[0]["value"] is None


def test_a_missing_model_names_the_stage_to_run(tmp_path):
    with pytest.raises(evaluate.ModelMissing, match="run 04_train_e2e first"):
        evaluate.evaluate(params_for(tmp_path), "e2e")
    with pytest.raises(ValueError, match="model family: expected one of whisper, e2e, got 'bert'"):
        evaluate.evaluate(params_for(tmp_path), "bert")


def test_predictions_round_trip_keeps_text_and_numbers(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "speaker": ["007", ""], "wer": [12.5, None], "scored": [True, False],
                          "reference": ["Em gửi report nhé", "..."], "hypothesis": ["em gửi ripo nhé", ""]})
    atomic.write_frame(tmp_path / "predictions_whisper_transcribe.tsv", frame)
    back = evaluate.read_predictions(tmp_path, "whisper", "transcribe")
    assert back.speaker.tolist() == ["007", ""] and back.hypothesis.tolist() == ["em gửi ripo nhé", ""]
    assert back.wer[0] == 12.5 and pd.isna(back.wer[1]) and back.scored.tolist() == [True, False]


def test_results_are_required_before_charts(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 05_evaluate first"):
        evaluate.load_results(params_for(tmp_path))


def test_cli_reports_a_missing_model_with_exit_1(tmp_path, capsys):
    code = evaluate.main(["--model_type", "whisper", "--model_dir", str(tmp_path / "none"), "--params",
                          "params/demo.yaml", "--output", str(tmp_path / "res")])
    assert code == 1 and "no trained whisper model" in capsys.readouterr().err
    assert evaluate.main(["--model_type", "whisper", "--params", "params/demo.yaml", "--set",
                          "evaluation.num_beams=0"]) == 2


class _Echo:
    """A stand-in model family: 'hears' a loud input as a looping phrase and a silent one as nothing."""

    def audio_input(self, bundle, wave):
        return wave

    def decode(self, bundle, inputs, options):
        return {o.task: ["cảm ơn cảm ơn cảm ơn" if abs(x).max() > 0 else "" for x in inputs] for o in options}


def test_probes_count_any_text_on_silence_or_noise_as_made_up():
    from lib import tasks

    options = [tasks.DecodingOptions(t, 1, 16, 4) for t in tasks.TASKS]
    found = evaluate.probes(_Echo(), None, options)
    assert found["probes"] == 4 and found["with_output"] == 2  # the noise got text in both tasks, silence none
    assert found["outputs"]["silence"] == {"transcribe": "", "translate": ""}
    assert found["outputs"]["white noise"]["transcribe"] == "cảm ơn cảm ơn cảm ơn"


def test_a_model_card_leaves_out_scores_older_than_its_training(tmp_path):
    params = config.load("params/demo.yaml", {"output_dir": str(tmp_path)})
    scores = {"segments": 3, "tasks": {"transcribe": {"metrics": {"wer": {"value": 41.5, "ci95": [30.0, 52.0]}}}}}
    metrics = atomic.write_json(params.paths.metrics("whisper", "test"), scores)
    os.utime(metrics, (1_000_000_000, 1_000_000_000))  # an earlier run's 05
    atomic.write_json(params.paths.results / "whisper_train.json", {
        "global_step": 16, "best_checkpoint": "checkpoint-16", "parameters": {"trainable": 10, "total": 10},
        "device": "cpu", "final": {"final_transcribe_wer": 44.0}, "untrained": {"untrained_transcribe_wer": 99.0}})
    card = model_card.write(params, "whisper").read_text(encoding="utf-8")
    assert "Not evaluated yet" in card and "41.5" not in card and "| optimizer steps | 16 |" in card

    atomic.write_json(metrics, scores)  # this model's 05
    card = model_card.write(params, "whisper").read_text(encoding="utf-8")
    assert "| test split | 3 | 41.5 [30.0, 52.0] |" in card
