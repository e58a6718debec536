"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence


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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
