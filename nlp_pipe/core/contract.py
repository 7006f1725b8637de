"""What a stage declares to the runner (its inputs) and hands back to it (its result).

Every stage module defines NAME, VERSION (bumped by hand when its output changes), a frozen
dataclass `Config`, `INPUTS` (name -> Input), `OUTPUTS` (the files and folders it always writes,
checked by the runner after the run) and `run(config, inputs, out) -> Result`. A stage that trains
across the processes of `accelerate launch` also sets `DISTRIBUTED = True` (the runner then runs it
in every process once the main one, under the lock, decided to build; only the main one writes the
artifact). A corpus stage that splits its rows across
those processes sets `SHARDED = True`: every process runs it into the main one's staging directory,
writes its part there (core.shards) and the main one merges the parts and publishes. A stage with
neither runs in one process: under a launch every process stops with a one-line error (exit 2).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)
_SHOWN_LINES = 10  # places kept per drop reason for the manifest and the report


@dataclass(frozen=True)
class Input:
    """One named input of a stage: files, artifact directories, or either."""

    help: str
    kind: Literal["file", "artifact", "any"] = "file"
    multiple: bool = False
    required: bool = True
    stages: tuple[str, ...] = ()  # upstream stages whose artifacts fit here (empty = any)
    hub: bool = False  # a model or tokenizer: a Hugging Face Hub id (org/name[@revision]) is accepted too


class Counts:
    """Rows in, rows out and rows dropped by reason (with the first lines where it happened): what every
    stage records in its manifest, with the columns read from each file and notices for the report."""

    def __init__(self) -> None:
        self.rows_in = 0
        self.rows_out = 0
        self.dropped: Counter[str] = Counter()
        self.where: dict[str, list[str]] = {}
        self.columns: dict[str, dict[str, Any]] = {}
        self.notices: list[str] = []

    @classmethod
    def of(cls, rows_in: int, rows_out: int | None = None, dropped: Mapping[str, int] | None = None) -> Counts:
        """The counts of a stage that knows its rows in bulk (rows_out = rows_in unless given); also reads `as_dict()`."""
        counts = cls()
        counts.rows_in, counts.rows_out = rows_in, rows_in if rows_out is None else rows_out
        counts.dropped.update(dropped or {})
        return counts

    def drop(self, reason: str, n: int = 1, where: str | None = None) -> None:
        self.dropped[reason] += n
        if where is not None and len(shown := self.where.setdefault(reason, [])) < _SHOWN_LINES:
            shown.append(where)

    def notice(self, text: str) -> None:
        log.warning(text)
        self.notices.append(text)

    def absorb(self, later: Counts) -> None:
        """Add the counts of rows read after these (by another process): as if one process had read them all."""
        self.rows_in += later.rows_in
        self.rows_out += later.rows_out
        self.dropped.update(later.dropped)
        for reason, places in later.where.items():
            shown = self.where.setdefault(reason, [])
            shown += places[:_SHOWN_LINES - len(shown)]
        # as one process: a file named as an earlier one (another folder's data.jsonl) replaces its columns, and says
        # its own notices (each file's first record is read by one span only)
        self.columns.update(later.columns)
        self.notices += later.notices

    def bad(self, reasons: tuple[str, ...]) -> int:
        return sum(self.dropped[r] for r in reasons)

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `counts`."""
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "dropped": dict(sorted(self.dropped.items()))}

    def details(self) -> dict[str, Any]:
        """The manifest's `reading`: columns used per file, where rows were dropped, notices."""
        out: dict[str, Any] = {}
        if self.columns:
            out["columns"] = self.columns
        if self.where:
            out["dropped_at"] = dict(sorted(self.where.items()))
        if self.notices:
            out["notices"] = self.notices
        return out


@dataclass
class Result:
    """What a stage hands back to the runner for the manifest and report."""

    counts: Counts | None = None  # rows in, out and dropped by reason; None: the stage counts no rows (e.g. vocab)
    metrics: dict[str, Any] = field(default_factory=dict)
    report: str = ""  # markdown body appended under the runner's summary
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific manifest fields
    cleanup: list[Path] = field(default_factory=list)  # work dirs (e.g. checkpoints) the runner removes once published
    hashed: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # files hashed as written (manifest.hashed)
