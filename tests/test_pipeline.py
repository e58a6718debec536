"""The runner executes the real notebooks with papermill."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import demo_slice
from lib import config, pipeline

pytestmark = pytest.mark.slow


def run_cli(*args, env=None, umask=None):
    return subprocess.run([sys.executable, "-m", "lib.pipeline", *args], capture_output=True, text=True,
                          cwd=config.PROJECT_ROOT, env={**os.environ, **(env or {})},
                          preexec_fn=None if umask is None else lambda: os.umask(umask))


TINY_WHISPER = ["whisper.import_from=", "whisper.build_tiny=true", "whisper.pack_seconds=0",
                "whisper.epochs=1", "whisper.batch_size=8", "whisper.checkpoint_steps=10", "whisper.logging_steps=5",
                "whisper.eval_segments=6", "whisper.max_length=24"]
TINY_E2E = ["e2e.epochs=1", "e2e.batch_size=8", "e2e.checkpoint_steps=10", "e2e.logging_steps=5",
            "e2e.eval_segments=6", "e2e.max_length=24"]
SAMPLE = 12  # segments the runner test scores per set


def test_runner_executes_the_notebooks_end_to_end(tmp_path):
    corpus = demo_slice(tmp_path / "corpus", per_speaker=4)
    out = tmp_path / "out"
    sets = [f"manifest={corpus}", f"output_dir={out}", f"whisper.model={out}/models/whisper-demo", *TINY_WHISPER,
            f"e2e.encoder={out}/models/wav2vec2-demo", f"e2e.decoder={out}/models/mbart-demo", *TINY_E2E]
    proc = run_cli("--params", "params/demo.yaml", *[a for s in sets for a in ("--set", s)],
                   "--set", "evaluation.bootstrap_resamples=200", "--set", "evaluation.max_length=24",
                   # every test segment (the split holds 12), a sample of 12 from every other set's speakers in turn
                   "--set", f"evaluation.segments={SAMPLE}",
                   # one fallback temperature: the fallback runs (tiny random weights are unsure of every output) at a
                   # third of the five temperatures' cost; lib.decoding's tests go through all of them
                   "--set", "evaluation.fallback_temperatures=[1.0]",
                   # the int8 export decodes the sets after test whatever the tiny random model's parity (the rule
                   # itself: test_evaluate)
                   "--set", "evaluation.export_tolerance=1000", umask=0o022)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    private = [p.relative_to(out) for p in out.rglob("*") if (p.stat().st_mode & 0o044) != 0o044]
    assert not private, f"not readable by group and others under umask 022: {private[:5]}"

    report = nbformat.read(out / "reports" / "01_split.ipynb", as_version=4)
    injected = [c for c in report.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(corpus) in injected[0].source
    outputs = "".join(str(o) for c in report.cells if c.cell_type == "code" for o in c.outputs)
    assert "achieved_ratio" in outputs and "image/png" in outputs
    html = (out / "reports" / "01_split.html").read_text(encoding="utf-8")
    assert "Validate and split" in html and "<img" in html

    split_report = json.loads((out / "splits" / "split_report.json").read_text())
    assert split_report["manifest"]["valid_rows"] == sum(
        len((out / "splits" / f"{s}.tsv").read_text().splitlines()) - 1 for s in ("train", "val", "test"))
    for chart in ("split_durations.png", "split_code_mixing.png"):
        assert (out / "charts" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    segments = {s: len((out / "splits" / f"{s}.tsv").read_text().splitlines()) - 1 for s in ("train", "val", "test")}
    for name, count in segments.items():
        meta = json.loads(next((out / "features" / "whisper").glob(f"{name}-*/meta.json")).read_text())
        assert meta["segments"] == count and meta["settings"]["feature_size"] == 80
    for name in ("whisper", "e2e"):
        assert (out / "features" / f"{name}_filtered.tsv").read_text().startswith("split\tid\ttask\treason")
        assert (out / "charts" / f"{name}_label_lengths.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "results" / "whisper_train.json").read_text())
    train_lines = (out / "splits" / "train.tsv").read_text().splitlines()
    column = train_lines[0].split("\t").index("translation")
    with_translation = sum(1 for line in train_lines[1:] if line.split("\t")[column])
    clips = round(0.2 / 0.8 * segments["train"])  # nonspeech_share 0.2 of the inputs are non-speech clips
    assert summary["examples"]["train"] == segments["train"] + with_translation + 3 * clips  # Whisper: 3 per clip
    inputs = segments["train"] + clips
    assert summary["share_encoder"] and summary["global_step"] == -(-inputs // 8)  # one epoch, 8 inputs a step
    assert summary["final"]["final_transcribe_wer"] >= 0 and summary["final"]["final_translate_bleu"] >= 0
    assert summary["train_samples_per_second"] > 0 and summary["peak_memory_mb"] > 0
    history = json.loads((out / "results" / "whisper_history.json").read_text())
    assert [h["loss"] for h in history if "loss" in h]
    report = nbformat.read(out / "reports" / "03_train_whisper.ipynb", as_version=4)
    logged = "".join(str(o) for c in report.cells if c.cell_type == "code" for o in c.outputs)
    assert re.search(rf"whisper step \d+/{summary['global_step']} \(\d+%\) loss [\d.]+ lr \S+ elapsed \d:\d\d:\d\d "
                     r"ETA \d:\d\d:\d\d", logged), logged[-2000:]
    events = list((out / "tensorboard" / "whisper").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000  # the curves, in TensorBoard as the run goes
    assert (out / "whisper" / "final" / "model.safetensors").stat().st_size > 1e6
    assert (out / "charts" / "whisper_training.png").read_bytes()[:4] == b"\x89PNG"

    e2e = json.loads((out / "results" / "e2e_train.json").read_text())
    assert e2e["examples"]["train"] == segments["train"] + with_translation + 2 * clips and e2e["lna"] is False
    assert e2e["global_step"] == -(-inputs // 8)
    assert 0 < e2e["parameters"]["trainable"] < e2e["parameters"]["total"]  # the feature encoder is frozen
    e2e_losses = [h["loss"] for h in json.loads((out / "results" / "e2e_history.json").read_text()) if "loss" in h]
    assert e2e_losses and e2e_losses[-1] < e2e_losses[0]
    assert {"model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in (out / "e2e" / "final").iterdir()}
    for name in ("train", "val", "test"):
        assert json.loads(next((out / "features" / "e2e").glob(f"{name}-*/meta.json")).read_text())[
            "segments"] == segments[name]

    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["params"]["manifest"] == str(corpus)
    assert provenance["manifest"]["sha256"] == split_report["manifest_sha256"]
    assert provenance["notebooks"][0]["notebook"] == "01_split" and provenance["notebooks"][0]["status"] == "ok"
    assert [n["status"] for n in provenance["notebooks"]] == ["ok"] * 6
    assert provenance["libraries"]["torch"] == "2.13.0+cpu" or provenance["libraries"]["torch"].startswith("2.13.0")
    assert len(provenance["params_sha256"]) == 64 and "dirty" in (provenance["git"] or {"dirty": None})

    check_evaluation(out, corpus)
    check_generalization(out)
    check_retention(out)
    check_recordings(out, tmp_path / "cli")
    check_model_card(out)
    check_charts(out)
    check_clean_reports(out)
    check_verdict(out)
    check_chart_consistency(out)


def check_evaluation(out, corpus):
    """05_evaluate: both metrics files in one schema, predictions for every test segment, values in range."""
    test_rows = [line.split("\t") for line in (out / "splits" / "test.tsv").read_text().splitlines()]
    header, test_rows = test_rows[0], test_rows[1:]
    with_translation = sum(1 for row in test_rows if row[header.index("translation")])
    for model_type in ("whisper", "e2e"):
        summary = json.loads((out / "results" / f"{model_type}_metrics.json").read_text())
        assert summary["segments"] == len(test_rows) and summary["model_path"] == str(out / model_type / "final")
        assert summary["decoding"]["max_length"] == 24 and summary["bootstrap"]["resamples"] == 200
        transcribe, translate = summary["tasks"]["transcribe"], summary["tasks"]["translate"]
        assert transcribe["samples"] == len(test_rows) and translate["samples"] == with_translation
        assert set(transcribe["metrics"]) == {"wer", "cer", "wer_vi", "wer_en", "english_insertions",
                                              "switch_points"}
        wer = transcribe["metrics"]["wer"]
        assert 0 <= wer["value"] and wer["ci95"][0] <= wer["value"] <= wer["ci95"][1]
        assert wer["count"] == transcribe["errors"]["reference_words"] > 0
        assert sum(b["segments"] for b in transcribe["by_cmi"]) == len(test_rows)
        assert 0 <= translate["metrics"]["bleu"]["value"] <= 100
        assert "tok:13a" in translate["metrics"]["bleu"]["signature"]
        assert [(t["task"], t["metric"], t["target"]) for t in summary["targets"]] == [
            ("transcribe", "wer", "< 15"), ("translate", "bleu", "> 25")]
        assert summary["decoding"]["segments_per_second"] > 0
        predictions = (out / "results" / f"predictions_{model_type}_transcribe.tsv").read_text().splitlines()
        columns = predictions[0].split("\t")
        assert {"id", "reference", "hypothesis", "wer", "errors", "cmi_bin"} <= set(columns)
        assert len(predictions) - 1 == len(test_rows)
        assert sorted(line.split("\t")[0] for line in predictions[1:]) == sorted(row[0] for row in test_rows)
        errors = sum(int(line.split("\t")[columns.index("errors")]) for line in predictions[1:])
        assert errors == transcribe["errors"]["substitutions"] + transcribe["errors"]["deletions"] + \
            transcribe["errors"]["insertions"]
        translations = (out / "results" / f"predictions_{model_type}_translate.tsv").read_text().splitlines()
        assert len(translations) - 1 == with_translation and "sentence_chrf" in translations[0]

    # the seed's manual entry point gives the same scores from a shell
    proc = subprocess.run([sys.executable, "-m", "lib.evaluate", "--model_dir", str(out / "whisper" / "final"),
                           "--model_type", "whisper", "--output", str(out / "cli"), "--params", "params/demo.yaml",
                           "--set", f"manifest={corpus}", "--set", f"output_dir={out}",
                           "--set", "evaluation.bootstrap_resamples=200", "--set", "evaluation.max_length=24",
                           "--set", "evaluation.fallback_temperatures=[1.0]"],
                          capture_output=True, text=True, cwd=config.PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "whisper transcribe wer:" in proc.stdout and "(target < 15: " in proc.stdout
    from_cli = json.loads((out / "cli" / "whisper_metrics.json").read_text())
    from_notebook = json.loads((out / "results" / "whisper_metrics.json").read_text())
    assert from_cli["tasks"]["transcribe"]["metrics"] == from_notebook["tasks"]["transcribe"]["metrics"]

    report = nbformat.read(out / "reports" / "05_evaluate.ipynb", as_version=4)
    outputs = "".join(str(o) for c in report.cells if c.cell_type == "code" for o in c.outputs)
    assert "audio/wav" in outputs or "data:audio/wav" in outputs  # the worst utterances come with players
    assert "pass" in outputs or "fail" in outputs


def check_generalization(out):
    """05 scores the held-out set with every fine-tuned model and with every starting model, the voice-shift set with
    every fine-tuned model, and the CTranslate2 exports against transformers on the test split."""
    heldout = len((out / "splits" / "heldout.tsv").read_text().splitlines()) - 1
    shifted = len((out / "splits" / "voiceshift.tsv").read_text().splitlines()) - 1
    test_lines = (out / "splits" / "test.tsv").read_text().splitlines()
    header = test_lines[0].split("\t")
    assert heldout == 48 and shifted == 64
    for name in ("whisper", "e2e"):
        for label, split, count in ((f"{name}_heldout", "heldout", heldout),
                                    (f"{name}_untrained_heldout", "heldout", heldout),
                                    (f"{name}_voiceshift", "voiceshift", shifted)):
            summary = json.loads((out / "results" / f"{label}_metrics.json").read_text())
            assert summary["split"] == split and (summary["segments"], summary["segments_in_split"]) == (SAMPLE, count)
            assert summary["model"] == ("untrained" if "untrained" in label else "trained")
            assert 0 <= summary["tasks"]["transcribe"]["metrics"]["wer"]["value"]
        assert not (out / "results" / f"{name}_untrained_voiceshift_metrics.json").exists()  # not in `untrained`
    for name in ("whisper", "e2e"):
        summary = json.loads((out / "results" / f"{name}_metrics.json").read_text())
        long_form = summary["long_form"]  # the test segments joined per speaker, decoded whole
        speakers = {line.split("\t")[header.index("speaker")] for line in test_lines[1:]}
        assert long_form["files"] >= len(speakers) and long_form["segments_joined"] == summary["segments"]
        assert long_form["longest_seconds"] <= long_form["seconds_at_most"] == 60  # E2E too: cut into windows
        total = sum(float(line.split("\t")[header.index("duration")]) for line in test_lines[1:])
        pauses = long_form["pauses"]  # 2-10 s of silence or noise between each two joined segments
        assert pauses["count"] == summary["segments"] - long_form["files"]
        assert 2 * pauses["count"] <= pauses["seconds"] <= 10 * pauses["count"]
        assert long_form["audio_seconds"] == pytest.approx(total + pauses["seconds"], abs=0.5)
        assert long_form["decoding"]["vad"] is True
        assert all(long_form["hallucination"][t]["words_in_pauses"] >= 0 for t in ("transcribe", "translate"))
        wer = long_form["tasks"]["transcribe"]["metrics"]["wer"]
        assert wer["count"] == summary["tasks"]["transcribe"]["metrics"]["wer"]["count"]  # the same words
        assert wer["ci95"][0] <= wer["value"] <= wer["ci95"][1]
        found = summary["hallucination"]
        assert found["transcribe"]["segments"] == summary["segments"] and 0 <= found["transcribe"]["share"] <= 100
        quiet = found["nonspeech"]  # 05's non-speech set, decoded for both tasks, gated and not
        assert quiet["clips"] == len(quiet["outputs"]) >= 20 and quiet["kinds"] >= 8
        assert quiet["gated_by"]["applies"] == (name == "whisper")  # only Whisper gives a no-speech probability
        for task, shares in quiet["tasks"].items():
            written = [o["tasks"][task] for o in quiet["outputs"]]
            assert shares["with_text"] == round(100 * sum(bool(w["text"]) for w in written) / len(written), 1)
            assert shares["with_text_gated"] <= shares["with_text"]
        gate = summary["tasks"]["transcribe"]["gate"]
        assert gate["no_speech_threshold"] == 0.6 and 0 <= gate["silenced"] <= summary["segments"]
    parity = json.loads((out / "results" / "whisper_ct2_parity.json").read_text())
    whisper = json.loads((out / "results" / "whisper_metrics.json").read_text())
    assert [r["quantization"] for r in parity["rows"]] == ["int8"]  # the demo's ct2_parity
    for row in parity["rows"]:
        assert row["hf_wer"] == pytest.approx(whisper["tasks"]["transcribe"]["metrics"]["wer"]["value"], abs=0.01)
        assert row["segments"] == whisper["segments"] and row["segments_per_second"] > 0
        assert row["delta_wer"] == pytest.approx(row["wer"] - row["hf_wer"], abs=0.02)
        assert all(row[f"delta_{m}_ci95"][0] <= row[f"delta_{m}_ci95"][1] for m in ("wer", "bleu"))  # paired
        assert 0 <= row["nonspeech_transcribe_with_text_gated"] <= 100  # the export on the non-speech set too
        assert (out / "whisper" / f"ct2-{row['quantization']}" / "model.bin").exists()
    assert whisper["decoding"]["runtime"] == "transformers"  # the test split: the reference of the parity check
    int8 = parity["rows"][0]
    segments_too = int8["segments_per_second"] >= int8["hf_segments_per_second"]  # measured on this machine
    for label in ("heldout", "voiceshift", "untrained_heldout", "retention-vi", "untrained_retention-en"):
        found = json.loads((out / "results" / f"whisper_{label}_metrics.json").read_text())
        export = found["export"]  # what the export decoded of the set
        assert export["runtime"] == "CTranslate2" and export["dtype"] == int8["compute_type"]
        assert export["parity_on_test"] == {k: int8[k] for k in ("delta_wer", "delta_bleu", "segments",
                                                                 "segments_per_second", "hf_segments_per_second")}
        assert ("segments" in export["decoded"]) == segments_too
        assert found["decoding"]["runtime"] == ("CTranslate2" if segments_too else "transformers")
    heldout = json.loads((out / "results" / "whisper_heldout_metrics.json").read_text())
    assert "recordings" in heldout["export"]["decoded"] and heldout["recordings"]["decoding"]["runtime"] == \
        "CTranslate2"  # whole recordings: the export, whichever decodes the segments
    starting = json.loads((out / "results" / "whisper_untrained_heldout_metrics.json").read_text())
    assert "non-speech clips" in starting["export"]["decoded"]
    assert starting["hallucination"]["nonspeech"]["decoding"]["runtime"] == "CTranslate2"
    assert (out / "whisper" / "untrained-ct2-int8" / "model.bin").exists()  # the starting model's export
    quiet = whisper["hallucination"]["nonspeech"]  # decoded once, by the export, in its parity check
    assert quiet["decoding"]["runtime"] == "CTranslate2" and "hf_nonspeech_transcribe_with_text_gated" not in int8
    assert quiet["tasks"]["transcribe"]["with_text_gated"] == int8["nonspeech_transcribe_with_text_gated"]
    check_starting_decodes_are_read_again(out)
    assert json.loads((out / "results" / "e2e_heldout_metrics.json").read_text())["decoding"]["runtime"] == \
        "transformers"  # no exports
    assert "**Decoded by** its CTranslate2 export" in (out / "summary.md").read_text()
    report = nbformat.read(out / "reports" / "05_evaluate.ipynb", as_version=4)
    shown = "".join(str(o) for c in report.cells if c.cell_type == "code" for o in c.outputs)
    assert "held-out set" in shown and "measures generalization" in shown and "transformers WER" in shown
    assert "long-form WER" in shown and "words written in pauses" in shown and "non-speech, transcribes with text" in shown and "never in training" in shown


def check_starting_decodes_are_read_again(out):
    """The starting model's decodes are kept (lib.remember): evaluating it again reads them, with the same scores."""
    from lib import evaluate

    params = config.validate(json.loads((out / "provenance.json").read_text())["params"], source="provenance")
    first = json.loads((out / "results" / "whisper_untrained_heldout_metrics.json").read_text())
    again = evaluate.evaluate(params, "whisper", split="heldout", untrained=True, output_dir=out / "again")
    assert not first["decoding"]["reused"] and again["decoding"]["reused"]
    assert again["decoding"]["seconds"] == first["decoding"]["seconds"]  # the seconds of the decode that wrote them
    assert not first["hallucination"]["nonspeech"]["decoding"]["reused"]
    assert again["hallucination"]["nonspeech"]["decoding"]["reused"]
    for task, metric in (("transcribe", "wer"), ("translate", "bleu")):
        assert again["tasks"][task]["metrics"][metric] == first["tasks"][task]["metrics"][metric]
    assert (out / "again" / "predictions_whisper_untrained_heldout_transcribe.tsv").read_text() == \
        (out / "results" / "predictions_whisper_untrained_heldout_transcribe.tsv").read_text()


