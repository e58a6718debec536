"""Read and validate `manifest.tsv`, the annotation tool's export (the contract: docs/data-contract.md).

Every problem names the file, the line and the column. `read(..., on_error="fail")` raises `ManifestError` listing all
of them; with `on_error="skip"` the bad rows come back in `Manifest.rejected` with their reasons, and the good rows are
kept. `python -m lib.manifest check PATH` runs the same validation from a shell.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from lib import atomic, audio, text

REQUIRED_COLUMNS = ("id", "audio_path", "transcript")
OPTIONAL_COLUMNS = ("start", "end", "duration", "translation", "speaker", "lang_tags")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
DURATION_TOLERANCE = 0.1  # s: a `duration` further than this from the audio is an error
END_TOLERANCE = 0.01  # s: an `end` this little past the end of the file is rounding and is clamped
REJECTED_COLUMNS = ("line", "reason")

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    column: str | None
    index: int | None  # 1-based column number
    message: str

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}"
        if self.column:
            where += f", column {self.index} ({self.column})"
        return f"{where}: {self.message}"


class ManifestError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the manifest:\n{shown}{more}")


@dataclass
class Segment:
    """One valid row: its cells as written (transcript and translation in NFC) and the audio it points at."""

    line: int
    cells: dict[str, str]
    audio: Path
    start: float
    end: float
    lang_tags: list[str]

    @property
    def id(self) -> str:
        return self.cells["id"]

    @property
    def transcript(self) -> str:
        return self.cells["transcript"]

    @property
    def translation(self) -> str:
        return self.cells.get("translation", "")

    @property
    def speaker(self) -> str:
        return self.cells.get("speaker", "")

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def group(self) -> str:
        """What splits are disjoint by: the speaker, or the recording for rows without one."""
        return self.speaker or f"recording:{self.cells['audio_path']}"

    @property
    def code_mixing_index(self) -> float:
        return text.code_mixing_index(self.lang_tags)


@dataclass
class Rejected:
    line: int
    raw: str
    reasons: list[str]


@dataclass
class Manifest:
    path: Path
    columns: list[str]
    segments: list[Segment] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    derived_lang_tags: int = 0  # rows whose `lang_tags` were absent or empty and were derived by lib.text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def summary(self) -> dict:
        segs = self.segments
        speakers = {s.speaker for s in segs if s.speaker}
        return {
            "manifest": str(self.path),
            "rows": len(segs) + len(self.rejected),
            "valid_rows": len(segs),
            "rejected_rows": len(self.rejected),
            "hours": round(sum(s.duration for s in segs) / 3600, 4),
            "speakers": len(speakers),
            "recordings": len({s.audio for s in segs}),
            "with_translation": sum(bool(s.translation) for s in segs),
            "code_mixing_index_mean": round(statistics.fmean(s.code_mixing_index for s in segs), 2) if segs else 0.0,
            "segments_with_english": sum("en" in s.lang_tags for s in segs),
            "lang_tags_derived": self.derived_lang_tags,
        }


def read(path: str | Path, on_error: OnError = "fail", check_audio: bool = True) -> Manifest:
    """Parse and validate a manifest. Problems with the file as a whole (missing, bad header) always raise."""
    path = Path(path)
    reader = _Reader(path, check_audio)
    manifest = reader.run()
    if manifest.problems and on_error == "fail":
        raise ManifestError(manifest.problems)
    return manifest


def by_recording(segments: Iterable[Segment]) -> dict[Path, list[Segment]]:
    """Each audio file (its resolved path) and its segments in time order, files in the order they first appear."""
    found: dict[Path, list[Segment]] = {}
    for segment in segments:
        found.setdefault(segment.audio.resolve(), []).append(segment)
    return {audio: sorted(inside, key=lambda s: s.start) for audio, inside in found.items()}


def write_segments(path: str | Path, columns: list[str], segments: Iterable[Segment]) -> Path:
    """Write segments in the manifest format. Audio paths become relative to the new file's folder (absolute stay
    absolute); `duration` and `lang_tags` are filled in where the source manifest lacked them."""
    path = Path(path)
    out_columns = list(columns) + [c for c in ("duration", "lang_tags") if c not in columns]
    rows = []
    for seg in segments:
        cells = dict(seg.cells)
        if not Path(cells["audio_path"]).is_absolute():
            cells["audio_path"] = Path(os.path.relpath(seg.audio, path.parent.resolve())).as_posix()
        cells["duration"] = cells.get("duration") or f"{seg.duration:.3f}"
        cells["lang_tags"] = cells.get("lang_tags") or " ".join(seg.lang_tags)
        rows.append([cells[c] for c in out_columns])
    return atomic.write_tsv(path, out_columns, rows)


def write_rejected(path: str | Path, columns: list[str], rejected: Iterable[Rejected]) -> Path:
    """`line`, `reason`, then the original row verbatim: cut the first two columns to get manifest rows back."""
    lines = ["\t".join([*REJECTED_COLUMNS, *columns])]
    lines += [f"{r.line}\t{'; '.join(r.reasons).replace(chr(9), ' ')}\t{r.raw}" for r in rejected]
    return atomic.write_text(path, "\n".join(lines) + "\n")


class _Reader:
    def __init__(self, path: Path, check_audio: bool):
        self.path = path
        self.check_audio = check_audio
        self.audio_info: dict[Path, audio.AudioInfo | str] = {}
        self.resolved: dict[str, Path] = {}
        self.first_line_of_id: dict[str, int] = {}
        self.renormalized = 0
        self.derived_tags = 0

    def fatal(self, line: int, message: str, column: str | None = None, index: int | None = None):
        raise ManifestError([Problem(self.path, line, column, index, message)])

    def run(self) -> Manifest:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.fatal(0, "manifest file not found")
        except OSError as err:
            self.fatal(0, f"manifest file unreadable: {err}")
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        if not lines or not lines[0].strip():
            self.fatal(1, "the file is empty: expected a header row")
        columns = self.header(lines[0].rstrip(b"\r"))
        manifest = Manifest(self.path, columns)
        for number, raw in enumerate(lines[1:], start=2):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            problems, segment = self.row(number, raw, columns)
            if problems:
                manifest.problems.extend(problems)
                text_raw = raw.decode("utf-8", errors="backslashreplace")
                reasons = [f"column {p.column}: {p.message}" if p.column else p.message for p in problems]
                manifest.rejected.append(Rejected(number, text_raw, reasons))
            else:
                manifest.segments.append(segment)
        manifest.derived_lang_tags = self.derived_tags
        if self.renormalized:
            manifest.notes.append(f"{self.renormalized} transcript/translation cell(s) were not in Unicode NFC "
                                  "and were normalized")
        return manifest

    def header(self, raw: bytes) -> list[str]:
        try:
            columns = [c.strip() for c in raw.decode("utf-8").split("\t")]
        except UnicodeDecodeError as err:
            self.fatal(1, f"header is not valid UTF-8 (byte {err.start})")
        for index, name in enumerate(columns, start=1):
            if not name:
                self.fatal(1, "empty column name", "", index)
            if columns.index(name) != index - 1:
                self.fatal(1, f"column '{name}' appears twice (first as column {columns.index(name) + 1})",
                           name, index)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            self.fatal(1, f"required column(s) missing from the header: {', '.join(missing)} "
                          f"(found: {', '.join(columns)})")
        return columns

    def row(self, number: int, raw: bytes, columns: list[str]) -> tuple[list[Problem], Segment | None]:
        def problem(column: str | None, message: str) -> Problem:
            index = columns.index(column) + 1 if column in columns else None
            return Problem(self.path, number, column, index, message)

        fields_raw = raw.split(b"\t")
        for index, cell in enumerate(fields_raw):
            try:
                cell.decode("utf-8")
            except UnicodeDecodeError as err:
                name = columns[index] if index < len(columns) else f"extra field {index + 1}"
                return [Problem(self.path, number, name, index + 1,
                                f"not valid UTF-8: byte 0x{cell[err.start]:02x} at offset {err.start} of the cell")], None
        cells_list = [c.decode("utf-8") for c in fields_raw]
        if len(cells_list) != len(columns):
            where = columns[len(cells_list)] if len(cells_list) < len(columns) else f"extra field {len(columns) + 1}"
            index = min(len(cells_list), len(columns)) + 1
            return [Problem(self.path, number, where, index,
                            f"row has {len(cells_list)} fields, the header has {len(columns)}")], None
        cells = dict(zip(columns, cells_list))
        problems: list[Problem] = []

        for name in set(cells) & set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS):
            cells[name] = cells[name].strip()
        for name in ("transcript", "translation"):
            if name in cells:
                normalized = " ".join(text.nfc(cells[name]).split())
                if text.nfc(cells[name]) != cells[name]:
                    self.renormalized += 1
                cells[name] = normalized

        seg_id = cells["id"]
        if not seg_id:
            problems.append(problem("id", "empty id"))
        elif not ID_PATTERN.match(seg_id):
            problems.append(problem("id", f"id {seg_id!r} has characters outside [A-Za-z0-9_.-]"))
        elif seg_id in self.first_line_of_id:
            problems.append(problem("id", f"duplicate id {seg_id!r} (first on line {self.first_line_of_id[seg_id]})"))
        else:
            self.first_line_of_id[seg_id] = number

        if not cells["transcript"]:
            problems.append(problem("transcript", "empty transcript"))
        tokens = text.words(cells["transcript"])

        if cells.get("lang_tags"):
            lang_tags = cells["lang_tags"].split()
            unknown = sorted(set(lang_tags) - set(text.LANG_TAGS))
            if unknown:
                problems.append(problem("lang_tags", f"unknown tag(s) {', '.join(unknown)}: use vi, en or x"))
            if len(lang_tags) != len(tokens):
                problems.append(problem("lang_tags", f"{len(lang_tags)} tag(s) for {len(tokens)} transcript word(s)"))
        else:
            lang_tags = text.tag_words(tokens)
            self.derived_tags += 1

        bounds = {}
        for name in ("start", "end", "duration"):
            value = cells.get(name, "")
            if value:
                try:
                    bounds[name] = float(value)
                except ValueError:
                    problems.append(problem(name, f"{value!r} is not a number of seconds"))
                    continue
                if not bounds[name] >= 0 or bounds[name] == float("inf"):
                    problems.append(problem(name, f"{value} must be a finite number of seconds >= 0"))
        if "start" in bounds and "end" in bounds and bounds["end"] <= bounds["start"]:
            problems.append(problem("end", f"end {bounds['end']} is not after start {bounds['start']}"))

        audio_cell = cells["audio_path"]
        resolved = None
        start, end = bounds.get("start", 0.0), bounds.get("end")
        if not audio_cell:
            problems.append(problem("audio_path", "empty audio path"))
        else:
            resolved = self.resolve(audio_cell)
            info = self.probe(resolved)
            if isinstance(info, str):
                problems.append(problem("audio_path", info))
            elif info is not None:
                if start >= info.duration:
                    problems.append(problem("start", f"start {start} is past the end of the audio ({info.duration:.3f} s)"))
                if end is None:
                    end = info.duration
                elif end > info.duration + END_TOLERANCE:
                    problems.append(problem("end", f"end {end} is past the end of the audio ({info.duration:.3f} s)"))
                else:
                    end = min(end, info.duration)
                if "duration" in bounds and end > start and abs(bounds["duration"] - (end - start)) > DURATION_TOLERANCE:
                    problems.append(problem("duration", f"duration {bounds['duration']} s differs from the audio's "
                                                        f"{end - start:.3f} s by more than {DURATION_TOLERANCE} s"))
            elif end is None:
                end = bounds.get("duration", 0.0) + start

        if problems:
            return problems, None
        return [], Segment(number, cells, resolved, start, end, lang_tags)

    def resolve(self, audio_cell: str) -> Path:
        """The absolute audio path of a cell (memoized: a recording's segments share one file)."""
        if audio_cell not in self.resolved:
            path = Path(audio_cell)
            self.resolved[audio_cell] = (path if path.is_absolute() else self.path.parent / path).resolve()
        return self.resolved[audio_cell]

    def probe(self, path: Path) -> audio.AudioInfo | str | None:
        """The file's header, an error message, or None when audio checks are off."""
        if not self.check_audio:
            return None
        if path not in self.audio_info:
            try:
                self.audio_info[path] = audio.probe(path)
            except audio.AudioError as err:
                self.audio_info[path] = str(err)
        return self.audio_info[path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.manifest", description="Validate a manifest.tsv.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate and summarize; exit 1 if anything is wrong")
    check.add_argument("path")
    check.add_argument("--no-audio", action="store_true", help="skip opening the audio files")
    args = parser.parse_args(argv)
    try:
        manifest = read(args.path, on_error="skip", check_audio=not args.no_audio)
    except ManifestError as err:
        print(err, file=sys.stderr)
        return 1
    for key, value in manifest.summary().items():
        print(f"{key:>24}: {value}")
    for note in manifest.notes:
        print(f"note: {note}")
    if manifest.problems:
        print(f"\n{len(manifest.problems)} problem(s):", file=sys.stderr)
        for p in manifest.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
