"""Ctrl-C (SIGINT) and SIGTERM on a real `nlp-pipe` process: one line on stderr naming the step and the last
checkpoint, exit 130 / 143, no traceback, no artifact and no staging directory or lock left behind; the
rerun of the same command resumes from that checkpoint. 15-40 s per training case here (two process starts
and 150 tiny steps); SIGTERM's case is `slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def pretrain_command(tmp_path: Path, tokenizer: Path, out: Path, steps: int) -> list[str]:
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY), encoding="utf-8")
    return [sys.executable, "-m", "nlp_pipe", "pretrain", "--corpus", str(FIXTURES / "news.txt"), "--tokenizer",
            str(tokenizer), "--out", str(out), "--model-config", str(shape), "--max-seq-len", "64", "--batch-size", "8",
            "--steps", str(steps), "--save-every", "5", "--eval-every", "0", "--eval-docs", "2", "--num-proc", "1",
            "--precision", "fp32", "--seed", "1"]


def wait_for(path_glob: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not list(path_glob.parent.glob(path_glob.name)):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the time allowed"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_says_one_line_and_the_rerun_resumes(tmp_path, tiny_bert, signum):
    out = tmp_path / "bert"
    command = pretrain_command(tmp_path, tiny_bert, out, steps=150)  # ~5 s of training: signalled at step 5 or so
    with open(tmp_path / "stderr.txt", "w", encoding="utf-8") as err:
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(tmp_path / "bert.checkpoints" / "step_*", proc)
            proc.send_signal(signum)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    lines = [line for line in (tmp_path / "stderr.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert proc.returncode == 128 + signum, lines
    assert not any("Traceback" in line for line in lines), lines
    name = signal.Signals(signum).name
    last = lines[-1]
    assert last.startswith(f"interrupted ({name}) at step ") and last.endswith("rerun the same command to resume"), lines
    assert [line for line in lines if "interrupted" in line] == [last]
    checkpoint = int(last.split("the last checkpoint is step ")[1].split(";")[0])
    assert checkpoint >= 5 and (tmp_path / "bert.checkpoints" / f"step_{checkpoint:06d}").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.checkpoints", "nlp_pipe_cache", "stderr.txt", "tiny.json"]

    rerun = subprocess.run(command, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["resumed_from_step"] == checkpoint and metrics["steps"] == 150


def test_interrupt_outside_training_says_nothing_was_published(tmp_path):
    """A corpus stage interrupted mid-build (a `segment` on a large corpus): one line, exit 130, nothing left."""
    corpus = tmp_path / "corpus.txt"
    text = (FIXTURES / "news.txt").read_text(encoding="utf-8")
    corpus.write_text(text * 400, encoding="utf-8")
    out = tmp_path / "runs" / "seg"
    command = [sys.executable, "-m", "nlp_pipe", "segment", "--corpus", str(corpus), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(out.parent / ".seg.tmp-*", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert lines[-1] == "interrupted (SIGINT); nothing was published; rerun the same command to start again", lines
    assert list(out.parent.iterdir()) == []  # no artifact, no staging directory, no lock file


def test_interrupt_of_processes_cutting_their_own_runs_leaves_none_running(tmp_path):
    """Ctrl-C at a terminal reaches the whole process group while `segment` cuts in two processes that each read
    their own run of lines (process.forked): the helper ignores it, the main process says its one line and kills the
    helper, which would cut on to the end of its run (and the main process wait for it)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((FIXTURES / "news.txt").read_text(encoding="utf-8") * 24_000, encoding="utf-8")  # 100 MB: 50 a run
    out = tmp_path / "runs" / "seg"
    command = [sys.executable, "-m", "nlp_pipe", "segment", "--corpus", str(corpus), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(".seg.tmp-*/corpus.txt.1")):  # the helper's part of corpus.txt: it is cutting
        assert proc.poll() is None and time.monotonic() < deadline, "the helper never started"
        time.sleep(0.01)
    (helper,) = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    os.killpg(proc.pid, signal.SIGINT)
    signalled = time.monotonic()
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert time.monotonic() - signalled < 2.5  # cutting the helper's 50 MB to the end takes 4 s or more
    assert lines[-1] == "interrupted (SIGINT); nothing was published; rerun the same command to start again", lines
    assert not Path(f"/proc/{helper}").exists()  # reaped by the main process before it ended
    assert list(out.parent.iterdir()) == []


# The signal arrives while Python runs a __del__ (as a weakref callback of the garbage collector would), where
# Python drops the handler's exception ("Exception ignored in ...") and the run goes on.
LOST_SIGNAL = """
import os, signal, sys
from nlp_pipe import cli
from nlp_pipe.stages import segment

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # the handler runs at a bytecode boundary here, inside __del__

built = segment.run

def run_losing_the_signal(*args, **kwargs):
    result = built(*args, **kwargs)
    Finalised()  # dropped at once: __del__ runs, the Interrupted it raises is lost
    print("the stage went on after the signal", file=sys.stderr)
    return result

segment.run = run_losing_the_signal
sys.argv[0] = "nlp-pipe"
cli.main()
"""


