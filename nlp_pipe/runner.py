"""Run one stage into one artifact: resolve inputs, fingerprint, skip if fresh, build, publish.

The runner owns paths: a stage writes only inside the temporary directory it is given,
and the runner hashes its files, writes report.md's summary and the manifest, and
renames the directory into place.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__, stages
from .checkpoints import references
from .core import artifacts, distributed, process
from .core import config as configs
from .core import manifest as manifests
from .core.contract import Input, Result
from .core.errors import SaidByMainRank, UserError, as_os_error, did_you_mean

log = logging.getLogger(__name__)  # its INFO lines (stage finished, fresh) are what the terminal shows
config_log = logging.getLogger(f"{__name__}.config")  # the resolved config: stage.log, not the terminal
STAGE_CONFIG = "stage_config.yaml"  # config + inputs of the run, the file `nlp-pipe STAGE --config` reads

_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "jieba", "gensim")


@dataclass
class Plan:
    """A stage invocation, resolved: what it would produce and whether it must run."""

    stage: str
    config: Any
    inputs: dict[str, list[Path]]
    input_fingerprints: dict[str, list[str]]
    out: Path
    fingerprint: str
    reason: str  # why it must run; "" when the artifact is fresh
    models: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # Hub ids of model inputs, resolved
    changed: list[str] = field(default_factory=list)  # files of the existing artifact that changed since it was written
    files: dict[str, str] = field(default_factory=dict)  # content of the files config options name (config_files)
    # the existing artifact's fingerprint when it holds what this plan builds but was fingerprinted before neutral
    # options left the fingerprint (with another value of one of them): it stays fresh, and readers keep reading it
    same_as: str = ""

    @property
    def fresh(self) -> bool:
        return not self.reason

    @property
    def artifact_fingerprint(self) -> str:
        """The fingerprint readers of `out` will see once this plan has run (or been skipped as fresh)."""
        return self.same_as if self.fresh and self.same_as else self.fingerprint


def plan(stage: str, config: dict[str, Any], inputs: dict[str, Any], out: str | Path,
         expected: dict[Path, str] | None = None, where: str | None = None) -> Plan:
    """Resolve a stage call. `expected` maps upstream artifact dirs to the fingerprint they will
    have once the pipeline has run, so `status` can see through stages that are about to rerun."""
    module = stages.load(stage)
    where = where or f"stage '{stage}'"
    cfg = configs.build(module.Config, config, where)
    out = Path(out)
    hub: dict[str, list[dict[str, str]]] = {}
    resolved = resolve_inputs(module, inputs, where, set(expected or {}), hub)
    _refuse_overlap(out, resolved, where)
    _refuse_nesting(out, where)
    _refuse_cache_placement(cfg, out, resolved, where)
    fps = {name: [artifacts.input_fingerprint(p, expected or {}) for p in paths] for name, paths in resolved.items()}
    files = artifacts.config_files(cfg)
    fp = artifacts.fingerprint(stage, module.VERSION, artifacts.freshness_config(cfg, files), fps)
    manifest, problem = manifests.manifest_status(out)
    changed: list[str] = []
    same_as = ""
    if manifest is not None and manifest.get("fingerprint") != fp and _written_before_neutral(manifest, stage, cfg, fps, files):
        same_as = manifest["fingerprint"]
    if manifest is None:
        reason = "no artifact yet" if not out.exists() else f"no finished artifact ({out.name} {problem})"
    elif manifest.get("fingerprint") != fp and not same_as:
        reason = _why_changed(manifest, stage, cfg, fps, files)
    else:
        changed = manifests.check_files(out, manifest)
        reason = f"changed on disk: {'; '.join(changed[:2])}" if changed else ""
    return Plan(stage, cfg, resolved, fps, out, fp, reason, hub, changed, files, same_as)


def _written_before_neutral(manifest: dict[str, Any], stage: str, cfg: Any, fps: dict[str, list[str]],
                            files: dict[str, str]) -> bool:
    """An artifact fingerprinted (as before) with every option, neutral ones included, that differs from `cfg` in
    those alone: it holds what `cfg` builds. Not with a named file, which such a fingerprint held by its name."""
    if files:
        return False
    old = manifest.get("config") or {}
    neutral = {f.name: old[f.name] for f in configs.fields(type(cfg)) if f.is_neutral and f.name in old}
    kept = {**configs.to_dict(cfg), **neutral}
    return bool(neutral) and manifest.get("fingerprint") == artifacts.fingerprint(stage, stages.load(stage).VERSION, kept, fps)


def _refuse_overlap(out: Path, inputs: dict[str, list[Path]], where: str) -> None:
    """--out must not be, hold, or lie inside an input: publishing it would replace or delete that input."""
    target = out.resolve()
    for name, paths in inputs.items():
        for path in paths:
            source = path.resolve()
            if target == source or source in target.parents or target in source.parents:
                how = "is" if target == source else "lies inside" if source in target.parents else "contains"
                raise UserError(f"{where}: --out {out} {how} input '{name}' ({path}); writing there would replace "
                                "or delete that input. Choose another --out")


def _refuse_nesting(out: Path, where: str) -> None:
    """--out must not lie inside an artifact: the outer one would then hold files its manifest does not list, and
    could not be rebuilt or replaced without deleting them (which nlp-pipe never does)."""
    for parent in out.resolve().parents:
        if manifests.manifest_status(parent)[0] is not None:
            raise UserError(f"{where}: --out {out} lies inside the artifact {parent}; choose an --out outside it")


def _refuse_cache_placement(cfg: Any, out: Path, inputs: dict[str, list[Path]], where: str) -> None:
    """A stage's shared cache folder (its `cache_dir`) must not be --out or lie inside it (publishing then refused
    the out that held the cache, after the whole cache was built), nor be or lie inside an input or another artifact
    (which then holds files its manifest does not list: `inspect` fails and it cannot be rebuilt)."""
    if not hasattr(cfg, "cache_dir"):
        return
    cache = artifacts.cache_dir(out, cfg.cache_dir).resolve()
    named = f"--cache-dir {cfg.cache_dir}" if cfg.cache_dir else f"the cache folder {cache}"
    target = out.resolve()
    if cache == target or target in cache.parents:
        raise UserError(f"{where}: {named} {'is' if cache == target else 'lies inside'} --out {out}; choose a cache "
                        "folder outside it")
    for name, paths in inputs.items():
        for path in paths:
            if cache == path.resolve() or path.resolve() in cache.parents:
                raise UserError(f"{where}: {named} {'is' if cache == path.resolve() else 'lies inside'} input '{name}' "
                                f"({path}); writing there would change that input. Choose a cache folder outside it")
    for parent in (cache, *cache.parents):
        if manifests.manifest_status(parent)[0] is not None:
            raise UserError(f"{where}: {named} lies inside the artifact {parent}; choose a cache folder outside it")


def resolve_inputs(module: Any, given: dict[str, Any], where: str, planned: Collection[Path] = frozenset(),
                   hub: dict[str, list[dict[str, str]]] | None = None) -> dict[str, list[Path]]:
    """Input paths by name, checked against the stage's INPUTS; paths inside `planned` artifact
    directories (to be written by earlier pipeline steps) are not required to exist yet. A model input
    that is no local path but a Hub id becomes its snapshot in the Hugging Face cache (recorded in `hub`)."""
    specs: dict[str, Input] = module.INPUTS
    unknown = set(given) - set(specs)
    if unknown:
        name = sorted(unknown)[0]
        raise UserError(f"{where}: unknown input '{name}'{did_you_mean(name, specs)}; inputs: {', '.join(specs)}")
    resolved = {}
    verified: set[Path] = set()
    for name, spec in specs.items():
        value = given.get(name)
        values = [] if value in (None, "", []) else list(value) if isinstance(value, (list, tuple)) else [value]
        if not values and spec.required:
            raise UserError(f"{where}: input '{name}' is required ({spec.help})")
        if len(values) > 1 and not spec.multiple:
            raise UserError(f"{where}: input '{name}' takes one path, got {len(values)}")
        paths = [_model_path(str(v), name, hub) if spec.hub else resolve_path(str(v)).resolve() for v in values]
        resolved[name] = [p if _is_planned(p, planned) else _check_path(p, spec, name, where, verified) for p in paths]
    return resolved


def resolve_path(text: str) -> Path:
    """A path, or `pkg:PACKAGE/relative/file` for data shipped inside an installed package."""
    if not text.startswith("pkg:"):
        return Path(text).expanduser()
    package, _, rel = text[4:].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{text}: package '{package}' is not installed (for the demo: pip install -e '.[demo]')")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def _model_path(text: str, name: str, hub: dict[str, list[dict[str, str]]] | None) -> Path:
    local = resolve_path(text)
    if local.exists() or not references.looks_like_hub_id(text):
        return local.resolve()
    model = references.resolve(text)
    if hub is not None:
        hub.setdefault(name, []).append(model.record())
    return model.path


def _is_planned(path: Path, planned: Collection[Path]) -> bool:
    return any(parent in planned for parent in (path, *path.parents[:2]))


def _check_path(path: Path, spec: Input, name: str, where: str, verified: set[Path]) -> Path:
    if not path.exists():
        hint = f" Run the stage that makes it first ({' or '.join(spec.stages)})." if spec.stages else ""
        raise UserError(f"{where}: input '{name}' points to {path}, which does not exist.{hint}")
    if path.is_dir():
        if spec.kind == "file":
            raise UserError(f"{where}: input '{name}' must be a file, {path} is a directory")
        manifest, problem = manifests.manifest_status(path)
        if manifest is not None and spec.stages and manifest.get("stage") not in spec.stages:
            raise UserError(
                f"{where}: input '{name}' must be a {' or '.join(spec.stages)} artifact, "
                f"{path} was made by '{manifest.get('stage')}'"
            )
        if manifest is None and spec.kind == "artifact":
            raise UserError(f"{where}: input '{name}' points to {path}, which {problem} (not a finished artifact)")
    elif spec.kind == "artifact":
        raise UserError(f"{where}: input '{name}' must be an artifact directory, {path} is a file")
    _verify_input(path, name, where, verified)
    return path


def _verify_input(path: Path, name: str, where: str, verified: set[Path]) -> None:
    """An input artifact (or a file inside one) must still hold exactly what its manifest lists."""
    for directory in (path, *path.parents[:2]):
        manifest = manifests.read_manifest(directory)
        if manifest is None:
            continue
        if directory not in verified:
            changed = manifests.check_files(directory, manifest)
            if changed:
                raise UserError(f"{where}: input '{name}' {directory} changed on disk since it was written "
                                f"({'; '.join(changed[:2])}); `nlp-pipe inspect {directory}` shows what changed. "
                                "Rebuild it (rerun its stage with --force) or restore it")
            verified.add(directory)
        return


def _why_changed(manifest: dict[str, Any], stage: str, cfg: Any, fps: dict[str, list[str]], files: dict[str, str]) -> str:
    if manifest.get("stage") != stage:
        return f"artifact was made by stage '{manifest.get('stage')}'"
    if manifest.get("stage_version") != stages.load(stage).VERSION:
        return "stage version changed"
    neutral = {f.name for f in configs.fields(type(cfg)) if f.is_neutral}
    old, new = manifest.get("config", {}), configs.to_dict(cfg)
    changed = sorted(k for k in new.keys() | old.keys() if old.get(k) != new.get(k) and k not in neutral)
    if changed:
        return f"config changed: {', '.join(changed)}"
    old_files = manifest.get("config_files") or {}
    edited = sorted(k for k in files.keys() | old_files.keys() if old_files.get(k) != files.get(k))
    if edited:
        return f"file changed: {', '.join(f'{k} ({new.get(k)})' for k in edited)}"
    old_inputs = {k: v.get("fingerprints") for k, v in manifest.get("inputs", {}).items()}
    changed = sorted(k for k in fps.keys() | old_inputs.keys() if old_inputs.get(k) != fps.get(k))
    return f"input changed: {', '.join(changed)}" if changed else "fingerprint changed"


def skipped(p: Plan, force: bool = False) -> bool:
    """Whether `p` is skipped as fresh: under a launch, the main rank's answer on every rank. Each rank plans on
    its own, and one that plans a moment later can find an artifact a concurrent writer has just published: it
    would skip the stage while the main rank, which planned to build, waits for it in `execute` forever."""
    skip = p.fresh and not force
    module = stages.load(p.stage)
    if _across_ranks(module):  # a one-process stage is refused
        skip = bool(distributed.broadcast(skip))  # by `execute` on every rank, with no word between them
    return skip


def _across_ranks(module: Any) -> bool:
    """A stage whose ranks work together under a launch (training or sharded rows); any other runs in one process."""
    return bool(getattr(module, "DISTRIBUTED", False) or getattr(module, "SHARDED", False))


def execute(p: Plan, force: bool = False) -> dict[str, Any]:
    """Build the artifact unless it is fresh; returns its manifest."""
    module = stages.load(p.stage)
    launched = distributed.world_size() > 1
    if launched and not _across_ranks(module):
        # every rank refuses, the main one too, before the lock: no rank builds (or publishes) it alone; each says
        # so itself, since the first to stop makes torchrun end the others, perhaps before they could
        raise UserError(f"stage '{p.stage}' runs in one process; run it without accelerate launch / torchrun")
    if distributed.rank() > 0:
        manifest = _execute_secondary(p, getattr(module, "SHARDED", False))
    else:
        manifest = _execute_main(p, force, launched)
    if launched:  # every rank leaves once the main one has published: the next stage of a pipeline reads it
        distributed.barrier()
    return manifest


def _newest_checkpoint(out: Path) -> int | None:
    """The step of the newest training checkpoint a rerun of the stage building `out` resumes from, if any."""
    final = artifacts.final_path(out)
    works = list(final.parent.glob(f"{final.name}.*checkpoints"))
    saved = [step for work in works for step in artifacts.saved_steps(work)]
    return int(max(saved, key=lambda path: path.stat().st_mtime).name.split("_")[1]) if saved else None


def _interrupt_of(exc: BaseException, outs: Iterable[Path]) -> BaseException:
    """What to raise for `exc`: the interrupt it is, or became on its way (a library's exception raised while the
    signal arrived), naming (when it came outside a training loop: planning, setting up, evaluating, reporting) the
    checkpoint a rerun resumes from, the newest of the first of `outs` that has one; any other exception as it is."""
    interrupt = exc if isinstance(exc, process.Interrupted) else process.pending()
    if interrupt is None:
        return exc
    if interrupt.step is None and not interrupt.checkpoint:
        interrupt.checkpoint = next(filter(None, map(_newest_checkpoint, outs)), None)
    return interrupt


@contextmanager
def naming_checkpoints(outs: Iterable[Path]) -> Iterator[None]:
    """Around planning and running the stages that build `outs`: an interrupt names the checkpoint a rerun resumes
    from (`_interrupt_of`), also one that arrives before `execute` (importing a stage, hashing its inputs)."""
    try:
        yield
    except BaseException as exc:
        stopped = _interrupt_of(exc, outs)
        if stopped is not exc:
            raise stopped from exc
        raise


def _execute_main(p: Plan, force: bool, launched: bool) -> dict[str, Any]:
    told = False  # whether the other ranks of a launch were told what to do
    try:
        with artifacts.locked(p.out):
            current = manifests.read_manifest(p.out)
            if not force and current is not None and current.get("stage") != p.stage:
                raise UserError(f"{p.stage}: {p.out} holds a {current.get('stage')} artifact; a {p.stage} run replaces it "
                                "only with --force (or choose another --out)")
            if not force and current is not None and current.get("fingerprint") in (p.fingerprint, p.same_as):
                changed = manifests.check_files(p.out, current)
                if changed:
                    raise UserError(f"{p.stage}: {p.out} changed on disk since it was written ({'; '.join(changed[:2])}); "
                                    f"`nlp-pipe inspect {p.out}` shows what changed. Rebuild it with --force, or restore it")
                log.info("%s: fresh, skipped (%s)", p.stage, p.out)
                _tell_ranks(launched, ("fresh", None))
                told = True
                return current
            with artifacts.staging(p.out) as tmp:
                _tell_ranks(launched, ("build", str(tmp)))
                told = True
                with artifacts.forced(force):
                    manifest, result = _build(p, tmp)
                process.check_interrupted()  # a Ctrl-C whose exception was lost mid-stage still publishes nothing
                artifacts.publish(tmp, p.out, manifest)
    except BaseException as exc:
        if launched and not told:  # the other ranks wait for a word: let them stop instead of hanging
            _tell_ranks(launched, ("error", str(exc) or type(exc).__name__))
        error = as_os_error(exc, p.out.parent)
        if error is not None:  # disk full, read-only or missing directory: the user's to fix, in one line
            raise UserError(_os_error(p, error)) from exc
        stopped = _interrupt_of(exc, [p.out])
        if stopped is not exc:
            raise stopped from exc
        raise
    # what we published must be there as listed: sizes and mtimes (hashing every file again would double the cost
    # of hashing a large artifact; a file whose mtime moved is hashed)
    problems = manifests.check_files(p.out, manifest)
    if problems:
        raise UserError(f"{p.stage}: {p.out} does not read back as written ({'; '.join(problems[:3])}); "
                        "is the disk healthy? Rerun with --force")
    for path in result.cleanup:  # work dirs (checkpoints) only needed until the artifact was published
        artifacts.remove_work_dir(path)  # only what the package wrote there
    return manifest


def _os_error(p: Plan, exc: OSError) -> str:
    cause = exc.strerror or str(exc) or type(exc).__name__
    path = f": {exc.filename}" if exc.filename and str(exc.filename) != str(p.out) else ""
    inputs = [i for paths in p.inputs.values() for i in paths]
    if exc.filename and any(Path(str(exc.filename)).resolve().is_relative_to(i.resolve()) for i in inputs):
        return (f"{p.stage}: reading input {exc.filename} failed: {cause}. The input is damaged or unreadable; "
                "check it (nlp-pipe inspect for an artifact) or rebuild it. Nothing was published")
    return (f"{p.stage}: building {p.out} failed: {cause}{path}. Nothing was published (an earlier artifact "
            f"there is unchanged); fix the cause (free space? permissions?) and rerun, or choose another --out")


def _tell_ranks(launched: bool, word: tuple[str, str | None]) -> None:
    """The main rank tells the others (waiting in `_execute_secondary`) what it decided under the lock."""
    if launched:
        distributed.broadcast(word)


def _execute_secondary(p: Plan, sharded: bool) -> dict[str, Any]:
    """A non-main rank of a launch waits for the main rank, which holds the lock, to say whether the artifact
    is fresh, refused (an error) or to be built; only then does it run the stage. A SHARDED corpus stage runs
    into the main rank's staging directory, where it writes its part of the rows (core.shards) for the main
    rank to merge; a DISTRIBUTED (training) stage trains with the main rank, which alone writes the artifact:
    its `out` is a staging-style path, never created, so `artifacts.work_dir(out, ...)` finds the shared
    checkpoints."""
    what, where = distributed.broadcast(None)
    if what == "error":
        raise SaidByMainRank(f"{p.stage}: the main process stopped ({where}); nothing was published")
    if what == "fresh":
        return manifests.read_manifest(p.out) or {}
    out = Path(str(where)) if sharded else p.out.parent / f".{p.out.name}.tmp-rank{distributed.rank()}"
    t0 = time.perf_counter()
    result: Result = stages.load(p.stage).run(p.config, p.inputs, out)
    counts = result.counts.as_dict() if result.counts is not None else None
    return {"stage": p.stage, "wall_time_s": round(time.perf_counter() - t0, 3), "counts": counts,
            "metrics": result.metrics}


def _build(p: Plan, tmp: Path) -> tuple[dict[str, Any], Result]:
    module = stages.load(p.stage)
    handler = logging.FileHandler(tmp / artifacts.LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # nlp_pipe's own lines, and the libraries' warnings (hidden on the terminal without -v)
    handler.addFilter(lambda record: record.name.split(".")[0] == "nlp_pipe" or record.levelno >= logging.WARNING)
    libraries = logging.getLogger()
    libraries.addHandler(handler)
    root = logging.getLogger("nlp_pipe")
    level = root.level
    if not root.isEnabledFor(logging.INFO):  # stage.log gets INFO lines even when the caller set up no logging
        root.setLevel(logging.INFO)
    started, t0 = artifacts.now(), time.perf_counter()
    try:
        described = stage_config(p)
        config_log.info("%s -> %s\n%s", p.stage, p.out, yaml.safe_dump(described, allow_unicode=True, sort_keys=False))
        (tmp / STAGE_CONFIG).write_text(f"# rerun: nlp-pipe {p.stage} --config {STAGE_CONFIG} --out DIR\n"
                                        + yaml.safe_dump(described, allow_unicode=True, sort_keys=False), encoding="utf-8")
        result: Result = module.run(p.config, p.inputs, tmp)
        missing = [name for name in module.OUTPUTS if not (tmp / name).exists()]
        if missing:  # a stage that forgot a declared output is a bug: never publish it as complete
            raise RuntimeError(f"stage '{p.stage}' did not write its declared outputs {missing}")
        wall = time.perf_counter() - t0
        log.info("%s finished in %.1f s", p.stage, wall)
    finally:
        root.setLevel(level)
        libraries.removeHandler(handler)
        handler.close()
    counts = result.counts
    reading = counts.details() if counts is not None else {}
    manifest = {
        "schema": manifests.SCHEMA,
        "stage": p.stage,
        "stage_version": module.VERSION,
        "fingerprint": p.fingerprint,
        "nlp_pipe_version": __version__,
        "git_commit": _git_commit(),
        "config": configs.to_dict(p.config),
        **({"config_files": p.files} if p.files else {}),
        "inputs": {k: {"paths": [str(v) for v in p.inputs[k]], "fingerprints": p.input_fingerprints[k],
                       **({"hub": p.models[k]} if k in p.models else {})} for k in p.inputs},
        "counts": counts.as_dict() if counts is not None else None,
        **({"reading": reading} if reading else {}),
        "metrics": result.metrics,
        **result.extra,
        "wall_time_s": round(wall, 3),
        "started": started,
        "finished": artifacts.now(),
        "device": result.extra.get("device", "cpu"),
        "processes": distributed.world_size(),  # ranks of `accelerate launch` / torchrun that built it (1 = plain)
        "backend": distributed.backend(),  # their process group's (a training stage's gradients); None = one process
        "host": {"hostname": socket.gethostname(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "packages": _package_versions()},
    }
    _write_report(tmp, p, result, wall)
    manifest["files"] = manifests.list_files(tmp, result.hashed)
    return manifest, result


def stage_config(p: Plan) -> dict[str, Any]:
    """The stage, its inputs and its resolved config, as `nlp-pipe STAGE --config FILE` reads them."""
    return {"stage": p.stage, "inputs": {k: [str(v) for v in vs] for k, vs in p.inputs.items() if vs},
            "config": configs.to_dict(p.config)}


def _write_report(tmp: Path, p: Plan, result: Result, wall: float) -> None:
    lines = [f"# {p.stage}: `{p.out.name}`", "", f"- wall time: {wall:.1f} s", f"- fingerprint: `{p.fingerprint[:16]}`"]
    details = result.counts
    if details is not None:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(details.dropped.items())) or "none"
        lines.append(f"- rows: {details.rows_in} in, {details.rows_out} out; dropped: {dropped}")
        for name, used in details.columns.items():
            lines.append(f"- columns of {name}: text `{used['text']}`, label " + (f"`{used['label']}`" if used["label"] else "none"))
        for reason, places in details.where.items():
            lines.append(f"- {reason} rows at {', '.join(places)}{' ...' if details.dropped[reason] > len(places) else ''}")
        lines += [f"- **notice**: {text}" for text in details.notices]
    for key, value in result.metrics.items():
        if isinstance(value, (int, float, str)):
            lines.append(f"- {key}: {value}")
    lines += ["", result.report.strip(), ""]
    (tmp / artifacts.REPORT).write_text("\n".join(lines), encoding="utf-8")


@functools.cache  # importlib.metadata reads dist-info folders: once per process, not per stage
def _package_versions() -> dict[str, str]:
    return manifests.installed_versions(_PACKAGES)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
