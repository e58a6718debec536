import pytest

from conftest import write_corpus
from lib import config, manifest, split

RATIOS = config.SplitParams(0.8, 0.1, 0.1)
FILES = ("train.tsv", "val.tsv", "test.tsv", "split_report.json", "rejected.tsv", "assignments.tsv")


def speakers_of(splits_dir):
    out = {}
    for name in split.SPLITS:
        rows = manifest.read(splits_dir / f"{name}.tsv").segments  # split files are manifests themselves
        out[name] = {s.speaker for s in rows}
    return out


def test_split_is_deterministic_byte_for_byte(corpus, tmp_path):
    m = manifest.read(corpus)
    split.split_and_write(m, RATIOS, 7, tmp_path / "a")
    split.split_and_write(m, RATIOS, 7, tmp_path / "a")  # again, over its own ledger
    split.split_and_write(manifest.read(corpus), RATIOS, 7, tmp_path / "b")  # fresh folder
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = split.split_and_write(m, RATIOS, 8, tmp_path / "c")
    assert other.assignment != split.assign(split.group_durations(m.segments), RATIOS, 7, {})


@pytest.mark.parametrize("seed", range(10))
def test_speaker_disjoint_and_balanced_by_duration(corpus, tmp_path, seed):
    result = split.split_and_write(manifest.read(corpus), RATIOS, seed, tmp_path)
    groups = speakers_of(tmp_path)
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert sum(map(len, groups.values())) == 24
    for name, target in zip(split.SPLITS, (0.8, 0.1, 0.1)):
        achieved = result.report["splits"][name]["achieved_ratio"]
        assert abs(achieved - target) <= 0.05, (name, achieved)
    total = sum(s.duration for s in result.manifest.segments) / 3600
    assert sum(v["hours"] for v in result.report["splits"].values()) == pytest.approx(total, abs=1e-3)
    assert not [w for w in result.report["warnings"] if "% of the audio" in w]


def test_adding_speakers_moves_no_existing_speaker(tmp_path):
    old = write_corpus(tmp_path / "old", [f"spk{i:02d}" for i in range(24)])
    before = split.split_and_write(manifest.read(old), RATIOS, 3, tmp_path / "splits")
    test_set_before = (tmp_path / "splits" / "test.tsv").read_text()
    grown = write_corpus(tmp_path / "old", [f"spk{i:02d}" for i in range(24)] + [f"new{i:02d}" for i in range(12)],
                         name="grown.tsv")
    after = split.split_and_write(manifest.read(grown), RATIOS, 3, tmp_path / "splits")
    for speaker, name in before.assignment.items():
        assert after.assignment[speaker] == name, speaker
    assert {after.assignment[f"new{i:02d}"] for i in range(12)} >= {"train"}
    assert (after.report["groups"], after.kept_from_ledger) == (36, 24)
    old_test_rows = set(test_set_before.splitlines()[1:])
    assert old_test_rows <= set((tmp_path / "splits" / "test.tsv").read_text().splitlines()[1:])
    for name in split.SPLITS:
        assert abs(after.report["splits"][name]["achieved_ratio"] - getattr(RATIOS, name)) <= 0.05

    # A speaker that leaves the manifest stays in the ledger and comes back to its split.
    shrunk = split.split_and_write(manifest.read(old), RATIOS, 3, tmp_path / "splits")
    assert shrunk.assignment == before.assignment
    assert len(split.read_ledger(tmp_path / "splits" / "assignments.tsv")) == 36


def test_recording_disjoint_without_speaker_column(tmp_path):
    path = write_corpus(tmp_path, [f"rec{i:02d}" for i in range(20)], with_speaker=False)
    result = split.split_and_write(manifest.read(path), RATIOS, 0, tmp_path / "splits")
    assert result.report["disjoint_by"] == "recordings"
    by_recording = {}
    for name in split.SPLITS:
        for seg in result.segments(name):
            by_recording.setdefault(seg.cells["audio_path"], set()).add(name)
    assert len(by_recording) == 20 and all(len(v) == 1 for v in by_recording.values())


def test_few_speakers_warn(tmp_path):
    path = write_corpus(tmp_path, ["a", "b", "c"])
    result = split.split_and_write(manifest.read(path), RATIOS, 0, tmp_path / "splits")
    assert any("only 3 speakers" in w for w in result.report["warnings"])


def test_split_files_carry_derived_columns_and_relative_audio(corpus, tmp_path):
    split.split_and_write(manifest.read(corpus), RATIOS, 0, tmp_path / "out" / "splits")
    header, first = (tmp_path / "out" / "splits" / "train.tsv").read_text().splitlines()[:2]
    cells = dict(zip(header.split("\t"), first.split("\t")))
    assert header.split("\t")[-2:] == ["duration", "lang_tags"]
    assert cells["audio_path"].startswith("../../corpus/audio/")
    assert float(cells["duration"]) == pytest.approx(float(cells["end"]) - float(cells["start"]), abs=1e-3)
    assert len(cells["lang_tags"].split()) == len(cells["transcript"].split())
