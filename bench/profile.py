"""Where a run's time goes: the seconds of each stage and of each code cell, read from the executed notebooks that
`lib.pipeline` saved (papermill records every cell's start and end). Nothing is run again.

    python -m bench.profile                       # outputs/demo/reports
    python -m bench.profile outputs/dev --cells 05 --top 12

Prints one line per stage, then per cell of the stages `--cells` names (05 by default): its seconds and its first
source line. Writes outputs/bench/profile-<profile>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import common


def stage_cells(report: Path) -> list[dict]:
    """Each code cell of an executed notebook: its number, seconds and first source line (the markdown line above
    it when the cell opens with a call)."""
    notebook = json.loads(report.read_text(encoding="utf-8"))
    cells, said = [], ""
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).strip()
        if cell["cell_type"] == "markdown":
            said = source.splitlines()[0].lstrip("# ") if source else ""
            continue
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
        cells.append({"cell": len(cells) + 1, "seconds": round(seconds, 1),
                      "code": source.splitlines()[0] if source else "", "about": said})
    return cells


def profile(output_dir: Path) -> dict:
    """Stage name -> its seconds and cells, for every executed notebook under `output_dir/reports`."""
    reports = sorted((output_dir / "reports").glob("*.ipynb"))
    if not reports:
        raise SystemExit(f"{output_dir}/reports: no executed notebooks; run `python -m lib.pipeline` first")
    stages = {}
    for report in reports:
        cells = stage_cells(report)
        stages[report.stem] = {"seconds": round(sum(c["seconds"] for c in cells), 1), "cells": cells}
    return stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="outputs/demo", type=Path)
    parser.add_argument("--cells", nargs="*", default=["05"], help="stages whose cells are listed (their numbers)")
    parser.add_argument("--top", type=int, default=0, help="list only the slowest cells of each (0: all)")
    args = parser.parse_args(argv)
    stages = profile(args.output_dir)
    total = sum(s["seconds"] for s in stages.values())
    print(f"{'stage':<20} {'seconds':>8}")
    for name, stage in stages.items():
        print(f"{name:<20} {stage['seconds']:>8.1f}")
    print(f"{'all':<20} {total:>8.1f}")
    for name, stage in stages.items():
        if name[:2] not in args.cells:
            continue
        cells = sorted(stage["cells"], key=lambda c: -c["seconds"])[:args.top] if args.top else stage["cells"]
        print(f"\n{name}: cell, seconds, what it does")
        for c in cells:
            print(f"{c['cell']:>4} {c['seconds']:>7.1f}  {(c['about'] or c['code'])[:90]}")
    out = common.BENCH_DIR / f"profile-{args.output_dir.name}.json"
    common.atomic.write_json(out, {"output_dir": str(args.output_dir), "machine": common.machine(),
                                   "seconds": round(total, 1), "stages": stages})
    print(f"\n{out}")


if __name__ == "__main__":
    main()
