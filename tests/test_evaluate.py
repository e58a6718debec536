"""lib.evaluate without a trained model: targets, the predictions round trip, the non-speech set, clear errors, and
which scores a model card takes."""
import logging
import os
from dataclasses import replace

import pandas as pd
import pytest

from lib import atomic, config, decoding, evaluate, model_card, report, stored, tasks


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
    back = stored.predictions(tmp_path, "whisper", "transcribe")
    assert back.speaker.tolist() == ["007", ""] and back.hypothesis.tolist() == ["em gửi ripo nhé", ""]
    assert back.wer[0] == 12.5 and pd.isna(back.wer[1]) and back.scored.tolist() == [True, False]


def test_results_are_required_before_charts(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 05_evaluate first"):
        stored.test_metrics(params_for(tmp_path))


def test_cli_reports_a_missing_model_with_exit_1(tmp_path, capsys):
    code = evaluate.main(["--model_type", "whisper", "--model_dir", str(tmp_path / "none"), "--params",
                          "params/demo.yaml", "--output", str(tmp_path / "res")])
    assert code == 1 and "no trained whisper model" in capsys.readouterr().err
    assert evaluate.main(["--model_type", "whisper", "--params", "params/demo.yaml", "--set",
                          "evaluation.num_beams=0"]) == 2


class _Echo(decoding.Decoder):
    """A stand-in decoder: 'hears' any input louder than -50 dBFS as a looping phrase, and is sure there is no speech
    (p 0.9) in what is quieter, where it writes the phrase unsurely (average log-probability -2)."""

    window, input_limit, max_tokens = 30.0, 30.0, 448

    def input(self, wave):
        return wave

    def encode(self, inputs):
        return inputs

    def rows(self, encoded, rows):
        return [encoded[i] for i in rows]

    def generate(self, encoded, options, temperature):
        from lib import nonspeech

        loud = [nonspeech.rms_db(x) > -50 for x in encoded]
        return [decoding.Output("cảm ơn cảm ơn cảm ơn" if x.any() else "", [], 0.1 if is_loud else 0.9,
                                -0.2 if is_loud else -2.0) for x, is_loud in zip(encoded, loud)]


def test_the_nonspeech_set_counts_any_text_as_made_up_before_and_after_the_gate(corpus):
    options = [decoding.DecodingOptions(task=t, max_length=16, batch_size=4, temperatures=()) for t in tasks.TASKS]
    found = evaluate.nonspeech_set(_Echo(), options, corpus)
    assert found["clips"] == len(found["outputs"]) >= 20 and found["kinds"] >= 8
    quiet = [row for row in found["outputs"] if nonspeech_level(row["name"]) <= -50]
    silent = [row for row in found["outputs"] if "digital zero" in row["name"]]
    assert silent and all(row["tasks"]["transcribe"] == {"text": "", "gated": "", "no_speech_prob": 0.9,
                                                         "avg_logprob": -2.0} for row in silent)
    assert all(row["tasks"]["translate"]["gated"] == "" for row in quiet)  # the gate empties the unsure ones
    written = sum(bool(row["tasks"]["transcribe"]["text"]) for row in found["outputs"])
    kept = sum(bool(row["tasks"]["transcribe"]["gated"]) for row in found["outputs"])
    assert found["tasks"]["transcribe"]["with_text"] == round(100 * written / found["clips"], 1) > 0
    assert found["tasks"]["transcribe"]["with_text_gated"] == round(100 * kept / found["clips"], 1) < \
        found["tasks"]["transcribe"]["with_text"]
    held_out = [row for row in found["outputs"] if row["held_out_kind"]]
    assert {row["kind"] for row in held_out} == {"chords", "sweep", "speech-shaped noise"}
    assert sum(row["kind"] == "reversed babble" for row in found["outputs"]) == 4
    ungated = replace(options[0], no_speech_threshold=1.0)  # the gate off: every text stays
    assert evaluate.nonspeech_set(_Echo(), [ungated], corpus)["tasks"]["transcribe"]["with_text_gated"] == \
        found["tasks"]["transcribe"]["with_text"]


def nonspeech_level(name: str) -> float:
    level = name.split(", ")[1]
    return -999.0 if level == "digital zero" else float(level.split()[0])


def test_a_model_card_leaves_out_scores_older_than_its_training(tmp_path):
    params = config.load("params/demo.yaml", {"output_dir": str(tmp_path)})
    scores = {"segments": 3, "segments_in_split": 120,
              "tasks": {"transcribe": {"metrics": {"wer": {"value": 41.5, "ci95": [30.0, 52.0]}}}}}
    metrics = atomic.write_json(params.paths.metrics("whisper", "test"), scores)
    os.utime(metrics, (1_000_000_000, 1_000_000_000))  # an earlier run's 05
    atomic.write_json(params.paths.results / "whisper_train.json", {
        "global_step": 16, "best_checkpoint": "checkpoint-16", "parameters": {"trainable": 10, "total": 10},
        "device": "cpu", "final": {"final_transcribe_wer": 44.0}, "untrained": {"untrained_transcribe_wer": 99.0}})
    card = model_card.write(params, "whisper").read_text(encoding="utf-8")
    assert "Not evaluated yet" in card and "41.5" not in card and "| optimizer steps | 16 |" in card

    atomic.write_json(metrics, scores)  # this model's 05
    card = model_card.write(params, "whisper").read_text(encoding="utf-8")
    assert "| test split | 3 of 120 | 41.5 [30.0, 52.0] |" in card and "Scored on 3 of 120 segments" in card


def test_an_export_decodes_the_other_sets_only_once_its_parity_on_the_test_split_holds(tmp_path, caplog):
    params = params_for(tmp_path)  # the demo's whisper.ct2_evaluate: int8, export_tolerance 2 points
    final = params.paths.model("whisper") / "final"
    parity_file = params.paths.results / "whisper_ct2_parity.json"

    def parity(delta_wer, delta_bleu, quantization="int8", **intervals):
        atomic.write_json(parity_file, {"rows": [{"quantization": quantization, "delta_wer": delta_wer,
                                                  "delta_bleu": delta_bleu, "segments": 16, **intervals}]})

    atomic.write_json(final / "config.json", {})
    evaluate._holding_parity.cache_clear()  # said once per process: another test may have had the same answer
    assert evaluate.evaluation_export(params, "whisper") is None and "no parity check" in caplog.text
    parity(-1.5, 2.0)
    assert evaluate.evaluation_export(params, "whisper")["delta_wer"] == -1.5
    parity(0.0, -3.5)  # beyond the tolerance, no interval to say it is chance
    caplog.clear()
    assert evaluate.evaluation_export(params, "whisper") is None and "-3.50 BLEU (no interval)" in caplog.text
    parity(0.0, -3.5, delta_wer_ci95=[-1.0, 1.0], delta_bleu_ci95=[-7.2, 0.4])  # beyond, but within chance
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lib.evaluate"):
        assert evaluate.evaluation_export(params, "whisper")["delta_bleu"] == -3.5
    assert "-3.50 BLEU [-7.20, +0.40]" in caplog.text and "within chance" in caplog.text
    parity(4.5, 0.0, delta_wer_ci95=[0.7, 8.9], delta_bleu_ci95=[-2.0, 2.0])  # beyond, and the interval excludes 0
    caplog.clear()
    assert evaluate.evaluation_export(params, "whisper") is None and "+4.50 WER [+0.70, +8.90]" in caplog.text
    caplog.clear()
    assert evaluate.evaluation_export(params, "whisper") is None and not caplog.text  # said once, not per set
    parity(1.9, -1.9, delta_wer_ci95=[0.5, 5.0], delta_bleu_ci95=[-5.0, -0.5])  # within the tolerance: holds
    assert evaluate.evaluation_export(params, "whisper")["delta_wer"] == 1.9
    parity(0.0, 0.0, "float16")  # a check of another quantization proves nothing of this one
    assert evaluate.evaluation_export(params, "whisper") is None
    parity(0.0, 0.0)
    os.utime(parity_file, ns=(1, 1))  # older than the model: a check of an earlier model
    assert evaluate.evaluation_export(params, "whisper") is None
    assert evaluate.evaluation_export(params, "e2e") is None  # a family without exports
    off = config.load("params/demo.yaml", {"output_dir": str(tmp_path / "out"), "whisper": {"ct2_evaluate": ""}})
    parity(0.0, 0.0)
    assert evaluate.evaluation_export(off, "whisper") is None
    with pytest.raises(config.ParamsError, match="ct2_evaluate: 'float16' is not one of ct2_parity"):
        config.load("params/demo.yaml", {"whisper": {"ct2_evaluate": "float16"}})


def test_the_export_decodes_the_later_segments_only_where_it_decoded_the_test_segments_as_fast(caplog):
    row = {"quantization": "int8", "segments_per_second": 0.99, "hf_segments_per_second": 1.50}
    with caplog.at_level(logging.INFO, logger="lib.evaluate"):
        assert not evaluate.export_decodes_segments(row)  # a CPU that computes bfloat16: the model's encoder wins
    assert "0.99 against 1.50" in caplog.text and "recordings and non-speech clips" in caplog.text
    assert evaluate.export_decodes_segments(row | {"segments_per_second": 1.7})  # fp32 elsewhere: the export wins
    assert evaluate.export_decodes_segments(row | {"segments_per_second": 1.5})


def test_the_parity_table_gives_each_difference_with_its_paired_interval():
    row = {"quantization": "int8", "wer": 33.1, "hf_wer": 32.4, "delta_wer": 0.72, "delta_wer_ci95": [0.0, 2.29],
           "bleu": 17.8, "hf_bleu": 18.0, "delta_bleu": -0.16, "delta_bleu_ci95": [-0.72, 0.22], "segments": 16}
    older = {key: value for key, value in row.items() if not key.endswith("_ci95")}  # written before the intervals
    parity = {"model": "m", "split": "test", "device": "cpu", "decoding": {}, "rows": [row, older]}
    frame = report.parity_table(parity).data
    assert frame["WER difference"].tolist() == ["+0.72 [+0.00, +2.29]", "+0.72"]
    assert frame["BLEU difference"].tolist() == ["-0.16 [-0.72, +0.22]", "-0.16"]
    assert not [c for c in frame.columns if "ci95" in c]


def test_the_trained_models_nonspeech_set_is_decoded_once_by_the_export_whose_parity_holds(tmp_path, corpus,
                                                                                           monkeypatch):
    params = params_for(tmp_path)  # the demo's whisper.ct2_evaluate: int8
    final = params.paths.model("whisper") / "final"
    atomic.write_json(final / "config.json", {})
    assert evaluate.left_to_parity(params, "whisper", final, params.paths.results, "test")
    assert not evaluate.left_to_parity(params, "whisper", final, params.paths.results, "heldout")
    assert not evaluate.left_to_parity(params, "whisper", final, tmp_path / "elsewhere", "test")  # not 05's run
    assert not evaluate.left_to_parity(params, "e2e", params.paths.model("e2e") / "final", params.paths.results,
                                       "test")  # no export to evaluate with
    options = [decoding.DecodingOptions(task=t, max_length=16, batch_size=4, temperatures=()) for t in tasks.TASKS]
    real = evaluate.nonspeech_set
    decoded_by = []

    def nonspeech_set(decoder, options, split_file):
        decoded_by.append(decoder)
        return real(decoder, options, corpus)

    monkeypatch.setattr(evaluate, "nonspeech_set", nonspeech_set)
    model = evaluate.Loaded(None, _Echo(), str(final), None, {"runtime": "transformers", "dtype": "float32"})
    export = evaluate.Loaded(None, _Echo(), str(final), None, {"runtime": "CTranslate2", "dtype": "int8_float32",
                                                                "export": str(final.parent / "ct2-int8")})
    monkeypatch.setattr(evaluate, "loaded", lambda params, name, model_dir, quantization="": export if quantization
                        else model)
    by_export = real(_Echo(), options, corpus)
    parity_file = params.paths.results / "whisper_ct2_parity.json"
    atomic.write_json(parity_file, {"rows": [{"quantization": "int8", "compute_type": "int8_float32",
                                              "delta_wer": 0.5, "delta_bleu": 0.0, "segments": 16}]})
    found = evaluate._nonspeech_of_the_model(params, "whisper", final, {"int8": by_export}, options)
    assert not decoded_by and found["outputs"] == by_export["outputs"]  # the export's decode, not another
    assert found["decoding"]["runtime"] == "CTranslate2" and found["decoding"]["export"].endswith("ct2-int8")
    atomic.write_json(parity_file, {"rows": [{"quantization": "int8", "compute_type": "int8_float32",
                                              "delta_wer": 4.0, "delta_bleu": 0.0, "segments": 16}]})
    found = evaluate._nonspeech_of_the_model(params, "whisper", final, {"int8": by_export}, options)
    assert decoded_by == [model.decoder] and found["decoding"]["runtime"] == "transformers"  # parity failed
    assert found["tasks"] == by_export["tasks"]
