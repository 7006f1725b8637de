"""Config validation of every registered stage, through the CLI and through pipeline YAML.

tests/test_config.py checks `config.build` on a demo dataclass and that each stage's defaults are
valid; this module derives bad values from each real stage's declared fields (type, range, choices)
and checks what a user sees: exit 2, one line, naming the field, nothing written.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Literal, get_args, get_origin

import pytest
import yaml

from conftest import run_cli
from nlp_pipe import stages
from nlp_pipe.core import config as configs


def base_type(hint):
    """`int | None` -> int."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def bad_values(stage: str) -> list[tuple[str, object, str, bool]]:
    """(field, bad value, expected text, can be given as a CLI flag) for every field of the stage."""
    cls = stages.load(stage).Config
    hints = typing.get_type_hints(cls)
    cases = []
    for field in dataclasses.fields(cls):
        hint = base_type(hints[field.name])
        item = base_type(get_args(hint)[0]) if get_origin(hint) is tuple else hint
        lo, hi = field.metadata.get("min"), field.metadata.get("max")
        start = len(cases)
        if get_origin(hint) is tuple:
            cases.append((field.name, {"not": "a list"}, "must be a list", False))
        if get_origin(item) is Literal:
            cases.append((field.name, "no-such-choice", "is not one of", True))
        elif item is bool:
            cases.append((field.name, "maybe", "must be true or false", False))
        elif item is int:
            cases.append((field.name, "twelve", "must be a whole number", True))
            cases.append((field.name, 2.5, "must be a whole number", True))
        elif item is float:
            cases.append((field.name, "fast", "must be a number", True))
            cases.append((field.name, "nan", "must be a finite number", True))
            cases.append((field.name, "inf", "must be a finite number", True))
        elif hint is str:
            cases.append((field.name, ["a", "list"], "must be text", False))
        if item in (int, float) and lo is not None:
            cases.append((field.name, item(lo - 1), "is below its minimum", True))
        if item in (int, float) and hi is not None:
            cases.append((field.name, item(hi + 1), "is above its maximum", True))
        if get_origin(hint) is tuple:  # one bad item in a list: given as text "1,x" (a lone YAML number is no list)
            cases[start + 1:] = [(name, f"1,{value}", expected, flag) for name, value, expected, flag in cases[start + 1:]]
    return cases


def pipeline(tmp_path, stage: str, config: dict):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path / "runs"), "stages": [{"stage": stage, "config": config}]}),
                    encoding="utf-8")
    return path


def one_error_line(result) -> str:
    assert result.code == 2, result
    assert len(result.err_lines) == 1 and "Traceback" not in result.err, result.err
    return result.err_lines[0]


@pytest.mark.parametrize("stage", list(stages.STAGES))
def test_bad_values_on_the_command_line_name_the_field(stage, tmp_path):
    problems = []
    for field, value, expected, as_flag in bad_values(stage):
        if not as_flag:
            continue
        out = tmp_path / "out"
        result = run_cli(stage, "--out", out, f"--{field.replace('_', '-')}", str(value))
        line = result.err_lines[0] if result.err_lines else ""
        if not (result.code == 2 and len(result.err_lines) == 1 and line.startswith(f"error: {stage}: {field}")
                and expected in line and not out.exists()):
            problems.append((field, value, result.code, result.err))
    assert problems == []


@pytest.mark.parametrize("stage", list(stages.STAGES))
def test_bad_values_in_pipeline_yaml_name_the_field(stage, tmp_path):
    problems = []
    for field, value, expected, _ in bad_values(stage):
        value = float(value) if value in ("nan", "inf") else value  # YAML's own .nan/.inf
        result = run_cli("status", pipeline(tmp_path, stage, {field: value}))
        line = result.err_lines[0] if result.err_lines else ""
        if not (result.code == 2 and len(result.err_lines) == 1 and f"stage '{stage}': {field}" in line and expected in line):
            problems.append((field, value, result.code, result.err))
    assert problems == []


@pytest.mark.parametrize("stage", list(stages.STAGES))
def test_unknown_keys_are_rejected_with_a_suggestion(stage, tmp_path):
    name = configs.fields(stages.load(stage).Config)[0].name
    misspelt = name[:-1] + ("x" if name[-1] != "x" else "y")
    line = one_error_line(run_cli("status", pipeline(tmp_path, stage, {misspelt: 1})))
    assert f"unknown config key '{misspelt}' (did you mean '{name}'?)" in line
    line = one_error_line(run_cli("status", pipeline(tmp_path, stage, {"zz_no_such_key": 1})))
    assert "unknown config key 'zz_no_such_key'" in line and "valid keys:" in line
    line = one_error_line(run_cli("run", pipeline(tmp_path, stage, {}), "--set", f"{stage}.zz_no_such_key=1"))
    assert "unknown config key 'zz_no_such_key'" in line
    result = run_cli(stage, "--out", tmp_path / "out", "--zz-no-such-key", "1")
    assert result.code == 2 and "No such option '--zz-no-such-key'" in result.err and not (tmp_path / "out").exists()


def test_every_stage_has_checked_fields():
    """The derived cases are not vacuous: each stage contributes some, with range checks among them."""
    for stage in stages.STAGES:
        cases = bad_values(stage)
        assert cases, stage
    assert any("minimum" in expected for stage in stages.STAGES for _, _, expected, _ in bad_values(stage))
