"""The shared cache folder (docs/pretraining-cache.md): `ROOT/KIND/KEY/` entries, listed and freed by `nlp-pipe cache`.

An entry is complete when its folder exists (builders write `.KEY.tmp-*` through artifacts.staging and rename it); each holds a
stats.json whose `built_for` says which inputs built it and when. An entry is removed only under its lock
(artifacts.locked), so nothing is deleted while a builder writes it; the leftovers of killed builds go with
`rm --all` or the next build of their key. Nothing else is ever listed or removed: a folder of an unknown kind, one
without stats.json, a folder that is not a cache at all (refused).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import UserError

PRETRAINING = "pretraining"  # data.pretraining's tokenised corpora and blocks
KINDS = (PRETRAINING,)  # every kind of entry; a folder of another name in the cache is not the cache's
STATS = "stats.json"  # in every complete entry, written last by its builder
_UNFINISHED = re.compile(r"\.(.+)\.tmp-[0-9a-f]+")  # an unfinished build (artifacts.staging's name)


@dataclass
class Entry:
    kind: str
    key: str
    path: Path
    bytes: int
    built_for: dict[str, Any]
    complete: bool


def entries(root: Path) -> list[Entry]:
    """Every entry and every unfinished build under `root`, by kind and key: only folders the cache wrote, a
    known kind's `KEY/` with its STATS or a `.KEY.tmp-*` of artifacts.staging. A folder with no known kind that
    holds anything is not a cache and is refused, so `rm --all` never walks someone else's folders."""
    if not root.is_dir():
        return []
    kinds = [root / kind for kind in KINDS if (root / kind).is_dir()]
    if not kinds and any(root.iterdir()):
        raise UserError(f"cache: {root} is not an nlp-pipe cache (no {' or '.join(f'{k}/' for k in KINDS)} folder in it); "
                        "give the cache folder (the `cache_dir` of your runs, or $" + artifacts.CACHE_ENV + ")")
    found = []
    for kind in kinds:
        for path in sorted(p for p in kind.iterdir() if p.is_dir() and not p.is_symlink()):
            unfinished = _UNFINISHED.fullmatch(path.name)
            if unfinished:
                found.append(Entry(kind.name, unfinished.group(1), path, _size(path), {}, False))
                continue
            try:
                stats = json.loads((path / STATS).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not written by the cache: neither listed nor removed
            built_for = stats.get("built_for", {}) if isinstance(stats, dict) else {}
            found.append(Entry(kind.name, path.name, path, _size(path), built_for, True))
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
