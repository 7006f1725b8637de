"""Every stage's CLI under generated option values and wrong files: exit 0 or 2, never a traceback.

Each example starts from a quick, valid command line for one stage (tiny fixtures, a few steps) and
replaces one option or input with a generated value: empty lists, zeros, negatives, huge numbers, text
where a number belongs, unknown choices, missing files, empty or binary files, artifacts of the wrong
stage. Fields that set how long a run takes (steps, epochs, copies, ...) get small values only, so a
valid draw still finishes in seconds. `make test` runs a few dozen examples; `-m slow` many more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, build, run_cli
from nlp_pipe import stages
from nlp_pipe.core import config as configs

BUDGET = {"steps", "epochs", "prediction_epochs", "copies", "passes", "folds", "pair_sets", "eval_docs", "measure_rows",
          "max_words", "wordpiece_size", "num_proc", "workers", "speed_batch", "speed_seq_len", "batch_size", "grad_accum"}
HUGE = 10**12
INT_VALUES = ["0", "-1", "1", "2", "7", str(HUGE), "abc", "", "1.5", "nan"]
SMALL_INT_VALUES = ["0", "-1", "1", "2", "abc", "", "1.5"]
FLOAT_VALUES = ["0", "-1", "0.5", "1", "1e30", "nan", "inf", "x", ""]
TUPLE_VALUES = ["", ",", "0", "-1", "1,2", "a,b", str(HUGE), "1,,2"]
TEXT_VALUES = ["", "x", "nonexistent.json", "🙂", " ", "none", "../x"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, seg_reviews, tiny_bert):
    """Valid inputs for every stage, built once."""
    base = tmp_path_factory.mktemp("fuzz")
    build("word2vec", base / "w2v", {"corpus": seg_reviews}, vector_size=8, min_count=1, epochs=1, workers=1, seed=1)
    build("finetune", base / "clf", {"checkpoint": tiny_bert, "train": seg_reviews}, steps=2, batch_size=8,
          precision="fp32", seed=1)
    student = base / "student.json"
    student.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                   "intermediate_size": 64}), encoding="utf-8")
    (base / "empty.txt").write_text("", encoding="utf-8")
    (base / "binary.bin").write_bytes(bytes(range(256)) * 16)
    (base / "plain_dir").mkdir()
    (base / "plain_dir" / "a.txt").write_text("x", encoding="utf-8")
    return {"seg": seg_reviews, "bert": tiny_bert, "w2v": base / "w2v", "clf": base / "clf", "student": student,
            "wrong": [base / "missing.txt", base / "empty.txt", base / "binary.bin", base / "plain_dir", tiny_bert,
                      seg_reviews, FIXTURES / "gbk.txt"]}


def commands(w: dict) -> dict[str, dict[str, list[str]]]:
    """stage -> {input or option flag: value} of a quick valid run."""
    fast = {"--precision": "fp32", "--seed": "1"}
    return {
        "segment": {"--corpus": str(FIXTURES / "reviews.tsv"), "--workers": "1"},
        "vocab": {"--corpus": str(w["seg"]), "--min-freq": "1"},
        "phrases": {"--corpus": str(w["seg"]), "--min-count": "2"},
        "word2vec": {"--corpus": str(w["seg"]), "--min-count": "1", "--vector-size": "8", "--epochs": "1", "--workers": "1"},
        "import-vectors": {"--vectors": str(w["w2v"])},
        "textcnn": {"--train": str(w["seg"]), "--vectors": str(w["w2v"]), "--epochs": "1", "--filters": "4", **fast},
        "baseline": {"--train": str(w["seg"]), "--min-df": "1"},
        "pretrain": {"--corpus": str(w["seg"]), "--tokenizer": str(w["bert"]), "--size": "tiny", "--steps": "2",
                     "--batch-size": "4", "--max-seq-len": "32", "--eval-docs": "0", **fast},
        "expand": {"--checkpoint": str(w["bert"]), "--corpus": str(w["seg"]), "--min-freq": "3", "--max-words": "5"},
        "finetune": {"--checkpoint": str(w["bert"]), "--train": str(w["seg"]), "--steps": "2", "--batch-size": "8", **fast},
        "extract": {"--checkpoint": str(w["bert"]), "--corpus": str(w["seg"])},
        "augment": {"--corpus": str(w["seg"]), "--mlm": str(w["bert"]), "--vectors": str(w["w2v"]), "--copies": "1",
                    "--top-k": "3"},
        "distill": {"--mode": "task", "--teacher": str(w["clf"]), "--train": str(w["seg"]), "--student-shape": str(w["student"]),
                    "--steps": "1", "--batch-size": "8", "--speed-batch": "2", "--speed-seq-len": "16", **fast},
        "export": {"--model": str(w["clf"]), "--texts": str(w["seg"]), "--parity-texts": "8"},
    }


def values_for(stage: str, name: str, w: dict) -> list[str]:
    module = stages.load(stage)
    if name in module.INPUTS:
        return [str(p) for p in w["wrong"]]
    field = next(f for f in configs.fields(module.Config) if f.name == name)
    if field.choices:
        return [*field.choices, "bogus", ""]
    default = field.default
    if isinstance(default, tuple):
        return TUPLE_VALUES
    if isinstance(default, float):
        return FLOAT_VALUES
    if isinstance(default, int):
        return SMALL_INT_VALUES if name in BUDGET else INT_VALUES
    return TEXT_VALUES


@st.composite
def invocations(draw, w: dict) -> list[str]:
    stage = draw(st.sampled_from(sorted(stages.STAGES)))
    module = stages.load(stage)
    names = [n for n in module.INPUTS] + [f.name for f in configs.fields(module.Config) if not f.is_bool]
    name = draw(st.sampled_from(names))
    value = draw(st.sampled_from(values_for(stage, name, w)))
    argv = dict(commands(w)[stage])
    argv[f"--{name.replace('_', '-')}"] = value
    return [stage, *(x for kv in argv.items() for x in kv)]


def check(argv: list[str], out: Path) -> None:
    result = run_cli(*argv, "--out", out, "--force")
    assert result.code in (0, 2), (argv, result)
    assert "Traceback" not in result.err, (argv, result.err[-3000:])
    if result.code == 2:
        assert len(result.err_lines) == 1 and result.err.startswith("error: "), (argv, result.err[-3000:])


def test_fuzz_every_stage(world, tmp_path_factory):
    @settings(max_examples=24, deadline=None, suppress_health_check=list(HealthCheck))
    @given(argv=invocations(world))
    def run(argv):
        check(argv, tmp_path_factory.mktemp("out") / "a")

    run()


@pytest.mark.slow
def test_fuzz_every_stage_many(world, tmp_path_factory):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(argv=invocations(world))
    def run(argv):
        check(argv, tmp_path_factory.mktemp("out") / "a")

    run()


@pytest.mark.parametrize("stage", sorted(stages.STAGES))
def test_every_stage_base_command_runs(world, stage, tmp_path):
    """The starting points of the fuzz are valid: each exits 0 (so a 2 above is the perturbation's doing)."""
    argv = commands(world)[stage]
    result = run_cli(stage, *(x for kv in argv.items() for x in kv), "--out", tmp_path / "a")
    assert result.code == 0, result


def huge_cases() -> list[tuple[str, str]]:
    cases = []
    for stage in sorted(stages.STAGES):
        for f in configs.fields(stages.load(stage).Config):
            if not f.is_bool and not f.choices and f.name not in BUDGET and isinstance(f.default, (int, float, tuple)):
                cases.append((stage, f.name))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("stage,name", huge_cases())
def test_huge_values_are_refused_or_run(world, stage, name, tmp_path):
    """Sizes far beyond any machine: a one-line error (a bound, or out of memory), never a traceback."""
    argv = dict(commands(world)[stage])
    argv[f"--{name.replace('_', '-')}"] = str(HUGE)
    check([stage, *(x for kv in argv.items() for x in kv)], tmp_path / "a")
