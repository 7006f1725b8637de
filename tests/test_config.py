"""config.py: YAML values and CLI strings -> typed, validated stage configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from nlp_pipe import stages
from nlp_pipe.core import config as configs
from nlp_pipe.core.config import option
from nlp_pipe.core.errors import UserError


@dataclass(frozen=True)
class Demo:
    size: int = option(3, "a size", min=1, max=10)
    rate: float = option(0.5, "a rate", min=0.0, max=1.0)
    flag: bool = option(False, "a flag")
    mode: Literal["fast", "slow"] = option("fast", "a mode")
    names: tuple[str, ...] = option((), "names")
    kernels: tuple[int, ...] = option((3, 4, 5), "kernel sizes", min=1)
    name: str = option("", "a name")
    limit: int | None = option(None, "an optional limit")

    def __post_init__(self) -> None:
        if self.size > 5 and self.mode == "fast":
            raise ValueError(f"size = {self.size} needs mode=slow")


def build(**values):
    return configs.build(Demo, values, "stage 'demo'")


def error(**values) -> str:
    with pytest.raises(UserError) as err:
        build(**values)
    message = str(err.value)
    assert "\n" not in message and message.startswith("stage 'demo': ")
    return message


def test_defaults_and_plain_values():
    assert build() == Demo()
    cfg = build(size=4, rate=0.25, flag=True, mode="slow", names=["a", "b"], name="x", limit=7)
    assert (cfg.size, cfg.rate, cfg.flag, cfg.mode, cfg.names, cfg.name, cfg.limit) == (4, 0.25, True, "slow", ("a", "b"), "x", 7)


def test_unknown_key_suggests_the_close_one():
    message = error(sise=4)
    assert "unknown config key 'sise'" in message and "(did you mean 'size'?)" in message
    assert "valid keys: size, rate, flag, mode, names, kernels, name, limit" in message
    assert "did you mean" not in error(zzzzzz=1)


def test_dashes_in_keys_are_underscores():
    @dataclass(frozen=True)
    class Dashed:
        min_count: int = option(5, "minimum", min=1)

    assert configs.build(Dashed, {"min-count": 2}, "x").min_count == 2


@pytest.mark.parametrize("values, expected", [
    ({"size": "abc"}, "size must be a whole number, got 'abc'"),
    ({"size": 2.5}, "size must be a whole number, got 2.5"),
    ({"size": True}, "size must be a whole number, got True"),
    ({"size": None}, "size must not be empty"),
    ({"rate": "fast"}, "rate must be a number, got 'fast'"),
    ({"rate": False}, "rate must be a number, got False"),
    ({"flag": "maybe"}, "flag must be true or false, got 'maybe'"),
    ({"flag": 2}, "flag must be true or false, got 2"),
    ({"name": ["a"]}, "name must be text, got ['a']"),
    ({"names": 5}, "names must be a list, got 5"),
    ({"kernels": "3,x"}, "kernels must be a whole number, got 'x'"),
])
def test_wrong_types_name_the_field(values, expected):
    assert expected in error(**values)


def test_numbers_from_strings_and_whole_floats():
    cfg = build(size="4", rate="1e-1", limit="12")
    assert (cfg.size, cfg.rate, cfg.limit) == (4, 0.1, 12)
    assert build(size=4.0).size == 4 and isinstance(build(size=4.0).size, int)
    assert build(rate=1).rate == 1.0 and isinstance(build(rate=1).rate, float)
    assert build(limit=None).limit is None


@pytest.mark.parametrize("values, expected", [
    ({"size": 0}, "size = 0 is below its minimum 1"),
    ({"size": 11, "mode": "slow"}, "size = 11 is above its maximum 10"),
    ({"rate": -0.1}, "rate = -0.1 is below its minimum 0.0"),
    ({"rate": "1.5"}, "rate = 1.5 is above its maximum 1.0"),
    ({"kernels": [3, 0]}, "kernels = 0 is below its minimum 1"),
])
def test_out_of_range_values(values, expected):
    assert expected in error(**values)


def test_range_bounds_are_inclusive():
    cfg = build(size=10, mode="slow", rate=1.0)
    assert (cfg.size, cfg.rate) == (10, 1.0)


def test_literal_choices():
    assert build(mode="slow").mode == "slow"
    message = error(mode="slwo")
    assert "mode = 'slwo' is not one of: fast, slow" in message and "(did you mean 'slow'?)" in message


def test_tuple_from_comma_string():
    assert build(names="a, b,,c ").names == ("a", "b", "c")
    assert build(names="").names == ()
    assert build(kernels="2,3").kernels == (2, 3)
    assert build(kernels=[2, "3"]).kernels == (2, 3)
    assert build(names=("x",)).names == ("x",)


@pytest.mark.parametrize("text, value", [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True), (1, True),
    ("false", False), ("FALSE", False), ("no", False), ("off", False), ("0", False), (0, False),
])
def test_bools_from_strings(text, value):
    assert build(flag=text).flag is value


def test_cross_field_check_becomes_a_user_error():
    message = error(size=6)
    assert "size = 6 needs mode=slow" in message
    assert build(size=6, mode="slow").size == 6


def test_fields_describe_the_config():
    info = {f.name: f for f in configs.fields(Demo)}
    assert info["mode"].choices == ("fast", "slow") and info["mode"].default == "fast"
    assert info["flag"].is_bool and not info["size"].is_bool
    assert info["size"].help == "a size" and info["limit"].choices is None


def test_to_dict_is_json_ready():
    assert configs.to_dict(build(names="a,b")) == {
        "size": 3, "rate": 0.5, "flag": False, "mode": "fast", "names": ["a", "b"], "kernels": [3, 4, 5],
        "name": "", "limit": None,
    }


@pytest.mark.parametrize("name", list(stages.STAGES))
def test_every_stage_config_is_described_and_valid_by_default(name):
    module = stages.load(name)
    assert module.NAME in (name, name.replace("-", "_"))  # one name everywhere (modules cannot hold a dash)
    assert isinstance(module.VERSION, int)
    cfg = configs.build(module.Config, {}, name)
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, dataclasses.fields(cfg)[0].name, None)
    for f in configs.fields(module.Config):
        assert f.help, f"{name}.{f.name} has no help text"
    assert module.INPUTS and all(spec.help for spec in module.INPUTS.values())


def test_unknown_stage_suggests():
    with pytest.raises(UserError, match=r"unknown stage 'segmnt' \(did you mean 'segment'\?\)"):
        stages.load("segmnt")
