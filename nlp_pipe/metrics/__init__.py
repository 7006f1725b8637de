"""Offline metrics: they ship with the package, nothing is fetched.

`scores` holds the one definition of accuracy and macro-F1; `classification/` wraps it as an
`evaluate` module; `throughput` measures inference speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).parent


def path(name: str) -> str:
    """Local path of a shipped metric module, for `evaluate.load(path(name))`."""
    return str(_HERE / name / f"{name}.py")


def load(name: str = "classification") -> Any:
    """A shipped metric module (an evaluate.EvaluationModule), without touching the hub or the modules cache."""
    if name != "classification":
        raise ValueError(f"no shipped metric '{name}'")
    from .classification.classification import Classification

    return Classification()
