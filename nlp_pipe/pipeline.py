"""Pipeline files: YAML -> ordered stage calls; skip fresh ones; --only / --from / --force.

    name: demo
    workdir: runs/demo                 # each stage writes {workdir}/{name} unless it sets `out`; default runs/STEM
    vars: {corpus: my.txt}             # overridable: nlp-pipe run demo.yaml --var corpus=other.txt
    stages:
      - stage: segment                 # registry name; `name` defaults to it (set it to use a stage twice)
        inputs: {corpus: "${vars.corpus}"}
        config: {hmm: true}
      - stage: vocab
        inputs: {corpus: "${segment}"}  # ${NAME} is stage NAME's artifact directory

Relative paths written in the file (workdir, inputs, `out`, config fields that name files) are taken
from the file's own folder, so a pipeline runs the same from any directory; values given on the command
line (`--var`, `--workdir`) are taken from the current directory, as shells do. A model input that is
no path there but a Hub id (`org/name`) stays a Hub id. `${...}` that is the whole value is replaced by
the value itself (so a var may hold a list); inside a longer string by its text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import runner, stages
from .checkpoints import references
from .core import config as configs
from .core import manifest as manifests
from .core.errors import UserError, did_you_mean

_REF = re.compile(r"\$\{([^}]+)\}")
_STAGE_KEYS = {"stage", "name", "inputs", "config", "out"}
_TOP_KEYS = {"name", "workdir", "vars", "stages", "description"}


@dataclass
class Step:
    name: str
    stage: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    out: Path
    upstream: list[str]  # names of earlier steps this one reads


@dataclass
class Pipeline:
    path: Path
    name: str
    workdir: Path
    steps: list[Step]

    def select(self, only: list[str] | None = None, start: str | None = None) -> list[Step]:
        names = [s.name for s in self.steps]
        if only and start:
            raise UserError("--only and --from cannot be combined: --only picks stages, --from picks a stage and all after it")
        for name in [*(only or []), *([start] if start else [])]:
            if name not in names:
                raise UserError(f"{self.path}: no stage named '{name}'{did_you_mean(name, names)}; stages: {', '.join(names)}")
        if only:
            return [s for s in self.steps if s.name in only]
        if start:
            return self.steps[names.index(start):]
        return list(self.steps)

    def plans(self) -> list[runner.Plan]:
        """Every step resolved against what earlier steps will produce (for `status`)."""
        expected: dict[Path, str] = {}
        plans = []
        for step in self.steps:
            plan = runner.plan(step.stage, step.config, step.inputs, step.out, expected, where=self._where(step))
            expected[plan.out.resolve()] = plan.artifact_fingerprint
            plans.append(plan)
        return plans

    def plan_now(self, step: Step) -> runner.Plan:
        """Resolve a step against the artifacts on disk, right before running it."""
        by_name = {s.name: s for s in self.steps}
        needed, todo = set(), list(step.upstream)
        while todo:  # every unfinished step this one depends on, directly or not
            up = todo.pop()
            if up not in needed and manifests.read_manifest(by_name[up].out) is None:
                needed.add(up)
                todo += by_name[up].upstream
        if needed:
            first = [s.name for s in self.steps if s.name in needed]
            raise UserError(f"stage '{step.name}' needs stage(s) {', '.join(first)}, which have not finished; run: "
                            f"nlp-pipe run {self.path} {' '.join(f'--only {n}' for n in first)} (with this command's "
                            "--workdir, --var and --set)")
        return runner.plan(step.stage, step.config, step.inputs, step.out, where=self._where(step))

    def _where(self, step: Step) -> str:
        return f"{self.path}: stage '{step.name}'"


def load(path: str | Path, variables: dict[str, Any] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
         workdir: str | None = None) -> Pipeline:
    """Read a pipeline file; `variables` override its `vars`, `overrides` its stages' config values."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read pipeline {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    if isinstance(doc, dict):  # a misspelt 'stages' gets its suggestion, not the generic message
        _no_unknown(doc, _TOP_KEYS, str(path))
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
        raise UserError(f"{path}: a pipeline file is a mapping with a 'stages' list")
    declared = doc.get("vars") or {}
    if not isinstance(declared, dict):
        raise UserError(f"{path}: 'vars' must be a mapping of names to values (vars: {{corpus: my.txt}}), got {declared!r}")
    vars_ = {**declared, **(variables or {})}
    unknown_vars = set(variables or {}) - set(declared)
    if unknown_vars:
        name = sorted(unknown_vars)[0]
        raise UserError(f"{path}: unknown var '{name}'{did_you_mean(name, declared)}; vars: {', '.join(declared)}")
    written = _directory(_substitute(doc.get("workdir"), vars_, {}, str(path)), "workdir", str(path))
    # absolute, so `${stage}` references stay right when anchored against the file's folder; without one, runs/STEM
    # beside the file (as a written workdir is taken from there)
    root = Path(workdir).absolute() if workdir else anchor(written or f"runs/{path.stem}", _folder(path))
    steps: list[Step] = []
    for i, raw in enumerate(doc["stages"]):
        steps.append(_step(raw, i, vars_, steps, root, path))
    # the stages' modules are imported here (torch for a training stage: seconds): a Ctrl-C meanwhile names the
    # checkpoint a rerun resumes from, as it does later
    with runner.naming_checkpoints([step.out for step in steps]):
        for step in steps:
            step.inputs = anchor_inputs(step.stage, step.inputs, _folder(path))
            step.config = anchor_config(step.stage, step.config, _folder(path))
    _apply_overrides(steps, overrides or {}, path)
    return Pipeline(path, str(doc.get("name", path.stem)), root, steps)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """'line L, column C: what' of a YAML error (PyYAML's message spans several lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "'\\t'" in what:  # PyYAML names a tab as '\\t'
        what += " (YAML indents with spaces, never tabs)"
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


def _directory(value: Any, key: str, where: str) -> str | None:
    """A written `workdir` or `out` (None when absent), once it is a path: a list or an empty string is refused."""
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise UserError(f"{where}: '{key}' must be a directory path, got {value!r}")
    return value


def _step(raw: Any, index: int, vars_: dict, earlier: list[Step], root: Path, path: Path) -> Step:
    where = f"{path}: stages[{index}]"
    if not isinstance(raw, dict) or "stage" not in raw:
        raise UserError(f"{where}: each stage needs 'stage: NAME'")
    _no_unknown(raw, _STAGE_KEYS, where)
    if str(raw["stage"]) not in stages.STAGES:  # before its name is used: '${segment}' would be the first complaint
        raise UserError(f"{where}: unknown stage '{raw['stage']}'{did_you_mean(str(raw['stage']), stages.STAGES)}; "
                        f"stages: {', '.join(stages.STAGES)}")
    name = raw.get("name", str(raw["stage"]))
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{where}: 'name' must be a plain name (the artifact's folder in the workdir: no '/', not empty), "
                        f"got {name!r}")
    if name == "vars" or any(s.name == name for s in earlier):
        raise UserError(f"{where}: stage name '{name}' is {'reserved' if name == 'vars' else 'used twice'}; set a unique 'name'")
    outs = {s.name: s.out for s in earlier}
    used: set[str] = set()
    inputs = _substitute(raw.get("inputs") or {}, vars_, outs, f"{path}: stage '{name}'", used)
    config = _substitute(raw.get("config") or {}, vars_, outs, f"{path}: stage '{name}'", used)
    for section, value in (("inputs", inputs), ("config", config)):
        if not isinstance(value, dict):
            raise UserError(f"{path}: stage '{name}': '{section}' must be a mapping")
    for key, value in inputs.items():
        if not (value is None or isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"{path}: stage '{name}': input '{key}' must be a path or a list of paths, got {value!r}")
    base = _folder(path)
    written = _directory(_substitute(raw["out"], vars_, outs, where) if raw.get("out") is not None else None, "out", where)
    out = anchor(written, base) if written else root / name
    twin = next((s for s in earlier if s.out.resolve() == out.resolve()), None)
    if twin is not None:  # the later step would replace the earlier one's artifact under its readers' feet
        raise UserError(f"{where}: stage '{name}' writes to {out}, as stage '{twin.name}' does; give each its own 'out'")
    stage = str(raw["stage"])
    return Step(name, stage, inputs, config, out, sorted(used))  # inputs and config anchored by `load`


def _folder(path: Path) -> Path:
    return path.absolute().parent


class CommandLine(str):
    """A value typed on the command line: a relative path in it stays relative to the current directory."""


def from_command_line(value: Any) -> Any:
    if isinstance(value, str):
        return CommandLine(value)
    if isinstance(value, list):
        return [from_command_line(v) for v in value]
    return value


def anchor(value: Any, base: Path) -> Path:
    """A path written in a file, taken from that file's folder."""
    text = str(value)
    if isinstance(value, CommandLine) or text.startswith(("pkg:", "~")) or Path(text).is_absolute():
        return Path(text)
    return Path(os.path.normpath(base / text))


