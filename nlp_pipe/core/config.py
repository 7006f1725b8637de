"""Typed stage configs: one dataclass feeds the CLI flags, the pipeline YAML and validation.

A stage config is a frozen dataclass whose fields are declared with `option(...)`.
`build(cls, mapping, where)` turns YAML values or CLI strings into that dataclass,
rejecting unknown keys (with a close-match suggestion), wrong types and out-of-range
values with one line that names the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from .errors import UserError, did_you_mean

SEED_MAX = 2**32 - 1  # numpy and torch generators take seeds below 2**32 on every platform
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None, min_items: int = 0,
           path: bool = False, neutral: bool = False) -> Any:
    """A config field with a default, a one-line help, an optional numeric range, for lists a least length,
    `path` for a field that names a file (a relative one in a pipeline or --config file is taken from its folder;
    the file's content, not its name, is what the artifact depends on), and `neutral` for one that never changes
    what the artifact holds (how often a run checkpoints, whether it resumes): left out of freshness."""
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "max": max, "min_items": min_items,
                                                        "path": path, "neutral": neutral})


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None
    is_bool: bool
    is_path: bool = False
    is_neutral: bool = False


def fields(cls: type) -> list[FieldInfo]:
    """Describe every field of a config class (for --help and docs)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = _strip_optional(hints[f.name])
        choices = tuple(str(c) for c in get_args(hint)) if get_origin(hint) is Literal else None
        out.append(FieldInfo(f.name, hints[f.name], f.default, f.metadata.get("help", ""), choices, hint is bool,
                             bool(f.metadata.get("path")), bool(f.metadata.get("neutral"))))
    return out


def build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Validate `values` against config class `cls`; `where` names the place for error messages."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UserError(
                f"{where}: unknown config key '{key}'{did_you_mean(name, known)}; valid keys: {', '.join(known)}"
            )
        field = known[name]
        kwargs[name] = _check_range(_coerce(value, hints[name], f"{where}: {name}"), field, where)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{where}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready view of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _strip_optional(hint: Any) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _coerce(value: Any, hint: Any, label: str) -> Any:
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise UserError(f"{label} must not be empty")
    hint = _strip_optional(hint)
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise UserError(f"{label} = {value!r} is not one of: {', '.join(map(str, choices))}{did_you_mean(text, map(str, choices))}")
    if origin is tuple:
        item = get_args(hint)[0]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{label} must be a list, got {value!r}")
        return tuple(_coerce(v, item, label) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise UserError(f"{label} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise UserError(f"{label} must be a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"{label} must be a whole number, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise UserError(f"{label} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{label} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # nan passes every range check; no field means inf
            raise UserError(f"{label} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{label} must be text, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {label}")  # a bug in a stage config, not user input


def _check_range(value: Any, field: dataclasses.Field, where: str) -> Any:
    lo, hi = field.metadata.get("min"), field.metadata.get("max")
    least = field.metadata.get("min_items") or 0
    if isinstance(value, tuple) and len(value) < least:
        raise UserError(f"{where}: {field.name} needs at least {least} value{'s' if least > 1 else ''} (comma-separated), "
                        f"got {len(value)}; its default is {','.join(map(str, field.default if isinstance(field.default, tuple) else ()))}")
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise UserError(f"{where}: {field.name} = {v} is below its minimum {lo}")
            if hi is not None and v > hi:
                raise UserError(f"{where}: {field.name} = {v} is above its maximum {hi}")
    return value
