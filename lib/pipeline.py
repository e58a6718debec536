"""Run the notebooks headless with papermill: `python -m lib.pipeline --params params/dev.yaml [--only NN ...] [--from NN]`.

Each notebook gets the params file and the overrides (its `parameters` cell holds only `params_file` and
`overrides`) and loads them with lib.config, as the runner does. Each executed notebook is saved to
`outputs/<profile>/reports/NN_name.ipynb` with an HTML copy beside it, the failed one included (its report shows the
error in place). The run stops at the first failure, naming the notebook and the cell. `provenance.json` records what
ran: git commit, params, manifest and constraints hashes, library versions, hardware.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib import atomic, config, families

NOTEBOOK_DIR = config.PROJECT_ROOT / "notebooks"
CONSTRAINTS = config.PROJECT_ROOT / "constraints.txt"
KERNEL = "python3"
KERNEL_DIED_EXIT = 138  # papermill's own exit code for a dead kernel
LIBRARIES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "sentencepiece", "jiwer", "sacrebleu",
             "soundfile", "soxr", "numpy", "pandas", "papermill", "nbconvert", "seaborn")

log = logging.getLogger("lib.pipeline")


class NotebookFailed(RuntimeError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StepResult:
    notebook: str
    status: str  # ok | failed | kernel died
    seconds: float
    report: str | None
    error: str | None = None


def stages(params: config.Params, notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """The stages in order, name -> notebook: split, prepare, the training notebook of each family the run names
    (where the family keeps it), evaluate, charts (in `notebook_dir`)."""
    trained = {families.get(name).notebook: families.get(name).notebook_path for name in params.family_names}
    return {name: notebook_dir / f"{name}.ipynb" for name in ("01_split", "02_prepare")} | trained | \
        {name: notebook_dir / f"{name}.ipynb" for name in ("05_evaluate", "06_charts")}


def select(stage_names: list[str], only: list[str] | None = None, start: str | None = None) -> list[str]:
    """Pick stages by number prefix ('03') or name, in pipeline order."""
    def find(key: str) -> str:
        for name in stage_names:
            if name == key or name.split("_")[0] == key.zfill(2):
                return name
        raise SystemExit(f"no notebook matches {key!r}: choose from {', '.join(stage_names)}")

    chosen = list(stage_names)
    if start:
        chosen = chosen[chosen.index(find(start)):]
    if only:
        wanted = {find(k) for k in only}
        chosen = [n for n in chosen if n in wanted]
    return chosen


def run(params_path: str | Path, overrides: dict | None = None, only: list[str] | None = None,
        start: str | None = None, notebook_dir: Path = NOTEBOOK_DIR, kernel: str = KERNEL) -> list[StepResult]:
    """Execute the chosen notebooks in order; raise NotebookFailed at the first failure."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    params = config.load(params_path, overrides)
    notebooks = stages(params, notebook_dir)
    chosen = select(list(notebooks), only, start)
    missing = [str(notebooks[n]) for n in chosen if not notebooks[n].exists()]
    if missing:
        raise NotebookFailed(f"notebook(s) not found: {', '.join(missing)}")
    unavailable = unavailable_models(params, chosen)
    if unavailable:
        raise NotebookFailed("the params name models that cannot be had; nothing ran:\n" +
                             "\n".join(f"  - {problem}" for problem in unavailable), exit_code=2)
    paths = params.paths
    paths.reports.mkdir(parents=True, exist_ok=True)
    steps: list[StepResult] = []
    provenance = collect_provenance(params, params_path)

    given = {"params_file": str(config.resolve(params_path)), "overrides": overrides or {}}
    os.environ[config.HEADLESS_ENV] = "1"  # the kernels inherit it: headless widgets can stall nbclient (#312)
    for name in chosen:
        source = notebooks[name]
        report = paths.reports / f"{name}.ipynb"
        log.info("%s: running (report: %s)", name, report)
        began = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source), str(report), parameters=given, kernel_name=kernel, log_output=True,
                progress_bar=False, cwd=str(config.PROJECT_ROOT), request_save_on_cell_execute=True,
            )
        except papermill.PapermillExecutionError as err:
            first_line = err.source.strip().splitlines()[0] if err.source.strip() else ""
            step = StepResult(name, "failed", time.perf_counter() - began, str(report),
                              f"cell {err.cell_index + 1} of the report (In [{err.exec_count}]: {first_line!r}): "
                              f"{err.ename}: {err.evalue}")
        except DeadKernelError as err:
            step = StepResult(name, "kernel died", time.perf_counter() - began, str(report), str(err))
        else:
            step = StepResult(name, "ok", time.perf_counter() - began, str(report))
        if report.exists():
            write_html(report)
        steps.append(step)
        write_provenance(paths.provenance, provenance, steps)
        if step.status == "ok":
            log.info("%s: ok in %.1f s", name, step.seconds)
            continue
        if step.status == "kernel died":
            raise NotebookFailed(f"{name}.ipynb: the kernel died ({step.error}); out of memory, most often. "
                                 f"Partial report: {report}", KERNEL_DIED_EXIT)
        raise NotebookFailed(f"{name}.ipynb failed at {step.error}\nPartial report: {report}")
    write_provenance(paths.provenance, provenance, steps)
    return steps


