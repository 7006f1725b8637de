"""What a stage declares to the runner (its inputs) and hands back to it (its result).

Every stage module defines NAME, VERSION (bumped by hand when its output changes), a frozen
dataclass `Config`, `INPUTS` (name -> Input), `OUTPUTS` (the files and folders it always writes,
checked by the runner after the run) and `run(config, inputs, out) -> Result`. A stage that trains
across the processes of `accelerate launch` also sets `DISTRIBUTED = True` (the runner then runs it
in every process; only the main one writes the artifact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Input:
    """One named input of a stage: files, artifact directories, or either."""

    help: str
    kind: Literal["file", "artifact", "any"] = "file"
    multiple: bool = False
    required: bool = True
    stages: tuple[str, ...] = ()  # upstream stages whose artifacts fit here (empty = any)


@dataclass
class Result:
    """What a stage hands back to the runner for the manifest and report."""

    counts: dict[str, Any] | None = None  # rows_in, rows_out, dropped {reason: n}
    metrics: dict[str, Any] = field(default_factory=dict)
    report: str = ""  # markdown body appended under the runner's summary
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific manifest fields
    cleanup: list[Path] = field(default_factory=list)  # work dirs (e.g. checkpoints) the runner removes once published
