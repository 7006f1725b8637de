"""The one exception type for mistakes a user can fix (exit code 2 from the CLI)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A bad path, config value, column or input: the message says what and how to fix it."""


class SaidByMainRank(UserError):
    """A rank > 0 of a launch stops because the main rank stopped with a mistake it reports itself (a refused
    --out): exit code 2 without a line of its own, so the launch shows the main rank's line once."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