def unavailable_models(params: config.Params, chosen: list[str]) -> list[str]:
    """What keeps the chosen stages from loading their starting models: 02 loads every family's, a training notebook
    its family's, 05 every family's when it scores them untrained. Checked before anything runs, so an unreachable hub
    stops the run at once rather than hours later."""
    needed = {name for name in params.family_names if families.get(name).notebook in chosen}
    if "02_prepare" in chosen or ("05_evaluate" in chosen and params.evaluation.untrained):
        needed = set(params.family_names)
    return [problem for name in params.family_names if name in needed
            for problem in families.get(name).unavailable(params.section(name))]


def write_html(notebook_path: Path) -> Path:
    import nbconvert
    import nbformat

    nb = nbformat.read(notebook_path, as_version=4)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    return atomic.write_text(notebook_path.with_suffix(".html"), body)


def collect_provenance(params: config.Params, params_path: str | Path) -> dict:
    manifest = params.manifest_path
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, "-m", "lib.pipeline", *sys.argv[1:]],
        "git": git_state(),
        "params_file": str(params_path),
        "params_sha256": config.digest(params),
        "params": params.to_dict(),
        "manifest": {"path": str(manifest),
                     "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None},
        "constraints": {"path": str(CONSTRAINTS), "sha256": hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
                        if CONSTRAINTS.exists() else None},
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "hardware": hardware(),
    }


def write_provenance(path: Path, provenance: dict, steps: list[StepResult]) -> None:
    atomic.write_json(path, {**provenance, "notebooks": [vars(s) for s in steps]})


def git_state() -> dict | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=config.PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def hardware() -> dict:
    import torch

    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "memory_gb": _memory_gb(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [{"name": torch.cuda.get_device_name(i),
                         "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                        for i in range(torch.cuda.device_count())]
    return info


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not on Windows
        return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True, help="params/demo.yaml, params/dev.yaml or params/prod.yaml")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (01 ... 06)")
    parser.add_argument("--from", dest="start", metavar="NN", help="start at this notebook")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set whisper.epochs=1 (repeatable)")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel (default {KERNEL})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        steps = run(args.params, config.parse_overrides(args.set), args.only, args.start, kernel=args.kernel)
    except config.ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"pipeline stopped: {err}", file=sys.stderr)
        return err.exit_code
    done = [s for s in steps if s.status == "ok"]
    print(f"{len(done)} notebook(s) ran: " + ", ".join(f"{s.notebook} ({s.seconds:.0f} s)" for s in done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
