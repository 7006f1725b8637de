"""Exact resume, proven on real processes: every training stage is SIGKILLed right after its first checkpoint,
rerun with the same command, and its final weights compared with an uninterrupted run's: bitwise equal on CPU.

What must survive the kill for that: the weights, optimizer, scheduler and RNG states (accelerate's save_state),
the data position (TrainState), the best evaluation so far with its weights (best.pt inside the same checkpoint),
and the CPU thread count the first start chose (run.json): the rerun is started with OMP_NUM_THREADS=2 to tempt
it into another count, which changes float summation order in the larger kernels. The uninterrupted run is in
this process with threads=1 (what the killed one chose under OMP_NUM_THREADS=1). The rerun's stderr, at the
default verbosity, carries no library warning (accelerate's "Removed shared tensor" on every save, ...).
About 10-25 s per stage here (two process starts and tens of tiny steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import build

STUDENT = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
ENV = {**os.environ, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
FINETUNE = dict(steps=40, log_every=5, eval_every=5, save_every=5, lr=3e-3, precision="fp32", seed=1, max_seq_len=48,
                batch_size=8, patience=0)


def command(stage: str, inputs: dict[str, list[Path]], config: dict, out: Path) -> list[str]:
    args = [sys.executable, "-m", "nlp_pipe", stage, "--out", str(out)]
    for name, paths in inputs.items():
        for path in paths:
            args += [f"--{name.replace('_', '-')}", str(path)]
    for key, value in config.items():
        flag = key.replace("_", "-")
        args += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return args


def library_warnings(stderr: str) -> list[str]:
    """Log lines of level WARNING from a logger outside nlp_pipe (the console's `HH:MM:SS W name: ...`), and Python
    warnings printed the default way."""
    return [line for line in stderr.splitlines()
            if (" W " in line[:12] and not line[11:].startswith("nlp_pipe")) or "Warning:" in line]


def kill_after_first_checkpoint(stage: str, inputs: dict[str, list[Path]], config: dict, out: Path) -> None:
    proc = subprocess.Popen(command(stage, inputs, config, out), env={**ENV, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while not list(out.parent.glob(f"{out.name}*.checkpoints/step_*")):
            assert proc.poll() is None, f"{stage} ended (exit {proc.returncode}) before its first checkpoint"
            assert time.monotonic() < deadline, f"{stage}: no checkpoint within 180 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"{stage} finished before it could be killed: use more steps"
    assert not out.exists()


def check_exact_resume(tmp_path: Path, stage: str, inputs: dict[str, list[Path]], config: dict) -> None:
    whole = tmp_path / "whole"
    build(stage, whole, inputs, **config, threads=1)
    out = tmp_path / "killed"
    kill_after_first_checkpoint(stage, inputs, config, out)
    rerun = subprocess.run(command(stage, inputs, config, out), env={**ENV, "OMP_NUM_THREADS": "2"},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(resuming at step " in rerun.stderr, rerun.stderr[-3000:]
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == [], f"{len(differ)} of {len(a)} tensors differ after the resume, e.g. {differ[:3]}"
    assert "threads 1" in rerun.stderr and "threads 2" not in rerun.stderr  # what the first start chose, every phase
    assert library_warnings(rerun.stderr) == []


def test_pretrain_resumes_bitwise(tmp_path, tiny_bert, seg_reviews):
    from conftest import FIXTURES

    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 64, "max_position_embeddings": 64}), encoding="utf-8")
    check_exact_resume(tmp_path, "pretrain", {"corpus": [FIXTURES / "news.txt", seg_reviews], "tokenizer": [tiny_bert]},
                       dict(model_config=str(shape), max_seq_len=64, steps=40, batch_size=8, lr=5e-3, log_every=5,
                            eval_every=10, save_every=5, eval_docs=2, precision="fp32", num_proc=1, seed=3))


def test_finetune_resumes_bitwise(tmp_path, tiny_bert, seg_reviews):
    check_exact_resume(tmp_path, "finetune", {"checkpoint": [tiny_bert], "train": [seg_reviews]}, FINETUNE)


def test_textcnn_resumes_bitwise(tmp_path, seg_reviews):
    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=16, workers=1)
    check_exact_resume(tmp_path, "textcnn", {"train": [seg_reviews], "vectors": [vectors]},
                       dict(steps=60, log_every=5, eval_every=5, save_every=5, filters=8, precision="fp32", seed=1,
                            batch_size=8, patience=0, mode="non-static"))


@pytest.fixture
def student_shape(tmp_path) -> Path:
    shape = tmp_path / "student.json"
    shape.write_text(json.dumps(STUDENT), encoding="utf-8")
    return shape


def test_distill_general_resumes_bitwise(tmp_path, tiny_bert, seg_reviews, student_shape):
    check_exact_resume(tmp_path, "distill", {"teacher": [tiny_bert], "corpus": [seg_reviews]},
                       dict(mode="general", student_shape=str(student_shape), steps=40, log_every=5, save_every=5, lr=3e-3,
                            precision="fp32", seed=1, eval_docs=16, max_seq_len=48, batch_size=8, speed_batch=2,
                            speed_seq_len=16))


def test_distill_task_resumes_bitwise(tmp_path, tiny_bert, seg_reviews, student_shape):
    teacher = tmp_path / "teacher"
    build("finetune", teacher, {"checkpoint": tiny_bert, "train": seg_reviews}, steps=4, batch_size=16, lr=3e-3,
          precision="fp32", patience=0, seed=1, max_seq_len=48)
    check_exact_resume(tmp_path, "distill", {"teacher": [teacher], "train": [seg_reviews]},
                       dict(mode="task", student_shape=str(student_shape), steps=30, log_every=5, save_every=5, lr=3e-3,
                            precision="fp32", seed=1, batch_size=8, patience=0, speed_batch=2, speed_seq_len=16,
                            baseline=False))
