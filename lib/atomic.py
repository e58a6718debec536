"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Files and folders get the permissions the user's umask gives (as `open` and `mkdir` would), not the owner-only mode
of the temporary files they are written through, so a teammate on the same machine can read a run's outputs.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


UMASK = _read_umask()


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp made it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """A folder written whole or not at all: yields a staging folder beside `path`, which replaces `path` (with the
    umask's permissions, `replace_folder`) when the block ends, and is removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield staging
        make_shareable(staging)
        replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: str | Path, path: str | Path) -> Path:
    """Move the complete folder `staging` to `path` (on the same file system). An old `path` is renamed aside first
    and deleted only once the new one is in place, so an interruption never loses both."""
    staging, path = Path(staging), Path(path)
    old = staging.with_name(staging.name + ".old")
    if path.exists():
        os.replace(path, old)
    try:
        os.replace(staging, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def make_shareable(folder: str | Path) -> Path:
    """Give a folder made by `tempfile.mkdtemp` (owner-only) and everything in it the umask's permissions."""
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~UMASK)
    return folder


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> Path:
    """Pretty, key-order-preserving, UTF-8 JSON ending in a newline (stable bytes for stable input)."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_frame(path: str | Path, frame) -> Path:
    """A pandas DataFrame as TSV (`write_tsv`), missing values as empty cells."""
    cells = frame.astype(object).where(frame.notna(), "").astype(str)
    return write_tsv(path, list(frame.columns), cells.values.tolist())


def write_tsv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Tab-separated, no quoting: cells must not hold tabs or newlines (the manifest contract)."""
    lines = ["\t".join(header)]
    for row in rows:
        cells = [str(c) for c in row]
        if any(("\t" in c or "\n" in c) for c in cells):
            raise ValueError(f"{path}: a cell holds a tab or newline: {cells!r}")
        lines.append("\t".join(cells))
    return write_text(path, "\n".join(lines) + "\n")
