"""lib.transcribe through its command line: the demo's held-out recordings whole, with both families and a
CTranslate2 export; subtitles a library parses; and every kind of bad input, named, the other files still done."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import DEMO
from lib import audio, ct2, longform, manifest, transcribe
from lib.families import e2e, whisper
from lib.schema import PROJECT_ROOT

HELDOUT = DEMO.parent / "demo-heldout" / "audio"
TEXTS = ["Chiều nay em gửi report cho manager nhé", "I will send the report to the manager this afternoon."] * 20


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.transcribe", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=600)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny Whisper saved as training saves `final/`, its CTranslate2 export, and a tiny E2E model saved likewise."""
    root = tmp_path_factory.mktemp("models")
    tiny = whisper.build_tiny_whisper(root / "whisper", TEXTS, window_seconds=30, vocab_size=300)
    exported = ct2.export(tiny, root / "ct2-int8", "int8")
    bundle = e2e.load_e2e(*e2e.build_tiny_e2e(root / "wav2vec2", root / "mbart", TEXTS, vocab_size=60))
    bundle.model.save_pretrained(root / "e2e")
    bundle.save_processing(root / "e2e")
    return {"whisper": tiny, "ct2": exported, "e2e": root / "e2e"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper", "ct2", "e2e"])
def test_whole_held_out_recordings_get_every_format_for_both_tasks(models, tmp_path, name):
    proc = run(HELDOUT / "held01", "--model", models[name], "--out", tmp_path, "--max-length", 24)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recordings = sorted((HELDOUT / "held01").glob("*.ogg"))
    for recording in recordings:
        stem = tmp_path / recording.stem
        document = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        assert set(document) == {"transcribe", "translate"}
        length = audio.probe(recording).duration
        for task, language in (("transcribe", "vi"), ("translate", "en")):
            segments = document[task]["segments"]
            assert segments and all(0 <= s["start"] < s["end"] <= length + 0.01 for s in segments)
            assert document[task]["text"] == " ".join(s["text"] for s in segments if s["text"])
            if name != "e2e":
                assert all("no_speech_prob" in s and "avg_logprob" in s for s in segments)
            for fmt in ("txt", "srt", "vtt", "tsv"):
                assert (tmp_path / f"{recording.stem}.{language}.{fmt}").exists()
            tsv = (tmp_path / f"{recording.stem}.{language}.tsv").read_text(encoding="utf-8").splitlines()
            spoken = [s for s in segments if s["text"]]
            assert tsv[0] == "start\tend\ttext" and len(tsv) == 1 + len(spoken)
    assert f"{len(recordings)} file(s)" in proc.stdout and "real-time factor" in proc.stdout


@pytest.mark.slow
def test_one_task_writes_plain_names_and_folders_are_mirrored(models, tmp_path):
    first, second = tmp_path / "in" / "a", tmp_path / "in" / "b"
    for folder in (first, second):
        folder.mkdir(parents=True)
        shutil.copy(next(HELDOUT.glob("held02/*.ogg")), folder / "meeting.ogg")
    out = tmp_path / "out"
    proc = run(first, second, "--model", models["whisper"], "--task", "translate", "--format", "srt,json",
               "--out", out, "--max-length", 16)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == [
        "a/meeting.json", "a/meeting.srt", "b/meeting.json", "b/meeting.srt"]
    assert set(json.loads((out / "a" / "meeting.json").read_text())) == {"translate"}


@pytest.mark.slow
def test_bad_input_is_named_and_the_other_files_are_still_transcribed(models, tmp_path):
    good = tmp_path / "good.ogg"
    shutil.copy(next(HELDOUT.glob("held03/*.ogg")), good)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.wav"
    sf.write(truncated, np.zeros(16000 * 3, np.float32) + 0.1, 16000)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(16000 * 4, np.float32), 16000)
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    out = tmp_path / "out"
    proc = run(good, tmp_path / "missing.wav", corrupt, truncated, empty, silent, notes, nothing,
               "--model", models["whisper"], "--out", out, "--format", "txt,json", "--max-length", 16)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith(str(tmp_path))]
    reasons = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1] for line in errors}
    assert set(reasons) == {"missing.wav", "corrupt.wav", "truncated.wav", "notes.txt", "nothing"}, proc.stderr
    assert "no such file" in reasons["missing.wav"] and "unsupported format .txt" in reasons["notes.txt"]
    assert "no audio files" in reasons["nothing"] and "unreadable" in reasons["corrupt.wav"]
    assert "truncated" in reasons["truncated.wav"]
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{stem}.{ext}" for stem in ("good", "empty", "silent")
                             for ext in ("vi.txt", "en.txt", "json"))
    for stem in ("empty", "silent"):  # nothing said: empty texts, not errors
        document = json.loads((out / f"{stem}.json").read_text())
        assert all(document[task]["text"] == "" for task in ("transcribe", "translate"))
    assert "3 file(s)" in proc.stdout and "5 failed" in proc.stdout


