"""Terminal output, stage config files, paths in pipeline files, trackers: the conventions users expect."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import FIXTURES, run_cli
from nlp_pipe.core import manifest as manifests


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A real process, so the terminal setup (logging handlers, library switches) is the user's."""
    return subprocess.run([sys.executable, "-m", "nlp_pipe", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "TQDM_DISABLE": "0"})


def test_default_output_is_a_line_per_stage_and_the_config_goes_to_stage_log(tmp_path):
    done = cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "seg", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "segment finished in" in done.stderr
    assert "userdict_multiplier" not in done.stderr and "reading " not in done.stderr  # config and INFO lines: not shown
    log = (tmp_path / "seg" / "stage.log").read_text(encoding="utf-8")
    assert "userdict_multiplier: 1000.0" in log and "text column 'text'" in log  # YAML config and INFO lines: kept
    quiet = cli("-q", "segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "seg2", "--workers", "1")
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    verbose = cli("--log-level", "info", "segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "seg3",
                  "--workers", "1")
    assert "text column 'text'" in verbose.stderr


def test_stage_config_yaml_reruns_the_stage_and_flags_override_it(tmp_path):
    first = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "a", "--workers", "1", "--mode", "search")
    assert first.code == 0
    again = run_cli("segment", "--config", tmp_path / "a" / "stage_config.yaml", "--out", tmp_path / "b")
    assert again.code == 0, again
    a, b = manifests.read_manifest(tmp_path / "a"), manifests.read_manifest(tmp_path / "b")
    assert a["fingerprint"] == b["fingerprint"] and b["config"]["mode"] == "search"
    changed = run_cli("segment", "--config", tmp_path / "a" / "stage_config.yaml", "--out", tmp_path / "c", "--mode", "accurate")
    assert changed.code == 0 and manifests.read_manifest(tmp_path / "c")["config"]["mode"] == "accurate"


def test_a_flat_config_file_with_relative_paths_from_its_folder(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "data.tsv").write_bytes((FIXTURES / "reviews.tsv").read_bytes())
    (folder / "seg.yaml").write_text("corpus: data.tsv\nmode: search\nworkers: 1\n", encoding="utf-8")
    result = run_cli("segment", "--config", folder / "seg.yaml", "--out", tmp_path / "seg")
    assert result.code == 0, result
    manifest = manifests.read_manifest(tmp_path / "seg")
    assert manifest["inputs"]["corpus"]["paths"] == [str(folder / "data.tsv")] and manifest["config"]["mode"] == "search"
    (folder / "bad.yaml").write_text("corpus: data.tsv\nmoed: search\n", encoding="utf-8")
    bad = run_cli("segment", "--config", folder / "bad.yaml", "--out", tmp_path / "x")
    assert bad.code == 2 and "unknown config key 'moed'" in bad.err and "did you mean 'mode'" in bad.err
    (folder / "other.yaml").write_text("stage: vocab\nconfig: {min_freq: 1}\n", encoding="utf-8")
    wrong = run_cli("segment", "--config", folder / "other.yaml", "--out", tmp_path / "x")
    assert wrong.code == 2 and "config of stage 'vocab'" in wrong.err


def test_pipeline_paths_are_taken_from_the_files_folder_and_vars_from_the_current_one(tmp_path):
    project = tmp_path / "project"
    (project / "pipes").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "a.tsv").write_bytes((FIXTURES / "reviews.tsv").read_bytes())
    (project / "pipes" / "p.yaml").write_text(
        "name: p\nworkdir: ../runs\nvars: {corpus: ../data/a.tsv}\nstages:\n"
        "  - stage: segment\n    inputs: {corpus: '${vars.corpus}'}\n    config: {workers: 1}\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli("run", project / "pipes" / "p.yaml", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert manifests.read_manifest(project / "runs" / "segment")["inputs"]["corpus"]["paths"] == [str(project / "data" / "a.tsv")]
    (elsewhere / "mine.tsv").write_bytes((FIXTURES / "reviews.tsv").read_bytes())
    mine = cli("run", project / "pipes" / "p.yaml", "--var", "corpus=mine.tsv", "--workdir", "out", cwd=elsewhere)
    assert mine.returncode == 0, mine.stderr
    assert manifests.read_manifest(elsewhere / "out" / "segment")["inputs"]["corpus"]["paths"] == [str(elsewhere / "mine.tsv")]


def test_shipped_pipelines_resolve_from_any_directory(tmp_path):
    root = Path(__file__).resolve().parent.parent
    for name in ("demo.yaml", "ngram2vec.yaml"):
        done = cli("status", root / "pipelines" / name, cwd=tmp_path)
        assert done.returncode == 0, (name, done.stderr)
        assert str(root / "runs") in done.stdout


def test_a_tracker_that_is_not_installed_says_what_to_install(tmp_path, seg_reviews, tiny_bert):
    result = run_cli("finetune", "--checkpoint", tiny_bert, "--train", seg_reviews, "--out", tmp_path / "x", "--steps", "1",
                     "--report-to", "aim")
    assert result.code == 2 and "pip install aim" in result.err, result


def test_stage_config_lists_inputs_and_config(tmp_path):
    run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "s", "--workers", "1")
    doc = yaml.safe_load((tmp_path / "s" / "stage_config.yaml").read_text(encoding="utf-8"))
    assert doc["stage"] == "segment" and doc["inputs"] == {"corpus": [str(FIXTURES / "reviews.tsv")]}


