"""Corpus stages across the ranks of `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU): each rank
takes its share of the rows, the main rank merges the parts in input order; every file of the artifact
but the timing ones (report.md, stage.log) is byte-identical to a one-process run, and so are the
manifest's counts and metrics; the manifest records 2 processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_ddp import ENV, cli_args, launch2, launch_command, manifest

from conftest import FIXTURES, build, run_cli, run_launch
from nlp_pipe.core import shards
from nlp_pipe.core.files import PARTS_DIR

TIMING = {"report.md", "stage.log", "manifest.json"}  # wall times and timestamps


def digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in TIMING}


def assert_same_artifact(one: Path, two: Path, metrics_skip: tuple[str, ...] = ()) -> None:
    assert digests(one) == digests(two)
    a, b = manifest(one), manifest(two)
    assert (a["processes"], b["processes"]) == (1, 2)
    assert a["counts"] == b["counts"] and a.get("reading") == b.get("reading")
    assert {k: v for k, v in a["metrics"].items() if k not in metrics_skip} == \
        {k: v for k, v in b["metrics"].items() if k not in metrics_skip}
    assert a["fingerprint"] == b["fingerprint"]


@pytest.mark.parametrize("ranks", [1, 2, 3, 5])
def test_line_shards_cover_every_line_once_in_order(tmp_path, ranks):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("一 二\n三\n\n四 五 六\n", encoding="utf-8")
    b.write_bytes("七\r\n八 九".encode())  # no final newline, CRLF
    got = [line for r in range(ranks) for line in shards.lines([a, b], ranks, r)]
    assert got == ["一 二\n", "三\n", "\n", "四 五 六\n", "七\r\n", "八 九"]


def assert_segment_launch_matches_one_process(tmp_path: Path, launch: Callable[..., object]) -> None:
    """`launch(*cli_args)` runs segment on two fixture files across its ranks: the artifact is the one a single
    process writes, and no shard parts or staging directory are left behind."""
    corpus = [FIXTURES / "reviews.tsv", FIXTURES / "news.txt"]
    one, two = tmp_path / "one", tmp_path / "two"
    build("segment", one, {"corpus": corpus}, workers=1, chunk_rows=16)
    done = launch("segment", "--corpus", corpus[0], "--corpus", corpus[1], "--out", two, "--workers", "1", "--chunk-rows", "16")
    assert_same_artifact(one, two, metrics_skip=("workers",))
    if isinstance(done, subprocess.CompletedProcess):  # the main rank says what was written, once (every rank did)
        assert done.stdout.count(" wrote ") == 1 and done.stdout.count("rows: ") == 1, done.stdout
    assert not list(two.rglob(PARTS_DIR)) and not list(tmp_path.glob(".two*"))


def test_segment_two_processes_byte_identical(tmp_path):
    assert_segment_launch_matches_one_process(tmp_path, launch2)


def test_vocab_two_processes_byte_identical(tmp_path, seg_reviews, seg_news):
    one, two = tmp_path / "one", tmp_path / "two"
    build("vocab", one, {"corpus": [seg_reviews, seg_news]}, min_freq=1)
    launch2("vocab", "--corpus", seg_reviews, "--corpus", seg_news, "--out", two, "--min-freq", "1")
    assert_same_artifact(one, two)


def test_phrases_two_processes_byte_identical(tmp_path, seg_reviews):
    one, two = tmp_path / "one", tmp_path / "two"
    config = {"min_count": 2, "scoring": "npmi", "threshold": 0.3, "passes": 2}
    build("phrases", one, {"corpus": seg_reviews}, **config)
    assert manifest(one)["metrics"]["phrases"] > 5
    launch2("phrases", "--corpus", seg_reviews, "--out", two, "--min-count", "2", "--scoring", "npmi", "--threshold", "0.3",
            "--passes", "2")
    assert_same_artifact(one, two)


@pytest.mark.parametrize("pooling", [pytest.param("mean", marks=pytest.mark.slow), "tokens"])
def test_extract_two_processes_byte_identical(tmp_path, tiny_bert, pooling):
    """The ranks run the same length-sorted batches as one process (every R-th each): the same float bytes."""
    one, two = tmp_path / "one", tmp_path / "two"
    build("extract", one, {"checkpoint": tiny_bert, "corpus": [FIXTURES / "reviews.tsv"]}, pooling=pooling, batch_size=16)
    launch2("extract", "--checkpoint", tiny_bert, "--corpus", FIXTURES / "reviews.tsv", "--out", two, "--pooling", pooling,
            "--batch-size", "16")
    assert_same_artifact(one, two, metrics_skip=("texts_per_s",))


def test_augment_two_processes_byte_identical(tmp_path, seg_reviews, tiny_bert):
    """Chunks of 32 texts, every other one augmented by rank 1; each text seeded by its row: the same rows."""
    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=16, workers=1)
    one, two = tmp_path / "one", tmp_path / "two"
    config = {"copies": 2, "top_k": 3, "chunk_rows": 32, "batch_size": 16}
    build("augment", one, {"corpus": seg_reviews, "mlm": tiny_bert, "vectors": vectors}, **config)
    assert manifest(one)["metrics"]["replaced_mlm"] > 0
    launch2("augment", "--corpus", seg_reviews, "--mlm", tiny_bert, "--vectors", vectors, "--out", two, *cli_args(config))
    assert_same_artifact(one, two, metrics_skip=("texts_per_s",))
    assert not list(two.rglob(PARTS_DIR))


REFUSAL = "error: stage 'word2vec' runs in one process; run it without accelerate launch / torchrun"


@pytest.mark.parametrize("rank", ["0", "1"])
def test_one_process_stage_is_refused_by_each_rank(tmp_path, seg_reviews, monkeypatch, rank):
    """Rank 0 as well as the others: the one-line error and exit 2 before the lock, so no rank builds it alone."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    result = run_cli("word2vec", "--corpus", seg_reviews, "--out", tmp_path / "w2v", "--min-count", "1")
    assert (result.code, result.err_lines) == (2, [REFUSAL])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a launch, about 12 s; each rank's refusal is the test above