@pytest.mark.slow
def test_whisper_base_subtitles_parse_with_cues_inside_the_audio(whisper_base, tmp_path):
    import pysubs2

    recordings = sorted(DEMO.glob("audio/spk01/*.ogg"))[:2]  # recordings of four segments each
    proc = run(*recordings, "--model", whisper_base, "--out", tmp_path, "--format", "srt,vtt", "--task", "transcribe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    segments = manifest.read(DEMO / "manifest.tsv").segments
    for recording in recordings:
        length_ms = audio.probe(recording).duration * 1000
        chunks = longform.speech_chunks(audio.load(recording), 30.0)
        reference = [s for s in segments if s.audio.resolve() == recording.resolve()]
        for fmt in ("srt", "vtt"):
            cues = pysubs2.load(str(tmp_path / f"{recording.stem}.{fmt}"))
            assert len(cues) >= 1 and all(c.text.strip() for c in cues)
            starts = [c.start for c in cues]
            assert starts == sorted(starts) and all(0 <= c.start < c.end <= length_ms + 10 for c in cues)
            # Whisper's own timestamps inside each chunk of speech, mapped back: more cues than chunks, and every
            # reference segment's middle under a cue
            assert len(cues) > len(chunks) and len(reference) >= 3
            assert all(any(c.start <= 500 * (r.start + r.end) <= c.end for c in cues) for r in reference)


def test_finding_audio_names_outputs_by_their_relative_folders(tmp_path):
    for rel in ("x/a.wav", "x/deep/b.flac", "y/a.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, np.zeros(160, np.float32), 16000)
    sources, failed = transcribe.find_audio([tmp_path / "x", tmp_path / "y" / "a.wav", tmp_path / "z.wav"])
    assert [s.name.as_posix() for s in sources] == ["x/a", "x/deep/b", "y/a"]
    assert [(f.source.path.name, f.error) for f in failed] == [("z.wav", "no such file or folder")]


def test_subtitle_times_follow_openai_whisper():
    from lib.tasks import Piece

    pieces = [Piece(0.0, 2.5, " Xin chào "), Piece(3661.25, 3662.0, "bye")]
    assert transcribe.as_srt(pieces) == ("1\n00:00:00,000 --> 00:00:02,500\nXin chào\n\n"
                                         "2\n01:01:01,250 --> 01:01:02,000\nbye\n\n")
    assert transcribe.as_vtt(pieces).startswith("WEBVTT\n\n00:00.000 --> 00:02.500\nXin chào\n\n01:01:01.250")
    assert transcribe.as_tsv(pieces) == "start\tend\ttext\n0\t2500\tXin chào\n3661250\t3662000\tbye\n"


@pytest.mark.slow
def test_the_readme_pipeline_call_transcribes_a_trained_folder_with_its_saved_gate(whisper_base, tmp_path):
    """Hugging Face's ASR pipeline on a folder training saved (its gate's thresholds in generation_config.json, as
    `Whisper.save_decoding` writes them), called as the README's "Use your model" calls it."""
    from transformers import pipeline

    from lib import config, families, tasks

    folder = tmp_path / "final"
    shutil.copytree(whisper_base, folder)
    options = tasks.DecodingOptions.for_test("transcribe", config.load("params/demo.yaml").evaluation)
    family = families.get("whisper")
    family.save_decoding(folder, options)
    arguments = family.generate_arguments(options)  # what the README and the model card pass
    asr = pipeline("automatic-speech-recognition", model=str(folder), chunk_length_s=30, device="cpu")
    wave = audio.load(next(HELDOUT.glob("held05/*.ogg")))
    out = asr({"raw": wave, "sampling_rate": 16000}, return_timestamps=True, generate_kwargs=arguments)
    assert out["text"].strip() and out["chunks"]
    assert all(0 <= c["timestamp"][0] < c["timestamp"][1] <= len(wave) / 16000 + 0.5 for c in out["chunks"]
               if c["timestamp"][1] is not None)


@pytest.mark.slow
def test_the_readme_faster_whisper_example_runs_on_an_export(whisper_base, tmp_path):
    """The README's faster-whisper block, run as written, on an int8 export of whisper-base and a demo recording."""
    import contextlib
    import io
    import re

    export = ct2.export(whisper_base, tmp_path / "ct2-int8", "int8")
    recording = sorted(DEMO.glob("audio/spk01/*.ogg"))[0]
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "faster_whisper" in b)
    assert '"outputs/dev/whisper/ct2-int8"' in block and '"meeting.wav"' in block
    code = block.replace("outputs/dev/whisper/ct2-int8", str(export)).replace("meeting.wav", str(recording))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    cues = [re.match(r"(\d+\.\d\d)-(\d+\.\d\d) (.+)", line) for line in printed.getvalue().splitlines()]
    assert cues and all(cues), printed.getvalue()
    length = audio.probe(recording).duration
    assert all(0 <= float(c[1]) < float(c[2]) <= length + 0.5 for c in cues)
