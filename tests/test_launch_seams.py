"""The seams of a launch (`accelerate launch --multi_gpu --num_processes 2`, gloo on CPU): every rank > 0 follows
the main rank's word (build / fresh / error) for training stages as for sharded ones, so a launch whose main
rank finds the artifact fresh only under the lock (a concurrent writer finished first), or refuses the --out,
ends on every rank at once instead of leaving the others to train alone until a collective times out; and the
backend a training stage used is recorded. 15-40 s per launch here (two processes importing torch)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_ddp import ENV, _free_port, manifest

from conftest import FIXTURES, VENV_BIN, build, run_launch

FINETUNE = dict(steps=2, batch_size=8, lr=3e-3, precision="fp32", patience=0, seed=1, max_seq_len=32, eval_every=0)

# Runs the CLI with the runner's lock replaced: on the main rank, a rival writer publishes the artifact (a copy of
# FRESH_FROM, same fingerprint) just before the lock is taken, after every rank planned to build it.
HOOK = """
import os, shutil, sys
from contextlib import contextmanager
from nlp_pipe import cli
from nlp_pipe.core import artifacts

taken = artifacts.locked

@contextmanager
def rival_first(out):
    if os.environ.get("RANK", "0") == "0" and not out.exists():
        shutil.copytree(os.environ["FRESH_FROM"], out)
    with taken(out):
        yield

artifacts.locked = rival_first
cli.main()
"""


# Runs the CLI with the ranks planning at different moments: the main rank plans (to build), then a rival writer
# publishes the artifact (a copy of FRESH_FROM at FRESH_OUT), and only then does rank 1 plan (and finds it fresh).
PLANNING_HOOK = """
import os, shutil, sys, time
from nlp_pipe import cli, runner

planned = runner.plan
rival, out = os.environ["FRESH_FROM"], os.environ["FRESH_OUT"]

def plan_apart(*args, **kwargs):
    if os.environ.get("RANK", "0") == "0":
        p = planned(*args, **kwargs)
        shutil.copytree(rival, out)
        return p
    while not os.path.exists(os.path.join(out, "manifest.json")):
        time.sleep(0.05)
    return planned(*args, **kwargs)

