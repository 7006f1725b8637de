"""Shared test helpers: fixture paths, running the CLI in-process, building stages once per session.

Everything is hermetic: Hugging Face libraries are kept offline and away from the home cache,
and every artifact is written under pytest's tmp_path.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before any Hugging Face import: no network, no ~/.cache.
_HF_HOME = tempfile.mkdtemp(prefix="nlp-pipe-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, True)
for _key, _value in {
    "HF_HOME": _HF_HOME,
    "HF_DATASETS_CACHE": os.path.join(_HF_HOME, "datasets"),
    "XDG_CACHE_HOME": os.path.join(_HF_HOME, "xdg"),  # nlp_pipe's remembered input-file hashes
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
}.items():
    os.environ[_key] = _value
# One intra-op thread unless the caller chose: without OMP_NUM_THREADS the trainer probes the machine's load to
# pick 1 or all cores, so two runs in one test (resume vs uninterrupted, 2 processes vs 1) could sum floats in
# different orders on a busy machine. With it, every run does the same arithmetic whatever the load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

# Hypothesis: `make test` (and CI) draws the same examples every run, so it passes or fails by the code,
# not by chance; `make test-all` sets HYPOTHESIS_PROFILE=fresh for new draws. Whatever a fresh run finds
# becomes an explicit @example on its test (the reproduction is printed with the failure).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("fresh", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from nlp_pipe import runner  # noqa: E402
from nlp_pipe.cli import main  # noqa: E402
from nlp_pipe.core import process  # noqa: E402

process.configure()  # the process-wide settings the CLI makes at its entry, for stages run through `build`

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV_BIN = Path(sys.executable).parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*args: str | Path) -> CliResult:
    """`nlp-pipe ARGS` in this process, through `main` (so UserError -> exit 2 as for users)."""
    argv = [str(a) for a in args]
    with CliRunner().isolation() as (out, err, _):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return CliResult(code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8"))


def run_launch(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run for a launch (accelerate launch / torchrun): on a timeout the whole process group is killed,
    the launcher and every rank, which may sit in a gloo collective that no signal handler can leave; a hung
    launch then fails its test and leaves nothing running."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def build(stage: str, out: Path, inputs: dict[str, Any], force: bool = False, **config: Any) -> dict[str, Any]:
    """Run one stage through the runner (plan + execute), as the CLI does; returns the manifest."""
    return runner.execute(runner.plan(stage, config, inputs, out), force=force)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def fixture_lines(name: str) -> list[str]:
    return lines(FIXTURES / name)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def seg_reviews(tmp_path_factory) -> Path:
    """A segment artifact of reviews.tsv (160 labelled rows), shared read-only by the session."""
    out = tmp_path_factory.mktemp("shared") / "seg_reviews"
    build("segment", out, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    return out


@pytest.fixture(scope="session")
def seg_news(tmp_path_factory) -> Path:
    """A segment artifact of news.txt (unlabelled, blank lines between documents)."""
    out = tmp_path_factory.mktemp("shared") / "seg_news"
    build("segment", out, {"corpus": [FIXTURES / "news.txt"]}, workers=1)
    return out


def make_tiny_bert(out: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A random tiny BertForMaskedLM on the Chinese BERT vocabulary, saved with its fast tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(out)
    # not BertTokenizerFast(vocab_file=): it ignores the file (docs/library-notes.md)
    BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt")).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT checkpoint directory (2 layers x 32 hidden), shared read-only by the session."""
    return make_tiny_bert(tmp_path_factory.mktemp("shared") / "tiny_bert")


def die_after_first_checkpoint(monkeypatch) -> None:
    """From now on the Trainer raises KeyboardInterrupt right after writing a checkpoint, as if killed there;
    `monkeypatch.undo()` lets the rerun resume."""
    from nlp_pipe.training.trainer import Trainer

    original = Trainer._save_checkpoint

    def save_then_die(self, *args):
        original(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)


def assert_pipeline_agrees(artifact: Path, texts: list[str]) -> None:
    """transformers.pipeline("text-classification") on a classifier artifact gives `nlp-pipe predict`'s labels and
    probabilities (within 1e-5; predict rounds to 6 decimals), on texts that get both labels: a classifier that
    answers one label for everything would agree on labels while its probabilities could be anything."""
    import json

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(artifact), device="cpu")
    theirs = classify(texts, truncation=True, top_k=None)
    file = Path(tempfile.mkdtemp(prefix="nlp-pipe-parity-")) / "texts.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = run_cli("predict", artifact, "--file", file, "--json")
    assert result.code == 0, result.err
    ours = [json.loads(line) for line in result.out.splitlines()]
    assert len({o["label"] for o in ours}) > 1, f"one label for every text: {ours[0]['label']}"
    assert [max(t, key=lambda r: r["score"])["label"] for t in theirs] == [o["label"] for o in ours]
    for text, scores, record in zip(texts, theirs, ours):
        assert {r["label"] for r in scores} == set(record["probabilities"]), text
        assert all(abs(r["score"] - record["probabilities"][r["label"]]) <= 1e-5 for r in scores), (text, scores, record)