def test_interrupt_lost_in_a_finaliser_still_stops_the_run(tmp_path):
    """An interrupt whose exception Python dropped (raised inside a __del__ / weakref callback: 2 of 15 Ctrl-Cs
    during textcnn's set-up in a user's run) still ends the run before anything is published, with the one line
    and exit 130, and without Python's "Exception ignored" traceback."""
    out = tmp_path / "runs" / "seg"
    done = subprocess.run([sys.executable, "-c", LOST_SIGNAL, "segment", "--corpus", str(FIXTURES / "news.txt"),
                           "--out", str(out), "--workers", "1"], env=ENV, capture_output=True, text=True, timeout=120)
    assert "the stage went on after the signal" in done.stderr, done.stderr  # the exception really was lost
    assert done.returncode == 130 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == "interrupted (SIGINT); nothing was published; rerun the same command to start again", lines
    assert list(out.parent.iterdir()) == []


def test_lost_interrupt_stops_training_at_the_next_step(tmp_path, seg_reviews):
    """The signal's exception lost before training (as in the user's run above, during textcnn's set-up): training
    stops at its first step instead of running to the end, and says so."""
    from conftest import build
    from nlp_pipe.core import process

    with process.signals_handled():
        process._received.append(signal.SIGINT)  # what the handler recorded before its exception was dropped
        with pytest.raises(process.Interrupted) as caught:
            build("textcnn", tmp_path / "cnn", {"train": seg_reviews}, input="chars", steps=50, filters=4, baseline=False)
    assert caught.value.step == 0 and caught.value.checkpoint == 0
    assert not (tmp_path / "cnn").exists()


def test_interrupt_after_training_names_the_checkpoint_a_rerun_resumes_from(tmp_path, seg_reviews, monkeypatch):
    """Ctrl-C while a trained model is evaluated and reported (finetune's baseline fit, distill's comparison): the
    line said "rerun the same command to start again" although the rerun resumed from the last checkpoint. Training
    saves its final step too, so the rerun resumes there (it retrained the 2 steps since step 10)."""
    from conftest import build
    from nlp_pipe.core import process
    from nlp_pipe.stages import textcnn

    def interrupted(*args, **kwargs):
        raise process.Interrupted(signal.SIGINT)

    monkeypatch.setattr(textcnn, "finish", interrupted)
    with pytest.raises(process.Interrupted) as caught:
        build("textcnn", tmp_path / "cnn", {"train": seg_reviews}, input="chars", steps=12, save_every=5, filters=4, patience=0,
              baseline=False)
    assert caught.value.step is None and caught.value.checkpoint == 12
    assert caught.value.line() == ("interrupted (SIGINT); nothing was published; rerun the same command "
                                   "to resume from the checkpoint at step 12")
    monkeypatch.undo()
    manifest = build("textcnn", tmp_path / "cnn", {"train": seg_reviews}, input="chars", steps=12, save_every=5, filters=4, patience=0,
                     baseline=False)
    assert manifest["metrics"]["resumed_from_step"] == 12


def test_a_rerun_from_no_checkpoint_writes_the_step_0_evaluation_once(tmp_path):
    """A run killed before its first checkpoint left metrics.jsonl with its step-0 evaluation; the rerun starts
    afresh and wrote it again (44 lines against 43 in a user's finetune)."""
    from nlp_pipe.training.records import MetricsLog

    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path, True, keep_until=0)
    first.write({"split": "eval", "step": 0, "loss": 1.0})
    first.write({"split": "train", "step": 5, "loss": 0.9})
    again = MetricsLog(path, True, keep_until=0)  # the rerun: nothing to resume from
    again.write({"split": "eval", "step": 0, "loss": 1.0})
    assert [r["step"] for r in again.records()] == [0]
    resumed = MetricsLog(path, True, keep_until=5)  # from a checkpoint at step 5: what came before it stays
    assert [r["step"] for r in resumed.records()] == [0]


def test_an_interrupt_while_the_process_ends_says_the_artifact_was_published(tmp_path):
    """A Ctrl-C in the ~1.5 s after `expand: wrote ...` (atexit callbacks, library teardown) exited 130 with a
    traceback or no word, though the artifact was complete. A slow atexit callback of the test's stands for them."""
    out = tmp_path / "seg"
    code = ("import atexit, sys, time\nfrom nlp_pipe.cli import main\n"
            "atexit.register(lambda: (print('EXITING', file=sys.stderr, flush=True), time.sleep(20)))\n"
            f"sys.argv = ['nlp-pipe', 'segment', '--corpus', {str(FIXTURES / 'reviews.tsv')!r}, '--workers', '1', '--out', {str(out)!r}]\n"
            "main()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.strip() == "EXITING":
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == [f"interrupted (SIGINT) after {out} was published (it is complete); the process "
                                           "ended before its clean-up"]
    assert f"segment: wrote {out}" in stdout and (out / "manifest.json").is_file()
