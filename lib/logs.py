"""Where the libraries' messages go: a stage's log file under `outputs/<profile>/logs/`, not the executed report.

transformers, datasets, accelerate, huggingface_hub and Python's warnings all write to stderr, which a notebook keeps
as cell output: load reports of models built to be partial, deprecation notices, progress bars frozen at 0 % in the
saved HTML. A notebook calls `to_stage_log` once; the reader of the report sees the results, and the log keeps
every message with its time.
"""
from __future__ import annotations

import logging
from pathlib import Path

LIBRARIES = ("transformers", "datasets", "accelerate", "huggingface_hub", "silero_vad", "lhotse", "py.warnings")


def to_stage_log(paths, stage: str) -> Path:
    """Send the libraries' log records and Python's warnings to `<logs>/<stage>.log` (appended), and turn off their
    progress bars; returns the log's path."""
    import datasets
    import transformers

    path = Path(paths.logs) / f"{stage}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.stage_log = True  # this module's, replaced when a stage is set up again in the same kernel
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    logging.captureWarnings(True)
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "stage_log", False)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.propagate = False
    return path