runner.plan = plan_apart
cli.main()
"""


def launch(tmp_path: Path, *args: object, hook: str | None = None, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    script = ["-m", "nlp_pipe"]
    if hook:
        (tmp_path / "hook.py").write_text(hook, encoding="utf-8")
        script = [str(tmp_path / "hook.py")]
    command = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
               *script, *[str(a) for a in args]]
    start = time.monotonic()
    done = run_launch(command, {**ENV, **(env or {})}, 240)
    return done, time.monotonic() - start


def finetune_args(tiny_bert: Path, seg_reviews: Path, out: Path) -> list[object]:
    flags: list[object] = ["finetune", "--checkpoint", tiny_bert, "--train", seg_reviews, "--out", out]
    for key, value in FINETUNE.items():
        flags += [f"--{key.replace('_', '-')}", value]
    return flags


def test_artifact_fresh_under_the_lock_ends_every_rank(tmp_path, tiny_bert, seg_reviews):
    rival = tmp_path / "rival"
    build("finetune", rival, {"checkpoint": tiny_bert, "train": seg_reviews}, **FINETUNE)
    out = tmp_path / "clf"
    done, seconds = launch(tmp_path, *finetune_args(tiny_bert, seg_reviews, out), hook=HOOK, env={"FRESH_FROM": str(rival)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fresh, skipped" in done.stderr and "training" not in done.stderr, done.stderr[-3000:]
    assert manifest(out) == manifest(rival)
    assert not list(tmp_path.glob("clf.*")) and not list(tmp_path.glob(".clf*"))
    print(f"fresh under the lock: the launch ended in {seconds:.1f} s")


def test_ranks_that_planned_apart_follow_the_main_rank(tmp_path, tiny_bert, seg_reviews):
    """Rank 1 plans after a rival published the artifact (fresh), the main rank before (build): the skip is the
    main rank's decision on every rank, so rank 1 does not leave the main rank waiting at the lock's word."""
    rival = tmp_path / "rival"
    build("finetune", rival, {"checkpoint": tiny_bert, "train": seg_reviews}, **FINETUNE)
    out = tmp_path / "clf"
    done, seconds = launch(tmp_path, *finetune_args(tiny_bert, seg_reviews, out), hook=PLANNING_HOOK,
                           env={"FRESH_FROM": str(rival), "FRESH_OUT": str(out)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fresh, skipped" in done.stderr and "training" not in done.stderr, done.stderr[-3000:]
    assert manifest(out) == manifest(rival)
    print(f"planned apart: the launch ended in {seconds:.1f} s")


def test_refused_out_ends_every_rank(tmp_path, tiny_bert, seg_reviews):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n", encoding="utf-8")
    done, seconds = launch(tmp_path, *finetune_args(tiny_bert, seg_reviews, out))
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(refusals) == 1 and "is not an nlp-pipe artifact" in refusals[0], done.stderr[-3000:]  # the main rank's, once
    assert "training" not in done.stderr  # no rank started to train
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    print(f"refused --out: the launch ended in {seconds:.1f} s")


def test_launched_pipeline_records_the_training_backend(tmp_path, tiny_bert):
    """segment (a sharded corpus stage: it makes the launch's process group) then pretrain, in one launch: the
    training stage gets the backend accelerate chooses here (gloo on CPU) and the manifest says so."""
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 64, "max_position_embeddings": 64}), encoding="utf-8")
    pipeline = {"name": "seams", "workdir": str(tmp_path / "runs"), "stages": [
        {"stage": "segment", "inputs": {"corpus": str(FIXTURES / "news.txt")}, "config": {"workers": 1}},
        {"stage": "pretrain", "inputs": {"corpus": "${segment}", "tokenizer": str(tiny_bert)},
         "config": {"model_config": str(shape), "max_seq_len": 64, "steps": 4, "batch_size": 4, "save_every": 0,
                    "eval_every": 0, "eval_docs": 2, "num_proc": 1, "precision": "fp32"}}]}
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(pipeline, allow_unicode=True), encoding="utf-8")
    done, _ = launch(tmp_path, "run", tmp_path / "pipe.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    pretrain = manifest(tmp_path / "runs" / "pretrain")
    assert (pretrain["processes"], pretrain["backend"]) == (2, "gloo")
    assert manifest(tmp_path / "runs" / "segment")["backend"] == "gloo"
    assert "processes 2; backend gloo" in done.stderr  # the training header, from the main rank only
    assert done.stderr.count("***** pretrain: training *****") == 1


@pytest.mark.slow  # about 25 s: a launch that trains until its first checkpoint
def test_interrupted_launch_ends_every_rank(tmp_path, tiny_bert):
    """Ctrl-C to the launcher (torchrun forwards SIGINT to every rank): the launch ends within seconds, the
    main rank prints the one line, no rank prints a traceback, and nothing is published."""
    out = tmp_path / "bert"
    command = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "nlp_pipe", "pretrain", "--corpus", str(FIXTURES / "news.txt"), "--corpus",
               str(FIXTURES / "reviews.tsv"), "--tokenizer", str(tiny_bert), "--out", str(out), "--model-config",
               str(tiny_bert / "config.json"), "--max-seq-len", "64", "--batch-size", "4", "--steps", "2000",
               "--save-every", "5", "--eval-every", "0", "--eval-docs", "2", "--num-proc", "1", "--precision", "fp32"]
    with open(tmp_path / "stderr.txt", "w", encoding="utf-8") as err:
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while not list((tmp_path / "bert.checkpoints").glob("step_*")):
                assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
                time.sleep(0.05)
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            seconds = time.monotonic() - start
        finally:
            proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8")
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert len([line for line in stderr.splitlines() if line.startswith("interrupted (SIGINT) at step ")]) == 1
    assert not out.exists() and seconds < 30
