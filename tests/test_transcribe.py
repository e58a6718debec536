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
    proc = run(HELDOUT / "held01", "--model", models[name], "--out", tmp_path, "--max-length", 24, "--temperatures")
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
               "--out", out, "--max-length", 16, "--temperatures")
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
               "--model", models["whisper"], "--out", out, "--format", "txt,json", "--max-length", 16, "--temperatures")
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
    proc = run(*recordings, "--model", whisper_base, "--out", tmp_path, "--format", "srt,vtt", "--task", "transcribe",
               "--temperatures")  # whisper-base, not fine-tuned, is unsure of most of this speech: no fallback here
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


def test_decoding_settings_come_from_the_saved_model_and_a_wrong_name_is_an_error(models, tmp_path, monkeypatch):
    from lib import decoding

    folder = tmp_path / "whisper"
    shutil.copytree(models["whisper"], folder)
    decoding.save_settings(folder, decoding.DecodingOptions(task="transcribe", num_beams=3, max_length=20,
                                                            temperatures=()))
    seen = []
    monkeypatch.setattr(transcribe, "decode", lambda decoder, wave, options, vad: seen.append(options) or {
        o.task: [] for o in options})
    wave = tmp_path / "a.wav"
    sf.write(wave, np.zeros(16_000, np.float32), 16_000)
    transcribe.transcribe([wave], folder, out=tmp_path / "out", progress=False, batch_size=2)
    assert [(o.num_beams, o.max_length, o.batch_size, o.temperatures) for o in seen[0]] == [(3, 20, 2, ())] * 2
    with pytest.raises(decoding.DecodingError, match=r"beam_size \(did you mean num_beams\?\)"):
        transcribe.transcribe([wave], folder, out=tmp_path / "out", progress=False, beam_size=5)
    proc = run(wave, "--model", folder, "--no-speech-threshold", "3")
    assert proc.returncode == 2 and "no_speech_threshold: a probability in [0, 1], got 3.0" in proc.stderr


def test_finding_audio_names_outputs_by_their_relative_folders(tmp_path):
    for rel in ("x/a.wav", "x/deep/b.flac", "y/a.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, np.zeros(160, np.float32), 16000)
    sources, failed = transcribe.find_audio([tmp_path / "x", tmp_path / "y" / "a.wav", tmp_path / "z.wav"])
    assert [s.name.as_posix() for s in sources] == ["x/a", "x/deep/b", "y/a"]
    assert [(f.source.path.name, f.error) for f in failed] == [("z.wav", "no such file or folder")]


def test_subtitle_times_follow_openai_whisper():
    from lib.longform import Piece

    pieces = [Piece(0.0, 2.5, " Xin chào "), Piece(3661.25, 3662.0, "bye")]
    assert transcribe.as_srt(pieces) == ("1\n00:00:00,000 --> 00:00:02,500\nXin chào\n\n"
                                         "2\n01:01:01,250 --> 01:01:02,000\nbye\n\n")
    assert transcribe.as_vtt(pieces).startswith("WEBVTT\n\n00:00.000 --> 00:02.500\nXin chào\n\n01:01:01.250")
    assert transcribe.as_tsv(pieces) == "start\tend\ttext\n0\t2500\tXin chào\n3661250\t3662000\tbye\n"


def readme_block(needle: str) -> str:
    """The README's Python block that holds `needle`."""
    import re

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if needle in b)


def run_block(code: str, names: dict | None = None) -> tuple[str, dict]:
    """Run README code as written, with `names` defined: what it printed, and the names it left."""
    import contextlib
    import io

    printed, namespace = io.StringIO(), dict(names or {})
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    return printed.getvalue(), namespace


