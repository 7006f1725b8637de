"""Every training stage under DDP: a 2-process CPU run (`accelerate launch --multi_gpu --num_processes 2`,
torchrun with gloo) against a 1-process run at the same global batch (2 x B vs 1 x 2B).

Models without dropout, fp32: both runs see the same batches in the same order (BatchOrder hands rank r
the r-th half of each global batch), the same initial weights and a gradient that differs only by float
summation order (the mean of two half-batch means is the global mean for per-example losses).
Per-step training losses (metrics.jsonl, 6 decimals), observed max differences in brackets:
- finetune, textcnn: within LOSS_ATOL (observed 0: identical to 6 decimals);
- distill: within DISTILL_ATOL (observed 6e-4 general, 2e-4 task): its MSE losses average over each
  rank's tokens, and the mean of two per-rank token means is not the global token mean when the halves
  hold different numbers of tokens;
- pretrain: within PRETRAIN_ATOL (observed 0.024): the masks differ (the masking generator is seeded
  per process), the batches are the same; the blocks cache the ranks tokenise together equals the
  1-process one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForMaskedLM

from conftest import FIXTURES, VENV_BIN, build, run_launch
from nlp_pipe.core import distributed

LOSS_ATOL = 1e-5  # per-step mean loss, same batches: only float summation order differs
DISTILL_ATOL = 2e-3  # token-averaged losses: the mean of per-rank means
PRETRAIN_ATOL = 0.1  # MLM loss (ln 21128 = 10 at the start): other masks on the same batches
STUDENT = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}


def _free_port() -> int:
    with socket.socket() as s:  # the other engineers' suites may launch at the same time: never the default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return [d for c in map(int, children) for d in (*_descendants(c), c)]


def launch_command(*args: object) -> list[str]:
    return [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "nlp_pipe", *[str(a) for a in args]]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def launch2(*args: object) -> subprocess.CompletedProcess:
    done = run_launch(launch_command(*args), ENV, 300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def cli_args(config: dict) -> list[str]:
    out = []
    for key, value in config.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def train_losses(path: Path, key: str = "loss") -> np.ndarray:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return np.array([r[key] for r in records if r["split"] == "train"])


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bert_no_dropout(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    out = tmp_path_factory.mktemp("ddp") / "bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForMaskedLM(config).save_pretrained(out)
    BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt")).save_pretrained(out)
    return out


def compare(stage: str, tmp_path: Path, inputs: dict, config: dict, batch: int, metrics_file: str = "metrics.jsonl",
            atol: float = LOSS_ATOL, key: str = "loss") -> tuple[Path, Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    build(stage, one, inputs, batch_size=2 * batch, **config)
    flags = [a for name, paths in inputs.items() for p in (paths if isinstance(paths, list) else [paths])
             for a in (f"--{name}", p)]
    launch2(stage, *flags, "--out", two, *cli_args({**config, "batch_size": batch}))
    assert manifest(one)["processes"] == 1 and manifest(two)["processes"] == 2
    a, b = train_losses(one / metrics_file, key), train_losses(two / metrics_file, key)
    assert len(a) == len(b) > 3
    print(f"{stage}: {len(a)} steps, max |2 processes - 1 process| = {np.abs(b - a).max():.2e} (tolerance {atol})")
    np.testing.assert_allclose(b, a, atol=atol, rtol=0)
    return one, two


FINETUNE = dict(steps=8, log_every=1, eval_every=4, patience=0, lr=3e-3, precision="fp32", seed=1, max_seq_len=48)


def test_finetune_with_folds_two_processes_match_one(tmp_path, bert_no_dropout, seg_reviews):
    """The model's training curve and each cross-validation fold (trained across the 2 processes too)."""
    config = {**FINETUNE, "folds": 2}
    one, two = compare("finetune", tmp_path, {"checkpoint": bert_no_dropout, "train": seg_reviews}, config, batch=8)
    assert "x2" in manifest(two)["device"]
    cv = [json.loads((d / "metrics.json").read_text(encoding="utf-8"))["cross_validation"] for d in (one, two)]
    assert cv[0].keys() == cv[1].keys() == {"accuracy", "macro_f1"}
    for key in cv[0]:  # each fold scores its held-out part as the 1-process fold does
        np.testing.assert_allclose(cv[1][key]["folds"], cv[0][key]["folds"], atol=1e-6)
    assert not list(tmp_path.glob("two.fold*")) and not list(tmp_path.glob(".two*"))


