"""The artifact directory contract: fingerprint, atomic publish, ownership, lock.

An artifact is a directory written by one stage. It is built in a hidden temporary
sibling (`.NAME.tmp-*`) and renamed into place only after `manifest.json` has been
written into it, so `manifest.json` present in `NAME/` means the artifact is complete.
Only a directory whose manifest is ours and lists everything in it is ever replaced
(nlp_pipe.core.manifest). A per-artifact lock file (`.NAME.lock`, fcntl) keeps two
processes from writing the same artifact at once; it is removed when released.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

from . import config as configs
from .errors import UserError
from .manifest import MANIFEST, list_files, manifest_status, read_manifest, read_state, sha256_file, sha256_json, unlisted, write_state

REPORT = "report.md"
CACHE_ENV = "NLP_PIPE_CACHE"  # the shared cache folder, as HF_DATASETS_CACHE is datasets'
CACHE_DIR = "nlp_pipe_cache"
_REMEMBER_HASH_BYTES = 1 << 20
LOG = "stage.log"
# set by the runner for a --force build: work files an earlier run with other settings left (its checkpoints) are
# discarded instead of refused
_FORCED: ContextVar[bool] = ContextVar("forced", default=False)
WORK_MARK = ".nlp-pipe-work.json"  # in a work directory the package made (claim_work_dir)


def fingerprint(stage: str, version: int, config: dict[str, Any], inputs: dict[str, list[str]]) -> str:
    """What an artifact depends on: stage code version, resolved config and input fingerprints.

    The package version and git commit are recorded in the manifest but not hashed here,
    so a docs edit does not retrain a model; a stage bumps VERSION when its output changes.
    """
    return sha256_json({"stage": stage, "version": version, "config": config, "inputs": inputs})


def config_files(config: Any) -> dict[str, str]:
    """The content of each file the config names (fields declared with path=True), as `sha256:HEX`: an edited
    file is another config, the same file moved elsewhere is not. A value that names no file (a preset) is absent."""
    named = {}
    for field in configs.fields(type(config)):
        value = getattr(config, field.name)
        if field.is_path and isinstance(value, str) and value and Path(value).expanduser().is_file():
            named[field.name] = f"sha256:{file_fingerprint(Path(value).expanduser())}"
    return named


def freshness_config(config: Any, files: dict[str, str]) -> dict[str, Any]:
    """The config as an artifact's fingerprint holds it: a named file by its content (`files`, config_files), a
    neutral field (never changes the artifact: checkpointing, resuming) at its default, so its value never
    makes an artifact stale, and an artifact written before it was neutral keeps its fingerprint when built
    with the default."""
    neutral = {f.name: f.default for f in configs.fields(type(config)) if f.is_neutral}
    return {**configs.to_dict(config), **neutral, **files}


@contextmanager
def forced(on: bool) -> Iterator[None]:
    """Within the block, `discard_other_runs()` says whether the build was forced (--force)."""
    token = _FORCED.set(on)
    try:
        yield
    finally:
        _FORCED.reset(token)


def discard_other_runs() -> bool:
    """Whether work files (checkpoints) of an earlier run with other settings are discarded rather than refused."""
    return _FORCED.get()


def input_fingerprint(path: Path, expected: dict[Path, str]) -> str:
    """An artifact contributes its fingerprint, a file inside one its fingerprint plus its name, a plain
    file or directory its content hash. `expected` maps artifact dirs a pipeline is about to (re)build
    to the fingerprint they will have. A snapshot in the Hugging Face cache is its repo id and commit."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return f"hf:{path.parent.parent.name[len('models--'):].replace('--', '/')}@{path.name}"
    for parent in (path, *path.parents[:2]):
        fp = expected.get(parent) or (read_manifest(parent) or {}).get("fingerprint")
        if fp:
            rel = path.relative_to(parent).as_posix()
            return fp if rel == "." else f"{fp}/{rel}"
    if path.is_dir():
        return sha256_json([(f["name"], f["sha256"]) for f in list_files(path)])
    return file_fingerprint(path)