def check_retention(out):
    """01 validates the demo's plain Vietnamese and plain English sets, and 05 scores the starting and the trained
    model of each family on both, the English transcripts decoded as English."""
    report = json.loads((out / "splits" / "split_report.json").read_text())
    assert {name: found["language"] for name, found in report["retention"].items()} == {"vi": "vi", "en": "en"}
    forced = {"whisper": {"vi": "<|vi|><|transcribe|><|notimestamps|>", "en": "<|en|><|transcribe|><|notimestamps|>"},
              "e2e": {"vi": "vi_VN", "en": "en_XX"}}
    for name in ("whisper", "e2e"):
        for language in ("vi", "en"):
            rows = len((out / "splits" / f"retention-{language}.tsv").read_text().splitlines()) - 1
            for label in (f"{name}_retention-{language}", f"{name}_untrained_retention-{language}"):
                summary = json.loads((out / "results" / f"{label}_metrics.json").read_text())
                assert summary["language"] == language and (summary["segments"], rows) == (SAMPLE, 20)
                assert summary["decoding"]["forced"]["transcribe"] == forced[name][language]
                assert set(summary["tasks"]) == ({"transcribe", "translate"} if language == "vi" else {"transcribe"})
                assert "nonspeech" not in summary["hallucination"]
    shown = "".join(str(o) for c in nbformat.read(out / "reports" / "05_evaluate.ipynb", as_version=4).cells
                    if c.cell_type == "code" for o in c.outputs)
    assert "en (en)" in shown and ("&lt;|en|&gt;&lt;|transcribe|&gt;" in shown or "<|en|><|transcribe|>" in shown)