def test_a_relative_workdir_from_the_command_line_keeps_stage_references_right(tmp_path):
    pipe = tmp_path / "pipes" / "p.yaml"
    pipe.parent.mkdir()
    pipe.write_text(f"name: p\nstages:\n  - stage: segment\n    inputs: {{corpus: {FIXTURES / 'reviews.tsv'}}}\n"
                    "    config: {workers: 1}\n  - stage: vocab\n    inputs: {corpus: '${segment}'}\n", encoding="utf-8")
    done = cli("run", pipe, "--workdir", "w", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert manifests.read_manifest(tmp_path / "w" / "vocab")["inputs"]["corpus"]["paths"] == [str(tmp_path / "w" / "segment")]


def test_textcnn_logs_to_a_tracker_like_the_bert_stages(tmp_path, seg_reviews):
    from conftest import build

    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=8, workers=1)
    build("textcnn", tmp_path / "cnn", {"train": seg_reviews, "vectors": vectors}, epochs=1, filters=4, baseline=False,
          report_to="tensorboard")
    assert list((tmp_path / "cnn" / "tracking").rglob("events.out.tfevents.*"))
    result = run_cli("textcnn", "--train", seg_reviews, "--vectors", vectors, "--out", tmp_path / "x", "--report-to", "wandb")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "pip install wandb" in result.err, result


def test_an_error_midway_is_on_a_line_of_its_own_after_the_progress_bar(tmp_path):
    """The bar a failing step left open is closed first: the error line was glued onto it (`segment: 0%|...error:`)."""
    corpus = tmp_path / "bad.txt"  # detected as UTF-8 from its start; the last line is not
    corpus.write_bytes("一行中文很长的一行文本内容\n".encode() * 20000 + "坏行".encode("gbk") + b"\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # bars on, as for a user
    done = subprocess.run([sys.executable, "-m", "nlp_pipe", "segment", "--corpus", str(corpus), "--out", str(tmp_path / "seg"),
                           "--workers", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "segment:" in done.stderr, done.stderr  # the bar was drawn
    assert [line for line in done.stderr.splitlines() if "error:" in line][0].startswith("error: "), done.stderr


def test_the_progress_bar_counts_a_gbk_files_own_bytes(tmp_path):
    """The bar's total is the file's size: it counts the bytes read, not the text re-encoded as UTF-8 (a GBK file
    showed 52.7kB of 37.1k)."""
    corpus = tmp_path / "gbk.txt"
    corpus.write_bytes("这是一行用GBK编码的中文文本，用来测试进度条。\n".encode("gbk") * 3000)
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    done = subprocess.run([sys.executable, "-m", "nlp_pipe", "segment", "--corpus", str(corpus), "--out", str(tmp_path / "seg"),
                           "--workers", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    shown = re.findall(r"segment:[^|]*\|[^|]*\| ([\d.]+)(k?)/([\d.]+)(k?)", done.stderr)
    assert shown, done.stderr
    assert all(float(n) * (1000 if k else 1) <= float(t) * (1000 if tk else 1) for n, k, t, tk in shown), shown
    assert shown[-1][:2] == shown[-1][2:], shown  # and it ends at the total


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    """click's usage errors were a three-line block; `--corpus A B` now also says how to give several paths."""
    (tmp_path / "a.txt").write_text("一行\n", encoding="utf-8")
    done = cli("segment", "--corpus", tmp_path / "a.txt", tmp_path / "b.txt", "--out", tmp_path / "seg")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "give each path with its own option" in done.stderr and "see nlp-pipe segment --help" in done.stderr
    typo = cli("segmnt")
    assert typo.returncode == 2 and typo.stderr.strip() == "error: No such command 'segmnt' (did you mean 'segment'?); see nlp-pipe --help"