def test_textcnn_two_processes_match_one(tmp_path, seg_reviews):
    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=16, workers=1)
    compare("textcnn", tmp_path, {"train": seg_reviews, "vectors": vectors},
            dict(steps=8, log_every=1, eval_every=4, patience=0, dropout=0.0, embedding_dropout=0.0, filters=8, precision="fp32", seed=1,
                 mode="non-static"), batch=8)


def test_distill_general_two_processes_match_one(tmp_path, bert_no_dropout, seg_reviews):
    shape = tmp_path / "student.json"
    shape.write_text(json.dumps(STUDENT), encoding="utf-8")
    one, two = compare("distill", tmp_path, {"teacher": bert_no_dropout, "corpus": [seg_reviews]},
                       dict(mode="general", student_shape=str(shape), steps=6, log_every=1, eval_every=3, lr=3e-3,
                            precision="fp32", seed=1, eval_docs=16, max_seq_len=48, speed_batch=2, speed_seq_len=16),
                       batch=8, atol=DISTILL_ATOL)
    from transformers import AutoModel

    assert AutoModel.from_pretrained(two).config.hidden_size == STUDENT["hidden_size"]


def test_distill_task_two_processes_match_one(tmp_path, bert_no_dropout, seg_reviews):
    teacher = tmp_path / "teacher"
    build("finetune", teacher, {"checkpoint": bert_no_dropout, "train": seg_reviews}, steps=4, batch_size=16,
          lr=3e-3, precision="fp32", patience=0, seed=1, max_seq_len=48)
    shape = tmp_path / "student.json"
    shape.write_text(json.dumps(STUDENT), encoding="utf-8")
    config = dict(mode="task", student_shape=str(shape), steps=4, log_every=1, lr=3e-3, precision="fp32", seed=1,
                  patience=0, speed_batch=2, speed_seq_len=16)
    one, two = compare("distill", tmp_path, {"teacher": teacher, "train": seg_reviews}, config, batch=8,
                       metrics_file="metrics_intermediate.jsonl", atol=DISTILL_ATOL)
    np.testing.assert_allclose(train_losses(two / "metrics_prediction.jsonl"), train_losses(one / "metrics_prediction.jsonl"),
                               atol=DISTILL_ATOL, rtol=0)


PRETRAIN = dict(max_seq_len=64, steps=8, lr=2e-3, log_every=1, save_every=4, eval_every=0, eval_docs=2, num_proc=1,
                precision="fp32", seed=1)


def _pretrain_inputs(bert_no_dropout: Path) -> dict:
    return {"corpus": [FIXTURES / "news.txt", FIXTURES / "reviews.tsv"], "tokenizer": bert_no_dropout}


def test_pretrain_two_processes_match_one(tmp_path, bert_no_dropout):
    """Also the shared blocks cache: the launch finds the one-process run's build (same key, beside both --outs)
    and both of its processes load it."""
    config = {**PRETRAIN, "model_config": str(bert_no_dropout / "config.json")}
    one, two = compare("pretrain", tmp_path, _pretrain_inputs(bert_no_dropout), config, batch=4, atol=PRETRAIN_ATOL,
                       key="mlm_loss")
    assert manifest(two)["metrics"]["processes"] == 2
    assert AutoModelForMaskedLM.from_pretrained(two).config.hidden_size == 32
    (entry,) = (tmp_path / "nlp_pipe_cache" / "pretraining").iterdir()
    assert not manifest(one)["metrics"]["data_cache_reused"] and manifest(two)["metrics"]["data_cache_reused"]
    assert (entry / "stats.json").exists()