def check_recordings(out, cli_out):
    """05 hands the held-out files that hold its scored segments (a sample), whole, to lib.transcribe, and scores each
    against all its segments joined; the CLI on the same files with the same settings gives the same WER."""
    from lib import manifest, metrics, stored, text

    segments = manifest.read(out / "splits" / "heldout.tsv").segments
    recordings: dict[str, list] = {}
    for segment in sorted(segments, key=lambda s: s.start):
        recordings.setdefault(str(segment.audio.resolve()), []).append(segment)
    for name in ("whisper", "e2e"):
        summary = json.loads((out / "results" / f"{name}_heldout_metrics.json").read_text())
        found = summary["recordings"]
        files = [t["audio"] for t in found["transcripts"]]
        scored = set(stored.predictions(out / "results", f"{name}_heldout", "transcribe")["id"])
        holding = {f for f, inside in recordings.items() if any(s.id in scored for s in inside)}
        assert len(scored) == SAMPLE and sorted(files) == sorted(holding)  # the files of the sample, each once
        assert found["segments_joined"] == sum(len(recordings[f]) for f in files) > SAMPLE  # their other segments too
        assert found["files"] == len(files) < found["segments_joined"]  # files of several segments among them
        wer = found["tasks"]["transcribe"]["metrics"]["wer"]
        words = [text.normalize_for_scoring(" ".join(s.transcript for s in recordings[f])).split() for f in files]
        assert wer["count"] == sum(map(len, words))  # every reference word of the files
        written = [json.loads((out / "results" / found["outputs"] / f"{t['name']}.json").read_text())
                   for t in found["transcripts"]]
        assert all(set(w) == {"transcribe", "translate"} for w in written)
        assert (out / "results" / found["outputs"] / f"{found['transcripts'][0]['name']}.vi.srt").exists()
        decoding = summary["decoding"]
        model = found["decoding"].get("export") or str(out / name / "final")  # what decoded them (ct2_evaluate)
        proc = subprocess.run([sys.executable, "-m", "lib.transcribe", *files, "--model", model,
                               "--out", str(cli_out / name), "--format", "json", "--device", "cpu",
                               "--max-length", str(decoding["max_length"]), "--batch-size", str(decoding["batch_size"]),
                               "--beams", str(decoding["num_beams"])], capture_output=True, text=True,
                              cwd=config.PROJECT_ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        texts = [json.loads((cli_out / name / f"{t['name']}.json").read_text())["transcribe"]["text"]
                 for t in found["transcripts"]]
        references = [" ".join(s.transcript for s in recordings[f]) for f in files]
        assert metrics.wer(references, texts) == pytest.approx(wer["value"], abs=0.5)
    shown = "".join(str(o) for c in nbformat.read(out / "reports" / "05_evaluate.ipynb", as_version=4).cells
                    if c.cell_type == "code" for o in c.outputs)
    assert "WER, recordings" in shown and "reference transcript" in shown


def check_model_card(out):
    """Each trained model's folder carries a model card with its test scores."""
    import yaml
    from huggingface_hub import ModelCard

    for name in ("whisper", "e2e"):
        card = (out / name / "final" / "README.md").read_text(encoding="utf-8")
        front = yaml.safe_load(card.split("---")[1])
        assert front["language"] == ["vi", "en"] and front["pipeline_tag"] == "automatic-speech-recognition"
        results = front["model-index"][0]["results"]
        metrics = json.loads((out / "results" / f"{name}_metrics.json").read_text())
        wer = metrics["tasks"]["transcribe"]["metrics"]["wer"]
        assert results[0]["metrics"][0] == {"type": "wer", "value": wer["value"], "name": "WER"}
        assert f"| test split | {metrics['segments']} of {metrics['segments_in_split']} | {wer['value']:.1f} [" in card
        assert "held-out set" in card and "voice-shift set" in card and "measures generalization" in card
        parsed = ModelCard.load(out / name / "final" / "README.md")  # as the hub reads it
        assert parsed.data.license == {"whisper": "mit", "e2e": "apache-2.0"}[name]
        assert parsed.data.datasets == ["corpus"] and str(out) not in card  # data by name, no machine path
        index = {(r.dataset_split, r.metric_type): r.metric_value for r in parsed.data.eval_results}
        written = {(split, metric): json.loads((out / "results" / f"{label}_metrics.json").read_text())["tasks"][
            task]["metrics"][metric]["value"] for split, label in (("test", name), ("heldout", f"{name}_heldout"),
                                                                   ("voiceshift", f"{name}_voiceshift"))
            for task, metric in (("transcribe", "wer"), ("translate", "bleu"))}
        assert index == written
        assert "## Limitations" in card and "synthetic speech from espeak-ng voices" in card
        assert "tiny, random weights" in card and "python -m lib.transcribe" in card  # both built tiny here


def check_verdict(out):
    """05 and 06 open with the verdict the run writes to summary.md, from its metrics: the honest set first."""
    verdict = (out / "summary.md").read_text(encoding="utf-8")
    whisper = json.loads((out / "results" / "whisper_heldout_metrics.json").read_text())
    wer = whisper["tasks"]["transcribe"]["metrics"]["wer"]
    honest = verdict.index("**Held-out set")
    assert honest < verdict.index("**Voice-shift set") < verdict.index("**Test split")
    assert f"WER {wer['value']:.1f} [{wer['ci95'][0]:.1f}, " in verdict
    tiny = "## Whisper (tiny, random weights: checks the pipeline, not a model)"  # both families built tiny here
    assert tiny in verdict and verdict.count("Nothing to conclude") == 2 and "What to try next" not in verdict
    for name, before in (("05_evaluate", "Scores against the targets"), ("06_charts", "Training loss")):
        cells = nbformat.read(out / "reports" / f"{name}.ipynb", as_version=4).cells
        shown = ["".join(str(o) for o in c.get("outputs", [])) for c in cells]
        opening = [i for i, o in enumerate(shown) if tiny in o]
        section = next(i for i, c in enumerate(cells) if c.source.startswith(f"## {before}"))
        assert len(opening) == 1 and opening[0] < section


def check_clean_reports(out):
    """The executed reports hold results only: no library warnings, load reports or progress bars (they go to the
    stage's log), no numbers padded to six decimals."""
    for path in sorted((out / "reports").glob("*.ipynb")):
        report = nbformat.read(path, as_version=4)
        for cell in report.cells:
            for output in cell.get("outputs", []):
                shown = str(output)
                assert not (output.output_type == "stream" and output.name == "stderr"), (path.name, shown[:300])
                assert not re.search(r"\b\d+\.\d{6}\b", shown), (path.name, re.search(r".{60}\d+\.\d{6}", shown))
                noise = re.search(r"(?i).{0,60}(warning|deprecat|load report|seem corrupted|loading weights).{0,60}",
                                  shown)
                assert not noise, (path.name, noise and noise.group(0))
    assert "LOAD REPORT" in (out / "logs" / "04_train_e2e.log").read_text()  # the tiny E2E model's, kept there


def check_chart_consistency(out):
    """Every 06 chart drawn again from the run's files at the size it is saved: one colour per model and state in
    every legend, no overlapping tick labels, whole steps on the loss axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_rgb
    from test_charts import overlapping

    from lib import charts, families, split as splitting, stored

    params = config.validate(json.loads((out / "provenance.json").read_text())["params"], source="provenance")
    results = stored.test_metrics(params)
    histories = {m: json.loads((out / "results" / f"{m}_history.json").read_text()) for m in results}
    expected = {}
    for name in params.family_names:
        label = families.model_label(params, name)
        expected |= {label: charts.colour(name), f"{label}, fine-tuned": charts.colour(name),
                     f"{label}, as it started": charts.colour(name, untrained=True)}
    again = out / "charts-again"
    figures = {"training_loss": charts.training_loss(histories, {m: s["label"] for m, s in results.items()},
                                                     again / "loss.png"),
               "wer": charts.score_comparison(params, "transcribe", "wer", again / "wer.png"),
               "bleu": charts.score_comparison(params, "translate", "bleu", again / "bleu.png"),
               "per_language": charts.per_language_errors(results, again / "language.png"),
               "cmi": charts.wer_by_cmi(results, again / "cmi.png"),
               "generalization": charts.generalization(params, again / "generalization.png"),
               "hallucination": charts.hallucination(params, again / "hallucination.png"),
               "splits": charts.split_overview(splitting.read_segment_frame(params.paths.splits), again / "splits.png")}
    matched = 0
    for chart, fig in figures.items():
        fig.canvas.draw()
        titles = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None]
        assert not overlapping(titles), chart
        for ax in fig.axes:
            assert not overlapping(ax.get_xticklabels()) and not overlapping(ax.get_yticklabels()), chart
        for legend in [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                if text.get_text() in expected:
                    assert to_rgb(handle.get_facecolor()) == to_rgb(expected[text.get_text()]), (chart, text)
                    matched += 1
    assert matched >= 8  # the legends name the models: trained and starting, in several charts
    for ax in figures["training_loss"].axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def check_charts(out):
    for chart in ("training_loss.png", "wer_comparison.png", "bleu_comparison.png", "per_language_errors.png",
                  "wer_by_cmi.png", "split_overview.png", "generalization.png", "hallucination.png"):
        png = (out / "charts" / chart).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, chart
    html = (out / "reports" / "06_charts.html").read_text(encoding="utf-8")
    assert html.count("<img") >= 8 and "The verdict" in html


def test_failing_notebook_stops_the_run_and_keeps_its_report(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--params", "params/demo.yaml", "--set", f"manifest={tmp_path}/absent.tsv",
                   "--set", f"output_dir={out}")
    assert proc.returncode == 1
    assert "01_split.ipynb failed at cell" in proc.stderr and "ManifestError" in proc.stderr
    assert "splitting.run(params)" in proc.stderr  # the failing cell's first line
    report = nbformat.read(out / "reports" / "01_split.ipynb", as_version=4)
    errors = [o for c in report.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ManifestError"
    assert (out / "reports" / "01_split.html").exists()
    assert json.loads((out / "provenance.json").read_text())["notebooks"][-1]["status"] == "failed"


def test_models_that_cannot_be_had_stop_the_run_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--params", "params/dev.yaml", "--set", f"output_dir={out}", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the params name models that cannot be had; nothing ran" in proc.stderr
    for key, name in (("whisper.model", "openai/whisper-tiny"), ("e2e.encoder", "facebook/wav2vec2-base"),
                      ("e2e.decoder", "facebook/mbart-large-50")):
        assert f"{key}: '{name}' is no local folder and is not in the Hugging Face cache" in proc.stderr
    assert "whisper.import_from" in proc.stderr  # Whisper's way round the hub is named
    assert not (out / "reports").exists()
    proc = run_cli("--params", "params/dev.yaml", "--only", "03", "--set", f"whisper.model={tmp_path}",
                   "--set", f"output_dir={out}")
    assert proc.returncode == 2 and f"whisper.model: {tmp_path} holds no complete model" in proc.stderr
    assert "e2e." not in proc.stderr  # 03 needs Whisper only


def test_kernel_death_is_reported_as_such(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'dev'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os; os._exit(9)")])
    nb.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    nbformat.write(nb, notebooks / "01_split.ipynb")
    with pytest.raises(pipeline.NotebookFailed) as err:
        pipeline.run("params/demo.yaml", {"output_dir": str(tmp_path / "out")}, only=["01"], notebook_dir=notebooks)
    assert err.value.exit_code == pipeline.KERNEL_DIED_EXIT
    assert "kernel died" in str(err.value) and "out of memory" in str(err.value)


def test_missing_notebooks_are_named_before_anything_runs(tmp_path):
    with pytest.raises(pipeline.NotebookFailed, match="02_prepare.ipynb"):
        pipeline.run("params/demo.yaml", {"output_dir": str(tmp_path / "out")}, only=["01", "02"],
                     notebook_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_bad_params_exit_2_naming_the_key(tmp_path):
    proc = run_cli("--params", "params/demo.yaml", "--set", "whisper.epochs=lots")
    assert proc.returncode == 2 and "whisper.epochs: expected a number" in proc.stderr


def test_stages_follow_the_runs_families_and_select_picks_among_them():
    stages = list(pipeline.stages(config.load("params/demo.yaml")))
    assert stages == ["01_split", "02_prepare", "03_train_whisper", "04_train_e2e", "05_evaluate", "06_charts"]
    assert pipeline.select(stages, ["3", "01"]) == ["01_split", "03_train_whisper"]
    assert pipeline.select(stages, start="05") == ["05_evaluate", "06_charts"]
    with pytest.raises(SystemExit, match="no notebook matches"):
        pipeline.select(stages, ["9"])
    only_whisper = pipeline.stages(config.load("params/demo.yaml", {"families": ["whisper"]}))
    assert "04_train_e2e" not in only_whisper and "03_train_whisper" in only_whisper