def file_fingerprint(path: Path) -> str:
    """The sha256 of a plain input file. From 1 MB on it is remembered with the file's size and mtime
    ($XDG_CACHE_HOME/nlp_pipe/file-hashes.json), so rerunning a stage on an unchanged 1 GB corpus does not
    read it again (1.7 s of 4.6 s): the stat-first check artifacts get from their manifests."""
    stat = path.stat()
    if stat.st_size < _REMEMBER_HASH_BYTES:
        return sha256_file(path)
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nlp_pipe" / "file-hashes.json"
    key = str(path.resolve())
    known = read_state(store)
    entry = known.get(key)
    if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
        return str(entry[2])
    digest = sha256_file(path)
    known[key] = [stat.st_size, stat.st_mtime_ns, digest]
    try:  # a cache only: a read-only home costs the re-hash, nothing else
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return digest
    write_state(store, known)
    return digest


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@contextmanager
def locked(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold the artifact's lock; a second writer gets a one-line error instead of waiting silently, or
    with `wait` (cache entries: the second builder of one key uses the first one's result) waits for it.
    The lock file goes when released; one left by a killed process is taken over (the kernel freed it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            if _dead(fh):  # held by what its writer left running (processes it forked): not a writer
                lock_path.unlink(missing_ok=True)
                fh.close()
                continue
            if not wait:
                fh.close()
                raise UserError(f"{out} is being written by {owner}; wait for it to finish (or write to another --out)") from None
            fcntl.flock(fh, fcntl.LOCK_EX)
        if _same_file(fh, lock_path):
            break
        fh.close()  # the holder removed this lock file after we opened it: take the one that is there now
    _held.add(fh)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        _held.discard(fh)
        lock_path.unlink(missing_ok=True)  # while still holding it: whoever opened it meanwhile retries
        fh.close()


_held: set[IO[str]] = set()  # the lock files this process holds


def _release_in_child() -> None:
    """A forked child (a pool worker) closes its copies of the held locks' descriptors: an flock belongs to the open
    file, so a worker outliving its parent kept the artifact locked, and the rerun was refused naming a dead pid.
    The parent still holds them through its own descriptors."""
    for fh in _held:
        fh.close()
    _held.clear()


os.register_at_fork(after_in_child=_release_in_child)


def _dead(fh: IO[str]) -> bool:
    """Whether the process that took the lock on `fh`'s file has ended while others still hold it (what a killed
    writer forked); from /proc/locks, which names the locker (Linux; elsewhere a held lock is never taken over)."""
    st = os.fstat(fh.fileno())
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            holders = [int(f[4]) for f in (line.split() for line in locks) if len(f) > 5 and f[1] == "FLOCK" and f[5] == where]
    except (OSError, ValueError):
        return False
    for pid in holders:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except OSError:  # alive, another user's
            pass
        return False
    return bool(holders)


def _same_file(fh: IO[str], path: Path) -> bool:
    try:
        return os.fstat(fh.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def check_ownership(out: Path) -> None:
    """Refuse to replace anything at `out` that nlp-pipe cannot prove it wrote: a file, a link, a directory of
    other files, a manifest that is not ours, or an artifact holding files its manifest does not list."""
    if out.is_symlink() or out.is_file():
        raise UserError(f"{out} is a {'link' if out.is_symlink() else 'file'}, not an artifact directory; "
                        "nlp-pipe will not replace it. Choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    manifest, problem = manifest_status(out)
    if manifest is None:
        raise UserError(f"{out} is not an nlp-pipe artifact (it {problem}) and holds other files; nlp-pipe replaces only "
                        "artifacts it wrote, whatever --force says. Choose another --out, or move those files away")
    extra = unlisted(out, manifest)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise UserError(f"{out} holds files its manifest does not list ({shown}); nlp-pipe will not delete them. "
                        f"Move them out of {out} (or delete them yourself), then rerun")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `out`; call `publish` on it to make it `out`.

    Must be used under `locked(out)`: temporaries left by killed runs are removed here,
    which is only safe while no other writer can own them.
    """
    check_ownership(out)  # publish() replaces `out` wholesale
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


def saved_steps(work: Path) -> list[Path]:
    """Complete training checkpoints in a work dir, oldest first (hidden .step_*.tmp directories are unfinished
    saves). Here, not in the trainer: the runner reads them without importing torch (an interrupt may have
    stopped torch's import)."""
    return sorted(p for p in work.glob("step_*") if p.is_dir()) if work.exists() else []


def claim_work_dir(path: Path, writes: tuple[str, ...], where: str) -> None:
    """Make `path` a work directory of the package, marked (WORK_MARK) with the names (fnmatch patterns) it writes
    there, or reuse one it marked so. Anything else at `path` is the user's and is refused, since the runner removes
    the work directory once the artifact is published: a folder without the mark, or one holding other files."""
    mark = path / WORK_MARK
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"{where}: {path} is a {'link' if path.is_symlink() else 'file'} where nlp-pipe keeps its "
                        "checkpoints; move it away or choose another --out")
    if not path.exists():
        path.mkdir(parents=True)
        mark.write_text(json.dumps({"writes": list(writes)}) + "\n", encoding="utf-8")
        return
    if not mark.is_file():
        raise UserError(f"{where}: {path} exists but was not made by nlp-pipe (no {WORK_MARK}); nlp-pipe keeps its "
                        "checkpoints there and deletes them when done, so it will not use that folder. Move it away "
                        "or choose another --out")
    stray = sorted(p.name for p in path.iterdir() if p.name != WORK_MARK and not _written(p.name, writes))
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise UserError(f"{where}: {path} holds files nlp-pipe did not write ({shown}); it deletes that folder when done, "
                        "so move them out of it (or choose another --out)")


def remove_work_dir(path: Path) -> None:
    """Delete what the package wrote in a work directory of `claim_work_dir` (as its mark lists), then the folder
    if nothing else is left in it; a folder without the mark is not ours and stays as it is."""
    try:
        writes = json.loads((path / WORK_MARK).read_text(encoding="utf-8"))["writes"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for entry in path.iterdir():
        if entry.name != WORK_MARK and _written(entry.name, writes):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if [p.name for p in path.iterdir()] == [WORK_MARK]:
        (path / WORK_MARK).unlink()
        path.rmdir()


def _written(name: str, writes: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in writes)


def cache_dir(out: Path, override: str = "") -> Path:
    """The cache shared by every run (docs/pretraining-cache.md): `override` (an option), else $NLP_PIPE_CACHE,
    else `nlp_pipe_cache/` beside the artifact being built, so runs in one work folder share it."""
    chosen = override or os.environ.get(CACHE_ENV, "")
    return Path(chosen).expanduser() if chosen else final_path(out).parent / CACHE_DIR


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)  # elsewhere: read it by setting it (and back at once)
        os.umask(mask)
        return mask


def _readable(tmp: Path) -> None:
    """Every file of the artifact with the mode the user's umask gives new files: safetensors 0.8 writes its files
    0600 (it goes through a private temporary file), so model.safetensors was the one file of an artifact that
    another account (a server's) could not read."""
    mode = 0o666 & ~_umask()
    for path in tmp.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


def publish(tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then swap `tmp` into `out` with renames (same filesystem)."""
    _readable(tmp)
    data = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    check_ownership(out)  # again: files may have been added to the old artifact while this one was built
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
