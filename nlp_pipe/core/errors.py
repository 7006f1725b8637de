"""The one exception type for mistakes a user can fix (exit code 2 from the CLI)."""

from __future__ import annotations

import difflib
import errno
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """A bad path, config value, column or input: the message says what and how to fix it."""


class SaidByMainRank(UserError):
    """A rank > 0 of a launch stops because the main rank stopped with a mistake it reports itself (a refused
    --out): exit code 2 without a line of its own, so the launch shows the main rank's line once."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def as_os_error(exc: BaseException, where: Path | None = None) -> OSError | None:
    """`exc` as the OSError it is or stands for, else None. Writers of model files report a full disk in their own
    types, which no `except OSError` catches: safetensors its SafetensorError, "... No space left on device (os error
    28)"; torch.save (an optimizer's state) a RuntimeError of its C++ stream ("basic_ios::clear: iostream error",
    "PytorchStreamWriter failed writing file"), with no errno at all: taken as a full disk when `where`'s filesystem
    has less than a MiB left."""
    if isinstance(exc, OSError):
        return exc
    text = str(exc)
    found = re.search(r"\(os error (\d+)\)", text) if type(exc).__name__ == "SafetensorError" else None
    if found is not None:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    if isinstance(exc, RuntimeError) and any(mark in text for mark in _TORCH_WRITER) and where is not None:
        try:
            full = shutil.disk_usage(where).free < 1 << 20
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


_TORCH_WRITER = ("iostream error", "PytorchStreamWriter failed", "inline_container.cc")