@pytest.mark.slow
def test_a_whisper_folder_as_training_saves_it_works_in_every_plain_client(whisper_base, tmp_path):
    """whisper-base saved as training saves `final/` and its checkpoints (`Whisper.plain_decoding`, then
    `save_pretrained`), and the `lib.ct2 import` it came from: plain transformers `generate()`, `pipeline()` with and
    without `generate_kwargs`, one input and a batch mixing speech and silence, the README's pipeline and
    faster-whisper blocks as written, and faster-whisper with its defaults: nothing raises, speech gets text."""
    import re

    from faster_whisper import WhisperModel
    from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

    from lib import families

    bundle = whisper.load_whisper(whisper_base)
    families.get("whisper").plain_decoding(bundle, "vi")
    folder = tmp_path / "final"
    bundle.model.save_pretrained(folder)
    bundle.save_processing(folder)
    saved = json.loads((folder / "generation_config.json").read_text())
    assert (saved["language"], saved["task"]) == ("vi", "transcribe")
    assert all(saved.get(key) is None for key in whisper.GATE_KEYS)  # with them, a plain call fails in transformers

    # six seconds of speech on which whisper-base, not fine-tuned, does not loop for 440 tokens in any of these calls
    # (it does on most clips, which only costs time)
    speech, silence = audio.load(HELDOUT / "held03" / "held03_r002.ogg", 0.0, 6.0), np.zeros(32_000, np.float32)
    recording = tmp_path / "meeting.wav"
    sf.write(recording, speech, 16_000)
    processor = WhisperProcessor.from_pretrained(folder)
    features = processor([speech, silence], sampling_rate=16_000, return_tensors="pt").input_features
    imported = WhisperForConditionalGeneration.from_pretrained(whisper_base)  # the import training starts from
    detected = processor(audio.load(HELDOUT / "held06" / "held06_r002.ogg", 0.0, 6.0), sampling_rate=16_000,
                         return_tensors="pt").input_features  # (it detects the language, and loops on other clips)
    assert processor.batch_decode(imported.generate(detected), skip_special_tokens=True)[0].strip()
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    for kwargs in ({}, {"language": "vi", "task": "transcribe"}):
        ids = model.generate(features[:1], **kwargs)
        assert processor.batch_decode(ids, skip_special_tokens=True)[0].strip(), kwargs
    # a batch of speech and silence, capped: whisper-base, not fine-tuned, loops for 440 tokens in a batch
    texts = processor.batch_decode(model.generate(features, task="translate", max_new_tokens=40),
                                   skip_special_tokens=True)
    assert len(texts) == 2 and texts[0].strip()
    asr = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    assert asr({"raw": speech, "sampling_rate": 16_000})["text"].strip()
    batch = asr([{"raw": speech, "sampling_rate": 16_000}, {"raw": silence, "sampling_rate": 16_000}], batch_size=2,
                generate_kwargs={"language": "vi", "task": "translate", "max_new_tokens": 40})
    assert len(batch) == 2 and batch[0]["text"].strip()

    block = readme_block("pipeline(")  # "meeting.wav" as decoded audio: a path would need FFmpeg
    assert 'model="outputs/prod/whisper/final"' in block and block.count('"meeting.wav"') == 2
    _, ran = run_block(block.replace("outputs/prod/whisper/final", str(folder)).replace('"meeting.wav"', "MEETING()"),
                       {"MEETING": lambda: {"raw": audio.load(recording), "sampling_rate": 16_000}})
    assert ran["out"]["text"].strip() and ran["out"]["chunks"] and ran["english"]["text"].strip()

    export = ct2.export(folder, tmp_path / "ct2-int8", "int8")
    segments, _ = WhisperModel(str(export), device="cpu", compute_type="int8").transcribe(str(recording))
    assert " ".join(s.text for s in segments).strip()
    block = readme_block("faster_whisper")
    assert '"outputs/dev/whisper/ct2-int8"' in block and '"meeting.wav"' in block
    printed, _ = run_block(block.replace("outputs/dev/whisper/ct2-int8", str(export)).replace("meeting.wav",
                                                                                             str(recording)))
    cues = [re.match(r"(\d+\.\d\d)-(\d+\.\d\d) (.+)", line) for line in printed.splitlines()]
    assert cues and all(cues), printed
    length = audio.probe(recording).duration
    assert all(0 <= float(c[1]) < float(c[2]) <= length + 0.5 for c in cues)
