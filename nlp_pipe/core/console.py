"""What the terminal shows: a line when each stage starts and ends, our progress bars, warnings, errors.

Everything else a run logs (the resolved config, what was read, the libraries' INFO lines) goes to the
artifact's stage.log only. `--log-level info|debug` shows it on the terminal too, `-v` also turns the
libraries' own chatter, warnings and progress bars back on, `-q` leaves warnings and errors only (no bars).
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

STAGE_LOGGER = "nlp_pipe.runner"  # its INFO lines are the start/finish lines the terminal always shows
_NOISY = ("datasets", "filelock", "fsspec", "urllib3", "matplotlib", "gensim", "accelerate", "transformers",
          "huggingface_hub", "torch", "jieba", "httpx", "PIL")
_state = {"quiet": False}


class _Console(logging.Filter):
    """Our records at the chosen level (and the stage lines); the libraries' (their loggers, and Python
    warnings through py.warnings) only errors unless -v: accelerate's "Removed shared tensor ... while
    saving" on every checkpoint and the like would bury the progress bar. stage.log keeps them."""

    def __init__(self, level: int, verbose: bool) -> None:
        super().__init__()
        self.level, self.verbose = level, verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.verbose and record.name.split(".")[0] != "nlp_pipe":
            return record.levelno >= max(self.level, logging.ERROR)
        return record.levelno >= self.level or (record.name == STAGE_LOGGER and record.levelno >= logging.INFO
                                                and self.level <= logging.WARNING and not _state["quiet"])


def configure(level: str = "warning", quiet: bool = False, verbose: bool = False) -> None:
    """Set up the terminal for one CLI invocation (idempotent: a second call replaces the first's handler)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_nlp_pipe", False)]:
        root.removeHandler(handler)
    threshold = logging.DEBUG if verbose else logging.ERROR if quiet else getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_Console(logging.WARNING if quiet and not verbose else threshold, verbose))
    handler._nlp_pipe = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # stage.log keeps INFO whatever the terminal shows
    _state["quiet"] = quiet and not verbose
    logging.captureWarnings(True)  # the libraries' warnings.warn calls go through the filter above too
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    _libraries(verbose)


def _libraries(verbose: bool) -> None:
    """transformers' LOAD REPORT tables and "Writing model shards" bars, datasets' map bars, hub downloads:
    silenced unless -v. Through their environment variables for libraries not imported yet (so `--help`
    stays fast), and through their own switches for those already imported (an earlier run in this process)."""
    values = {"TRANSFORMERS_VERBOSITY": "info" if verbose else "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "0" if verbose else "1",
              "HF_HUB_DISABLE_PROGRESS_BARS": "0" if verbose else "1", "ACCELERATE_LOG_LEVEL": "DEBUG" if verbose else "WARNING",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "0" if verbose else "1"}
    os.environ.update(values)
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_info() if verbose else transformers_logging.set_verbosity_error()
        transformers_logging.enable_progress_bar() if verbose else transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.enable_progress_bars() if verbose else datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.utils as hub_utils

        hub_utils.enable_progress_bars() if verbose else hub_utils.disable_progress_bars()


def announce(text: str) -> None:
    """Lines the terminal shows like a stage's start and end (not with -q), and stage.log keeps."""
    logging.getLogger(STAGE_LOGGER).info(text)


def quiet() -> bool:
    return _state["quiet"]


_bars: weakref.WeakSet[tqdm] = weakref.WeakSet()  # open or not; closing twice is harmless


def progress(**kwargs: Any) -> tqdm:
    """Our progress bar: on stderr, redrawn at most once a second on a terminal and every 30 s in a log
    file (so logs stay readable), none with -q."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 1.0 if interactive else 30.0)
    if _state["quiet"]:
        kwargs["disable"] = True
    bar = tqdm(**kwargs)
    _bars.add(bar)
    return bar


def advance_to(bar: tqdm, done: int) -> None:
    """Move a bar over a known total to `done`, never past the total (a compressed file's bytes read exceed its size)."""
    bar.update(max(0, min(done, bar.total) - bar.n))


def end_bars() -> None:
    """Close the bars a failing step left open, so that the line said next starts on a line of its own (it was
    glued onto the bar: `segment:  40%|####  | ...error: ...`)."""
    for bar in list(_bars):
        bar.close()


def bytes_progress(total: int, desc: str) -> tqdm:
    """A bar over `total` bytes of input (MB read, rate, ETA): the one total every corpus step knows up front."""
    return progress(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc)


def file_lines(paths: list[Path], desc: str) -> Iterator[str]:
    """The lines of UTF-8 `paths` (newline kept), with a bytes_progress bar over the files."""
    with bytes_progress(sum(p.stat().st_size for p in paths), desc) as bar:
        for path in paths:
            with open(path, "rb") as fh:
                for raw in fh:
                    bar.update(len(raw))
                    yield raw.decode("utf-8")