@pytest.mark.slow  # about 40 s: two launches
def test_two_process_pretrain_killed_resumes(tmp_path, bert_no_dropout):
    """SIGKILL the whole launch once a checkpoint exists: no artifact is left; the relaunch resumes and finishes."""
    config = {**PRETRAIN, "model_config": str(bert_no_dropout / "config.json"), "steps": 40, "save_every": 5}
    out = tmp_path / "bert"
    flags = ["--corpus", FIXTURES / "news.txt", "--corpus", FIXTURES / "reviews.tsv", "--tokenizer", bert_no_dropout]
    command = launch_command("pretrain", *flags, "--out", out, *cli_args({**config, "batch_size": 4}))
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list((tmp_path / "bert.checkpoints").glob("step_*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    for pid in [*_descendants(proc.pid), proc.pid]:  # both ranks (torchrun starts them in sessions of their own), then
        os.kill(pid, signal.SIGKILL)                  # the launcher
    proc.wait()
    assert not out.exists() and list((tmp_path / "bert.checkpoints").glob("step_*"))
    launch2("pretrain", *flags, "--out", out, *cli_args({**config, "batch_size": 4}))
    metrics = manifest(out)["metrics"]
    assert metrics["steps"] == 40 and metrics["resumed_from_step"] >= 5 and metrics["processes"] == 2
    assert not (tmp_path / "bert.checkpoints").exists()


def test_textcnn_two_processes_with_a_tracker(tmp_path, seg_reviews):
    """accelerate's end_training() destroys the process group; the trainer finishes its trackers without it,
    so the barriers after training (and distributed.close at exit) still have a group to wait on."""
    pytest.importorskip("tensorboard")
    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=16, workers=1)
    launch2("textcnn", "--train", seg_reviews, "--vectors", vectors, "--out", tmp_path / "two", "--steps", "2",
            "--filters", "4", "--batch-size", "8", "--report-to", "tensorboard")
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2
    assert list((tmp_path / "two").rglob("events.out.tfevents.*"))


def test_close_leaves_the_process_group_on_every_rank(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text("import sys, torch.distributed as dist\n"
                      "from pathlib import Path\n"
                      "from nlp_pipe.core import distributed\n"
                      "assert distributed.gather(distributed.rank()) == [0, 1]\n"
                      "distributed.close()\n"
                      "Path(sys.argv[1], f'rank{distributed.rank()}').write_text(str(dist.is_initialized()))\n",
                      encoding="utf-8")
    done = subprocess.run([str(VENV_BIN / "python"), "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script), str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["False", "False"]


def test_ranks_wait_out_the_main_ranks_long_work(tmp_path):
    """The gloo wait is ours (NLP_PIPE_RANK_WAIT_S, default 24 h), not torch's 30 minutes: rank 1 waits at a barrier
    while rank 0 works alone for 4 s; with a 1 s wait the launch fails there, with the default it succeeds."""
    script = tmp_path / "ranks.py"
    script.write_text("import time\n"
                      "from nlp_pipe.core import distributed\n"
                      "distributed.gather(distributed.rank())\n"
                      "if distributed.is_main():\n"
                      "    time.sleep(4)  # the main rank's own work (a pretraining cache, a merge)\n"
                      "distributed.barrier()\n"
                      "distributed.close()\n", encoding="utf-8")
    assert distributed.rank_wait().total_seconds() >= 24 * 3600

    def launch(env):
        return subprocess.run([str(VENV_BIN / "python"), "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), str(script)],
                              env=env, capture_output=True, text=True, timeout=120)

    short = launch({**ENV, distributed.RANK_WAIT_ENV: "1"})
    assert short.returncode != 0 and "timed out" in short.stderr.lower(), short.stderr[-3000:]
    default = launch(ENV)
    assert default.returncode == 0, default.stderr[-3000:]
