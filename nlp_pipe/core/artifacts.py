"""The artifact directory contract: manifest, fingerprint, atomic publish, lock.

An artifact is a directory written by one stage. It is built in a hidden temporary
sibling (`.NAME.tmp-*`) and renamed into place only after `manifest.json` has been
written into it, so `manifest.json` present in `NAME/` means the artifact is complete.
A per-artifact lock file (`.NAME.lock`, fcntl) keeps two processes from writing
the same artifact at once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError

MANIFEST = "manifest.json"
REPORT = "report.md"
LOG = "stage.log"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def fingerprint(stage: str, version: int, config: dict[str, Any], inputs: dict[str, list[str]]) -> str:
    """What an artifact depends on: stage code version, resolved config and input fingerprints.

    The package version and git commit are recorded in the manifest but not hashed here,
    so a docs edit does not retrain a model; a stage bumps VERSION when its output changes.
    """
    return sha256_json({"stage": stage, "version": version, "config": config, "inputs": inputs})


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished artifact, or None when there is none (or it is unreadable)."""
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def require_manifest(directory: str | Path, hint: str = "") -> dict[str, Any]:
    manifest = read_manifest(directory)
    if manifest is None:
        reason = "does not exist" if not Path(directory).exists() else f"has no readable {MANIFEST} (not a finished artifact)"
        raise UserError(f"{directory} {reason}.{' ' + hint if hint else ''}")
    return manifest


def list_files(directory: Path) -> list[dict[str, Any]]:
    """Every file of an artifact (but the manifest) with its size and sha256, sorted by name."""
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            files.append({"name": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return files


def verify(directory: str | Path) -> list[str]:
    """Problems found when comparing an artifact's files with its manifest ([] = intact)."""
    directory = Path(directory)
    manifest = require_manifest(directory)
    recorded = {f["name"]: f for f in manifest.get("files", [])}
    actual = {f["name"]: f for f in list_files(directory)}
    problems = [f"missing file {name}" for name in recorded.keys() - actual.keys()]
    problems += [f"unrecorded file {name}" for name in actual.keys() - recorded.keys()]
    problems += [
        f"sha256 mismatch in {name}"
        for name in recorded.keys() & actual.keys()
        if recorded[name]["sha256"] != actual[name]["sha256"]
    ]
    return sorted(problems)


def input_fingerprint(path: Path, expected: dict[Path, str]) -> str:
    """An artifact contributes its fingerprint, a file inside one its fingerprint plus its name, a plain
    file or directory its content hash. `expected` maps artifact dirs a pipeline is about to (re)build
    to the fingerprint they will have."""
    for parent in (path, *path.parents[:2]):
        fp = expected.get(parent) or (read_manifest(parent) or {}).get("fingerprint")
        if fp:
            rel = path.relative_to(parent).as_posix()
            return fp if rel == "." else f"{fp}/{rel}"
    if path.is_dir():
        return sha256_json([(f["name"], f["sha256"]) for f in list_files(path)])
    return sha256_file(path)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the artifact's lock; a second writer gets a one-line error instead of waiting silently."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    fh = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise UserError(
                f"{out} is being written by {owner}; wait for it to finish (or write to another --out)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `out`; call `publish` on it to make it `out`.

    Must be used under `locked(out)`: temporaries left by killed runs are removed here,
    which is only safe while no other writer can own them.
    """
    # publish() replaces `out` wholesale: never do that to a file or to a directory of the user's
    # own files (`--out ~/data` would delete them); an empty directory or an artifact is fine.
    if out.is_file() or (out.is_dir() and read_manifest(out) is None and any(out.iterdir())):
        raise UserError(f"{out} exists and is not an nlp-pipe artifact (no {MANIFEST}); refusing to replace it. "
                        "Choose another --out, or remove it first.")
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def final_path(out: Path) -> Path:
    """The artifact directory a stage's `out` becomes: `.NAME.tmp-*` (see `staging`) -> `NAME`; else `out`."""
    match = re.fullmatch(r"\.(.+)\.tmp-[^.]+", out.name)
    return out.parent / match.group(1) if match else out


def work_dir(out: Path, purpose: str) -> Path:
    """`NAME.PURPOSE/` beside the artifact being built in `out`: a stable place for state that must
    outlive the temporary directory, such as training checkpoints (a rerun after a kill resumes from
    them) or preprocessing caches. The stage creates it if it needs it."""
    final = final_path(out)
    return final.parent / f"{final.name}.{purpose}"


def publish(tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then swap `tmp` into `out` with renames (same filesystem)."""
    data = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.tmp-old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:  # put the previous artifact back: a failed publish changes nothing
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