def anchor_inputs(stage: str, inputs: dict[str, Any], base: Path) -> dict[str, Any]:
    """Input values of a file, each taken from `base` (a model input that is a Hub id there stays one)."""
    specs = stages.load(stage).INPUTS

    def one(name: str, value: Any) -> Any:
        if not isinstance(value, str) or isinstance(value, CommandLine) or value.startswith("pkg:"):
            return value
        spec = specs.get(name)
        if spec is not None and spec.hub and not (base / value).exists() and references.looks_like_hub_id(value):
            return value
        return str(anchor(value, base))

    return {k: [one(k, v) for v in vs] if isinstance(vs, list) else one(k, vs) for k, vs in inputs.items()}


def anchor_config(stage: str, config: dict[str, Any], base: Path) -> dict[str, Any]:
    """Config values of a file that name files (fields declared with path=True), taken from `base`."""
    paths = {f.name for f in configs.fields(stages.load(stage).Config) if f.is_path}
    return {k: str(anchor(v, base)) if k in paths and isinstance(v, str) and ("/" in v or "." in v) else v
            for k, v in config.items()}


def _substitute(value: Any, vars_: dict, outs: dict[str, Path], where: str, used: set[str] | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, vars_, outs, where, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, vars_, outs, where, used) for v in value]
    if not isinstance(value, str):
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return _lookup(whole.group(1), vars_, outs, where, used)
    return _REF.sub(lambda m: str(_lookup(m.group(1), vars_, outs, where, used)), value)


def _lookup(ref: str, vars_: dict, outs: dict[str, Path], where: str, used: set[str] | None) -> Any:
    if ref.startswith("vars."):
        key = ref[5:]
        if key not in vars_:
            raise UserError(f"{where}: unknown var '{key}'{did_you_mean(key, vars_)}")
        return vars_[key]
    if ref not in outs:
        raise UserError(f"{where}: '${{{ref}}}' is not an earlier stage{did_you_mean(ref, outs)}; earlier stages: "
                        f"{', '.join(outs) or 'none'}")
    if used is not None:
        used.add(ref)
    return str(outs[ref])


def _apply_overrides(steps: list[Step], overrides: dict[str, dict[str, Any]], path: Path) -> None:
    names = [s.name for s in steps]
    for name, values in overrides.items():
        if name not in names:
            raise UserError(f"--set: no stage named '{name}' in {path}{did_you_mean(name, names)}")
        steps[names.index(name)].config.update(values)


def _no_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}; allowed: {', '.join(sorted(allowed))}")
