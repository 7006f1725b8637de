"""Two `nlp-pipe run` processes on one pipeline at once: a lock per artifact.

The second writer of an artifact fails at once with one line naming the process that holds it (exit
2); it never waits silently and never writes. Each artifact is built by exactly one process (counted
from the runner's "STAGE finished in" log lines) and verifies afterwards.

Default: a deterministic case (the first process is held inside publish, lock taken, until the test
releases it). Slow: both processes started together, repeatedly, at seeded random offsets.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from nlp_pipe.core import manifest as manifests

STEPS = ("segment", "vocab")

# `nlp-pipe` whose first publish waits (lock held, artifact built) until the file $RELEASE appears.
HOLD = """
import os, time
from pathlib import Path
from nlp_pipe import cli
from nlp_pipe.core import artifacts

real_publish, held = artifacts.publish, []

def publish(tmp, out, manifest):
    if not held:
        held.append(out)
        Path(os.environ["HELD"]).write_text(str(out))
        deadline = time.time() + 120
        while not Path(os.environ["RELEASE"]).exists() and time.time() < deadline:
            time.sleep(0.02)
    real_publish(tmp, out, manifest)

artifacts.publish = publish
cli.main()
"""


def write_pipeline(tmp_path: Path, corpus: Path) -> tuple[Path, Path]:
    workdir = tmp_path / "runs"
    path = tmp_path / "pipe.yaml"
    path.write_text(f"workdir: {workdir}\nstages:\n"
                    f"  - stage: segment\n    inputs: {{corpus: {corpus}}}\n    config: {{workers: 1}}\n"
                    f"  - stage: vocab\n    inputs: {{corpus: \"${{segment}}\"}}\n    config: {{min_freq: 1}}\n",
                    encoding="utf-8")
    return path, workdir


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **extra}


def built(stderr: str) -> set[str]:
    """Stages this process built (the runner logs '<stage> finished in N s' after a build)."""
    return {step for step in STEPS if f"nlp_pipe.runner: {step} finished in" in stderr}


def assert_all_fresh_and_intact(pipe: Path, workdir: Path) -> None:
    for step in STEPS:
        assert manifests.verify(workdir / step) == []
    assert sorted(p.name for p in workdir.iterdir() if ".tmp-" in p.name) == []
    status = run_cli("status", pipe)
    assert status.code == 0 and "will run" not in status.out, status.out


def test_second_run_fails_with_the_holder_named_while_the_first_writes(tmp_path):
    pipe, workdir = write_pipeline(tmp_path, FIXTURES / "reviews.tsv")
    held, release = tmp_path / "held", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", HOLD, "run", str(pipe)], env=env(HELD=str(held), RELEASE=str(release)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert Path(held.read_text()) == workdir / "segment"
        status = run_cli("status", pipe)  # reading needs no lock: it answers while the first run writes
        assert status.code == 0 and "no artifact yet" in status.out

        second = subprocess.run([sys.executable, "-m", "nlp_pipe", "run", str(pipe)], env=env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error")]
        assert errors == [f"error: {workdir / 'segment'} is being written by pid {first.pid}; "
                          "wait for it to finish (or write to another --out)"], second.stderr
        assert "Traceback" not in second.stderr and built(second.stderr) == set()
        assert not (workdir / "segment").exists()  # the second one wrote nothing
    finally:
        release.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert built(err) == set(STEPS)
    assert_all_fresh_and_intact(pipe, workdir)


def race(tmp_path: Path, corpus: Path, offset: float) -> None:
    """Start two runs `offset` seconds apart; whatever the interleaving, each artifact is built once."""
    pipe, workdir = write_pipeline(tmp_path, corpus)
    command = [sys.executable, "-m", "nlp_pipe", "run", str(pipe)]
    a = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(offset)
    b = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for proc, other in ((a, b), (b, a)):
        _, err = proc.communicate(timeout=300)
        results[proc.pid] = (proc.returncode, err, other.pid)
    codes = sorted(code for code, _, _ in results.values())
    assert codes in ([0, 0], [0, 2]), results
    for code, err, other in results.values():
        assert "Traceback" not in err, err
        if code == 2:
            errors = [line for line in err.splitlines() if line.startswith("error")]
            assert len(errors) == 1 and f"is being written by pid {other};" in errors[0], err
    builders = [built(err) for _, err, _ in results.values()]
    for step in STEPS:
        assert sum(step in b for b in builders) == 1, (step, results)
    assert_all_fresh_and_intact(pipe, workdir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 0.3 MB: a segment build of a second or two, so the two runs overlap."""
    path = tmp_path_factory.mktemp("race") / "corpus.tsv"
    rows = (FIXTURES / "reviews.tsv").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([rows[0]] + rows[1:] * 40) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(6))
def test_two_runs_started_together_build_each_artifact_once(tmp_path, corpus, attempt):
    race(tmp_path, corpus, random.Random(f"race-{attempt}").uniform(0.0, 2.5))
