"""Atomic writes leave whole files, with the permissions the user's umask gives (not the temporary file's 0600)."""
import subprocess
import sys

import pytest

from lib import atomic, config

WRITE = """
import os, stat, sys, tempfile
from pathlib import Path
from lib import atomic
out = Path(sys.argv[1])
atomic.write_json(out / "results" / "metrics.json", {"wer": 9.1})
folder = atomic.make_shareable(Path(tempfile.mkdtemp(dir=out)))
(folder / "inside.txt").write_text("x")
atomic.make_shareable(folder)
print(oct(stat.S_IMODE((out / "results" / "metrics.json").stat().st_mode)), oct(stat.S_IMODE(folder.stat().st_mode)),
      oct(stat.S_IMODE((folder / "inside.txt").stat().st_mode)))
"""


@pytest.mark.parametrize("umask, expected", [(0o022, "0o644 0o755 0o644"), (0o077, "0o600 0o700 0o600"),
                                             (0o002, "0o664 0o775 0o664")])
def test_outputs_get_the_umask_permissions(tmp_path, umask, expected):
    proc = subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], capture_output=True, text=True,
                          cwd=config.PROJECT_ROOT, preexec_fn=lambda: __import__("os").umask(umask))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected.split()


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = atomic.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(ValueError):
        atomic.write_tsv(path, ["a"], [["tab\there"]])
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_folder_is_replaced_whole_and_kept_when_the_new_one_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    for version in ("old", "new"):
        with atomic.folder(target) as staging:
            (staging / "weights.bin").write_text(version)
    assert (target / "weights.bin").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]

    with pytest.raises(RuntimeError), atomic.folder(target) as staging:
        (staging / "weights.bin").write_text("half")
        raise RuntimeError("killed while writing")
    assert (target / "weights.bin").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]

    real_replace, calls = atomic.os.replace, []

    def replace_failing_the_second_time(source, destination):
        calls.append(source)
        if len(calls) == 2:  # the old folder is aside, the new one fails to move in
            raise OSError("disk gone")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace_failing_the_second_time)
    with pytest.raises(OSError), atomic.folder(target) as staging:
        (staging / "weights.bin").write_text("newer")
    assert (target / "weights.bin").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]