def test_one_process_stage_under_a_launch_stops_it(tmp_path, seg_reviews):
    """The real launch: the first rank to refuse exits 2 and torchrun stops the other (SIGTERM) if it has not
    refused yet; nothing is built or published."""
    out = tmp_path / "w2v"
    done = run_launch(launch_command("word2vec", "--corpus", seg_reviews, "--out", out, "--min-count", "1"), ENV, 300)
    errors = [line for line in done.stderr.splitlines() if "runs in one process" in line]
    assert done.returncode != 0 and errors and set(errors) == {REFUSAL}, done.stderr[-3000:]
    exits = {line.split(":")[1].split()[0] for line in done.stderr.splitlines() if line.strip().startswith("exitcode  :")}
    assert "2" in exits and exits <= {"2", "-15"}, exits
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two launches, about 25 s
def test_killed_rank_leaves_no_artifact_and_the_rerun_rebuilds(tmp_path):
    """Rank 1 dies (os._exit, as a SIGKILL would end it) after writing its first chunk: the launch fails, nothing
    is published at --out, and the rerun builds the same bytes as one process."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import nlp_pipe.core.shards as s\n"
        "    original = s.PartWriter.write\n"
        "    def write(self, table):\n"
        "        original(self, table)\n"
        "        os._exit(9)\n"
        "    s.PartWriter.write = write\n", encoding="utf-8")
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", two, "--workers", "1", "--chunk-rows", "16")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    done = run_launch(launch_command(*args), env, 300)
    assert done.returncode != 0 and "exitcode  : 9" in done.stderr and not two.exists()  # rank 1 died as planned
    launch2(*args)
    build("segment", one, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1, chunk_rows=16)
    assert_same_artifact(one, two, metrics_skip=("workers",))
    assert not list(tmp_path.glob(".two.tmp-*"))
