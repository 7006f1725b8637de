"""An artifact's manifest.json: reading it, proving it is ours, and checking the files it lists.

The manifest carries a schema marker (`SCHEMA`); a directory whose manifest.json lacks it (a web
app's, say) is never taken for an artifact, so nothing of the user's is ever replaced. The
manifest lists every file with its size, modification time and sha256:

- `check_files` is the check made every time an artifact is used as an input: size and mtime
  always, the sha256 only for a file whose mtime moved (a copy, a `touch`); what such a file
  hashed to is remembered beside the artifact (`.NAME.verified.json`, as git's index and DVC's
  state remember what they hashed), so an unchanged multi-GB artifact costs a stat per file.
- `verify` hashes everything (`nlp-pipe inspect`, and right after publishing).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError

MANIFEST = "manifest.json"
SCHEMA = "nlp-pipe.artifact/1"  # first key of every manifest this package writes
# manifests written before the schema marker existed carry all of these
_LEGACY_KEYS = {"stage", "stage_version", "fingerprint", "nlp_pipe_version", "files", "config"}
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def manifest_status(directory: str | Path) -> tuple[dict[str, Any] | None, str]:
    """(the manifest, "") for an artifact of ours; (None, why not) for anything else."""
    path = Path(directory) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"has no {MANIFEST}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"has a {MANIFEST} that cannot be read ({getattr(exc, 'strerror', None) or exc})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"has a {MANIFEST} that is not valid JSON{where}"
    if not _ours(data):
        return None, f"has a {MANIFEST} that nlp-pipe did not write (no '{SCHEMA}' schema marker)"
    return data, ""


def _ours(data: Any) -> bool:
    return isinstance(data, dict) and (data.get("schema") == SCHEMA or _LEGACY_KEYS <= data.keys()) \
        and isinstance(data.get("files"), list)


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished artifact of ours, or None (none, unreadable, or someone else's)."""
    return manifest_status(directory)[0]


def require_manifest(directory: str | Path, hint: str = "") -> dict[str, Any]:
    manifest, problem = manifest_status(directory)
    if manifest is None:
        reason = "does not exist" if not Path(directory).exists() else f"{problem}: not a finished nlp-pipe artifact"
        raise UserError(f"{directory} {reason}.{' ' + hint if hint else ''}")
    return manifest


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution in `names`; those not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def hashed(path: Path, sha256: str) -> tuple[int, int, str]:
    """(size, mtime, sha256) of a file just written and hashed as it was written, for `list_files`'s `known`."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, sha256


def list_files(directory: Path, known: dict[str, tuple[int, int, str]] | None = None) -> list[dict[str, Any]]:
    """Every file of an artifact (but the manifest) with its size, mtime and sha256, sorted by name.
    `known`: {name: `hashed(...)`} of files their writer hashed as it wrote them; each is taken as it is
    while the file keeps that size and mtime (reading a large file once more is a real share of a
    fast stage's time), and hashed again otherwise."""
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            stat = path.stat()
            size, mtime_ns, digest = (known or {}).get(rel, (-1, -1, ""))
            if (size, mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                digest = sha256_file(path)
            files.append({"name": rel, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest})
    return files


def unlisted(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Files and folders inside an artifact that its manifest does not list (someone added them)."""
    listed = {f["name"] for f in manifest.get("files", [])} | {MANIFEST}
    parents = {p for name in listed for p in Path(name).parents if str(p) != "."}
    found = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_dir() and not path.is_symlink():
            if rel not in parents and not any(parent.as_posix() in found for parent in rel.parents):
                found.append(rel.as_posix())
        elif rel.as_posix() not in listed and not any(parent.as_posix() in found for parent in rel.parents):
            found.append(rel.as_posix())
    return [f"{name}/" if (directory / name).is_dir() else name for name in found]


def check_files(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """What changed in the listed files since the artifact was written ([] = unchanged): size and mtime for
    every file, sha256 for a file whose mtime moved. Cheap for an unchanged artifact of any size."""
    state_path = directory.parent / f".{directory.name}.verified.json"
    state = read_state(state_path)
    problems, hashed = [], {}
    for entry in manifest.get("files", []):
        name, path = entry["name"], directory / entry["name"]
        try:
            stat = path.stat()
        except OSError:
            problems.append(f"{name} is missing")
            continue
        if stat.st_size != entry["bytes"]:
            problems.append(f"{name} has {stat.st_size:,} bytes, {entry['bytes']:,} when written")
            continue
        if stat.st_mtime_ns == entry.get("mtime_ns") or state.get(name) == [stat.st_size, stat.st_mtime_ns, entry["sha256"]]:
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} has other content than when written (sha256 differs)")
            continue
        hashed[name] = [stat.st_size, stat.st_mtime_ns, entry["sha256"]]
    if hashed:
        write_state(state_path, {**state, **hashed})
    return problems


def verify(directory: str | Path) -> list[str]:
    """Problems found when hashing every file of an artifact against its manifest ([] = intact)."""
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


def read_state(path: Path) -> dict[str, list]:
    """A JSON record of remembered hashes ({name: [size, mtime_ns, sha256]}); {} when absent or unreadable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: dict[str, list]) -> None:
    """Best effort: on a read-only filesystem the next use simply hashes again."""
    tmp = path.parent / f"{path.name}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # on a read-only mount even removing a file that is not there fails (EROFS)
            tmp.unlink(missing_ok=True)
