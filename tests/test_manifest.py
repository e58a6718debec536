import subprocess
import sys

import pytest

from conftest import write_corpus
from lib import config, manifest, split


def add_defects(path):
    """Append one row per kind of defect; return {line: (column, words expected in the message)}."""
    good = path.read_text(encoding="utf-8").splitlines()
    header = good[0].split("\t") + ["duration", "lang_tags"]
    body = [line + "\t\t" for line in good[1:]]
    first = dict(zip(header, body[0].split("\t")))

    def row(**changes):
        cells = {**first, "id": f"bad{len(extra)}", **changes}
        return "\t".join(cells[c] for c in header)

    extra = []
    expect = {}

    def add(line_text, column, words):
        extra.append(line_text)
        expect[len(good) + len(extra)] = (column, words)

    add(row(id=first["id"]), "id", "duplicate id")
    add(row(id="bad id!"), "id", "characters outside")
    add(row(transcript="  "), "transcript", "empty transcript")
    add(row(audio_path="audio/nowhere.wav"), "audio_path", "not found")
    add(row(audio_path="junk.wav"), "audio_path", "unreadable")
    add(row(start="100", end="101"), "start", "past the end")
    add(row(start="0", end="999"), "end", "past the end")
    add(row(start="1.0", end="0.5"), "end", "not after start")
    add(row(start="abc"), "start", "not a number")
    add(row(duration="9.99"), "duration", "differs from the audio")
    add(row(lang_tags="vi vi"), "lang_tags", "tag(s) for")
    add(row(lang_tags=" ".join(["de"] * len(first["transcript"].split()))), "lang_tags", "unknown tag")
    add(row() + "\tsurplus", "extra field 10", "fields, the header has")
    add(row().rsplit("\t", 3)[0], "speaker", "fields, the header has")
    (path.parent / "junk.wav").write_bytes(b"RIFF\x00\x00garbage")
    lines = ["\t".join(header)] + body + extra
    data = "\n".join(lines).encode("utf-8") + b"\n"
    bad_utf8 = row().replace(first["transcript"], "Chi\xe1u nay").encode("utf-8").replace(b"\xc3\xa1", b"\xe1")
    data += bad_utf8 + b"\n"
    expect[len(lines) + 1] = ("transcript", "not valid UTF-8")
    path.write_bytes(data)
    return expect, len(body)


def test_check_names_every_defect_with_line_and_column(corpus):
    expect, good_rows = add_defects(corpus)
    header = corpus.read_text(encoding="utf-8", errors="replace").splitlines()[0].split("\t")
    proc = subprocess.run([sys.executable, "-m", "lib.manifest", "check", str(corpus)], capture_output=True, text=True,
                          cwd=config.PROJECT_ROOT)
    assert proc.returncode == 1
    assert f"{len(expect) + 1} problem(s)" in proc.stderr  # the row with start=100 has its end past the file too
    for line, (column, words) in expect.items():
        index = header.index(column) + 1 if column in header else 10
        wanted = f"{corpus}, line {line}, column {index} ({column}): "
        matches = [l for l in proc.stderr.splitlines() if wanted in l]
        assert matches and words in matches[0], (wanted, words, proc.stderr)
    assert f"valid_rows: {good_rows}" in proc.stdout


def test_fail_mode_raises_and_skip_mode_keeps_rejected_rows(corpus, tmp_path):
    expect, good_rows = add_defects(corpus)
    with pytest.raises(manifest.ManifestError) as err:
        manifest.read(corpus)
    assert {p.line for p in err.value.problems} == set(expect)

    splits_dir = tmp_path / "splits"
    with pytest.raises(manifest.ManifestError):
        split.run(config.validate(params_for(corpus, tmp_path, "fail")))
    assert not splits_dir.exists()  # on_error: fail writes nothing

    result = split.run(config.validate(params_for(corpus, tmp_path, "skip")))
    assert len(result.manifest.segments) == good_rows
    rejected = (splits_dir / "rejected.tsv").read_bytes().decode("utf-8").splitlines()
    assert rejected[0].startswith("line\treason\tid\taudio_path")
    lines = {int(r.split("\t")[0]): r.split("\t")[1] for r in rejected[1:]}
    assert set(lines) == set(expect)
    for line, (column, words) in expect.items():
        assert words in lines[line]
    written = sum(len(open(splits_dir / f"{s}.tsv").readlines()) - 1 for s in ("train", "val", "test"))
    assert written == good_rows
    assert result.report["manifest"]["rejected_rows"] == len(expect)
    assert any("rejected" in w for w in result.report["warnings"])


def params_for(manifest_path, tmp_path, on_error):
    raw = config.read_yaml(config.PROJECT_ROOT / "params" / "demo.yaml")
    return config.deep_merge(raw, {"manifest": str(manifest_path), "output_dir": str(tmp_path),
                                   "on_error": on_error})


def test_header_problems_are_fatal(tmp_path):
    for header, words in [("id\tspeaker\ttranscript", "required column(s) missing from the header: audio_path"),
                          ("id\taudio_path\ttranscript\tid", "column 'id' appears twice")]:
        path = tmp_path / "m.tsv"
        path.write_text(header + "\n")
        with pytest.raises(manifest.ManifestError, match="line 1") as err:
            manifest.read(path, on_error="skip")
        assert words in str(err.value)
    with pytest.raises(manifest.ManifestError, match="not found"):
        manifest.read(tmp_path / "absent.tsv")


def test_nfc_extra_columns_and_crlf_survive(tmp_path):
    path = write_corpus(tmp_path, ["a", "b"])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] += "\tqa_note"
    cells = lines[1].split("\t")
    cells[4] = "Chie\u0302\u0300u nay"
    lines[1] = "\t".join(cells) + "\tchecked by Lan"
    lines[2:] = [l + "\t" for l in lines[2:]]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    m = manifest.read(path)
    assert m.columns[-1] == "qa_note"
    assert m.segments[0].cells["qa_note"] == "checked by Lan"
    assert m.segments[0].transcript == "Chiều nay"
    assert m.notes == ["1 transcript/translation cell(s) were not in Unicode NFC and were normalized"]
    assert m.derived_lang_tags == len(m.segments) and m.segments[0].lang_tags == ["vi", "vi"]
