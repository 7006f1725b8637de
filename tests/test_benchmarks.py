"""Every benchmark still runs: `python benchmarks/NAME.py --smoke` for each script in benchmarks/, a process each.

--smoke runs a benchmark's --quick code path on tiny inputs it makes from tests/fixtures (benchmarks/common.py,
`smoke_data`), so a moved name, a changed stage option or a broken import fails `make test` instead of the next
`make bench`. The scripts share one working directory, so the pretrained model and teacher that finetune.py builds
are fresh for distill.py. About 100 s in all on 2 cores (scale ~30 s: six process launches; the rest 1-11 s each).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LIBRARY = {"common"}  # imported by the scripts, not run
# run_all.py's order, so distill finds finetune's models fresh; any other script after them
ORDER = ["segment", "word2vec", "textcnn", "pretrain", "expand", "finetune", "distill", "verify", "scale", "corpus_scale", "serve",
         "gpu", "compile"]
SCRIPTS = sorted((p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in LIBRARY | {"run_all"}),
                 key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-smoke")


def smoke(workdir: Path, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_in_smoke_mode(workdir, script):
    out = workdir / f"{script}.json"
    done = smoke(workdir, script, "--out", str(out))
    assert done.returncode == 0, f"benchmarks/{script}.py --smoke failed:\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["smoke"] is True and result["quick"] is True
    assert result["figures"], "no figures"
    assert all(f.get("smoke") for f in result["figures"].values()), "a smoke run's figure is not marked as one"


def test_segment_gold_scores_words_by_their_spans(workdir):
    """segment.py --gold: word F1 as the SIGHAN bakeoff scores it (a word counts when its span is a gold word's). Gold
    made of jieba's own words gives jieba F1 1; with a gold word split in two where it first occurs, jieba has 6 right
    of its 7 words (the second 我们 is right: same word, another place)."""
    gold = workdir / "gold.utf8"
    gold.write_text("我们  希望  新世纪  成为  和平  的  世纪\n我们  在  北京  。\n", encoding="utf-8")
    done = smoke(workdir, "segment", "--gold", str(gold), "--out", str(workdir / "gold.json"))
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads((workdir / "gold.json").read_text(encoding="utf-8"))["figures"]
    assert figures["word_f1_jieba"]["value"] == figures["word_f1_compiled"]["value"] == 1.0
    gold.write_text("我  们  在  北京  ，  我们  在  上海\n", encoding="utf-8")  # 8 gold words; jieba's first 我们 is none
    done = smoke(workdir, "segment", "--gold", str(gold), "--out", str(workdir / "gold.json"))
    figures = json.loads((workdir / "gold.json").read_text(encoding="utf-8"))["figures"]
    assert abs(figures["word_f1_jieba"]["value"] - 2 * (6 / 7) * (6 / 8) / (6 / 7 + 6 / 8)) < 1e-9


def test_run_all_lists_smoke_figures_apart(workdir):
    done = smoke(workdir, "run_all", "--only", "verify,word2vec")
    assert done.returncode == 0, done.stderr[-4000:]
    summary = (workdir / "runs" / "bench" / "smoke" / "summary.md").read_text(encoding="utf-8")
    results, _, smoke_part = summary.partition("## Smoke figures")
    assert "check_unchanged_s" in smoke_part and "words_per_s" in smoke_part
    assert "check_unchanged_s" not in results  # not printed as a result beside real ones
    assert not (workdir / "runs" / "bench" / "summary.md").exists()  # the real summary is left alone


def test_a_figure_of_a_too_small_model_is_a_smoke_figure():
    """--quick's BERT (10 pretraining steps) gives smoke figures; run_all keeps them out of the results and bars."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import finetune
        import run_all
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert finetune.too_small({"pretraining": {"steps": 10}})
    assert finetune.too_small({"pretraining": {"steps": 300}}) is None
    assert finetune.too_small({"pretraining": {"steps": None}}) is None  # a downloaded model
    figure = {"value": 0.67, "unit": "accuracy", "baseline": 0.85, "ratio": 0.79, "smoke": "BERT pretrained 10 steps"}
    assert run_all.judge("distill", "student_test_accuracy", figure) == {}
    summary = {"mode": "quick", "started": "now", "commit": None,
               "machine": {"cpus_usable": 2, "cpu_model": "x", "load_avg_during_run": [0.0], "gpu": None},
               "benchmarks": [{"name": "finetune", "status": "ran", "figures": {
                   "test_accuracy": figure, "predict_texts_per_s": {"value": 900.0, "unit": "texts/s", "baseline": 100.0,
                                                                    "ratio": 9.0}}}]}
    results, _, smoke_part = run_all.markdown(summary).partition("## Smoke figures")
    assert "predict_texts_per_s" in results and "test_accuracy" not in results
    assert "test_accuracy" in smoke_part and "BERT pretrained 10 steps" in smoke_part


def test_segment_smoke_cut_as_jieba_in_one_and_two_processes(workdir):
    """segment.py --smoke (run above): the stage's lines equal plain jieba's, its own worker choice, one and two processes."""
    figures = json.loads((workdir / "segment.json").read_text(encoding="utf-8"))["figures"]
    for side in ("", "_one_process", "_two_processes"):
        assert figures[f"identical_lines_pct{side}"]["value"] == 100 and figures[f"segment_mb_per_s{side}"]["ratio"] > 0


def test_serve_smoke_served_every_model_without_an_error(workdir):
    """serve.py --smoke (run above): every model answered at concurrency 1 and 8, the load run had 0 errors."""
    figures = json.loads((workdir / "serve.json").read_text(encoding="utf-8"))["figures"]
    for name in ("teacher", "student", "student_onnx_fp32", "student_onnx_int8", "textcnn_onnx", "baseline"):
        assert figures[f"{name}_c8_texts_per_s"]["value"] > 0 and figures[f"{name}_c1_errors"]["value"] == 0
        assert figures[f"{name}_c8_server_cpu_ms_per_text"]["value"] > 0  # the server process's CPU, read from /proc
    assert figures["load_run_errors"]["value"] == 0
    for name in ("student", "student_onnx_fp32", "student_onnx_int8"):  # model calls alone, against the teacher's
        assert figures[f"{name}_model_call_texts_per_cpu_s"]["ratio"] > 0


def test_corpus_scale_smoke_measured_the_compact_cache(workdir):
    """corpus_scale.py --smoke (run above): both pretrain data builds beside plain tokenizers, the cache under 2x the text."""
    figures = json.loads((workdir / "corpus_scale.json").read_text(encoding="utf-8"))["figures"]
    for source in ("raw_text", "the_segment_artifact"):
        build = figures[f"pretrain_data_from_{source}_0.03mb"]
        assert build["value"] > 0 and build["baseline"] > 0 and build["peak_private_mb"] > 0
        assert 0 < build["disk_per_input_byte"] < 2  # the compact cache
    assert figures["segment_0.03mb"]["disk_per_input_byte"] > 0
