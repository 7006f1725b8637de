"""The shared cache folder (docs/pretraining-cache.md): `ROOT/KIND/KEY/` entries, listed and freed by `nlp-pipe cache`.

An entry is complete when its folder exists (builders write `.KEY.tmp-*` through artifacts.staging and rename it); each holds a
stats.json whose `built_for` says which inputs built it and when. An entry is removed only under its lock
(artifacts.locked), so nothing is deleted while a builder writes it; the leftovers of killed builds go with
`rm --all` or the next build of their key.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import UserError


@dataclass
class Entry:
    kind: str
    key: str
    path: Path
    bytes: int
    built_for: dict[str, Any]
    complete: bool


def entries(root: Path) -> list[Entry]:
    """Every entry and every unfinished build under `root`, by kind and key."""
    found = []
    for kind in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for path in sorted(p for p in kind.iterdir() if p.is_dir()):
            complete = not path.name.startswith(".")
            try:
                stats = json.loads((path / "stats.json").read_text(encoding="utf-8")) if complete else {}
            except (OSError, ValueError):
                stats = {}
            key = path.name if complete else path.name[1:].split(".tmp-")[0]
            found.append(Entry(kind.name, key, path, _size(path), stats.get("built_for", {}), complete))
    return found


def remove(root: Path, keys: list[str], everything: bool) -> list[Entry]:
    """Remove the entries whose key starts with one of `keys` (all with `everything`); returns them."""
    if not keys and not everything:
        raise UserError("cache rm: name the keys to remove (nlp-pipe cache ls shows them), or pass --all")
    chosen = [e for e in entries(root) if everything or any(e.key.startswith(k) for k in keys)]
    missing = [k for k in keys if not any(e.key.startswith(k) for e in chosen)]
    if missing:
        raise UserError(f"cache rm: no entry {', '.join(missing)} in {root} (nlp-pipe cache ls shows them)")
    for entry in chosen:
        with artifacts.locked(entry.path.parent / entry.key):  # a builder of this key holds it: one-line error
            shutil.rmtree(entry.path, ignore_errors=True)
    return chosen


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
