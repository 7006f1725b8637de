"""Fault injection: `nlp-pipe STAGE` killed with SIGKILL at random points never leaves a half artifact
that looks finished, and a rerun produces exactly what an uninterrupted run does.

Each case runs `python -m nlp_pipe STAGE ...` as a subprocess on a generated corpus (fixture text
repeated), kills it, then checks: the artifact directory is absent or still the previous complete
artifact (verify == []); `runner.plan(...).fresh` and `nlp-pipe status` agree that it must run; the
rerun completes, verifies and its files hash like a clean run's. Kill points:

  startup        a random moment of the first seconds (imports, planning, lock)
  build          a random moment of the stage's own work (after its temporary directory appears),
                 drawn from a seeded RNG within the clean run's measured wall time
  publish-1      right after manifest.json is written into the temporary, before any rename
  publish-2      between publish's two renames (old artifact moved aside, new one not yet in place)
  force-build    `--force` over a complete artifact, killed mid-build: the old one must stay intact

Four cases run by default (DEFAULT: build, publish-1, publish-2, force-build over segment, vocab and phrases);
the rest of the matrix (4 stages x 5 points) and the repeated random kills are `slow`:
    .venv/bin/pytest -m slow tests/reliability/test_kill.py
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, build, run_cli
from nlp_pipe import runner
from nlp_pipe.core import artifacts, process
from nlp_pipe.core import manifest as manifests

SEED = 20240607
KILLED = -signal.SIGKILL

# stage -> (config, files compared with a clean run). Single-threaded everywhere, and word2vec under a
# fixed PYTHONHASHSEED, so that two clean runs give byte-identical files.
STAGES = {
    "segment": ({"workers": 1}, ("corpus.txt",)),
    "vocab": ({"min_freq": 2}, ("vocab.txt", "vocab.freq.tsv", "jieba_userdict.txt")),
    "phrases": ({"min_count": 3, "scoring": "npmi", "threshold": 0.3}, ("corpus.txt", "phrases.tsv")),
    "word2vec": ({"workers": 1, "epochs": 3, "vector_size": 32, "min_count": 3}, ("vectors.txt",)),
}
POINTS = ("startup", "build", "publish-1", "publish-2", "force-build")

# Runs the CLI with os.rename in artifacts.py replaced: the Nth rename SIGKILLs the process first.
HOOK = """
import os, signal
from nlp_pipe import cli
from nlp_pipe.core import artifacts

class RenameThenDie:
    calls = 0
    def __getattr__(self, name):
        return getattr(os, name)
    def rename(self, src, dst):
        RenameThenDie.calls += 1
        if RenameThenDie.calls == int(os.environ["KILL_AT_RENAME"]):
            os.kill(os.getpid(), signal.SIGKILL)
        os.rename(src, dst)

artifacts.os = RenameThenDie()
cli.main()
"""


def make_corpus(path: Path, megabytes: float) -> int:
    texts = [t for name in ("pos.txt", "neg.txt", "news.txt") for t in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if t]
    n = size = 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < megabytes * 1e6:
            line = f"{texts[n % len(texts)]}{texts[(n * 7) % len(texts)]}\n"
            fh.write(line)
            size += len(line.encode())
            n += 1
    return n


def workspace(root: Path, megabytes: float) -> dict:
    """A generated corpus, its segment artifact (built when first needed) and a cache of clean runs."""
    corpus = root / "corpus.txt"
    make_corpus(corpus, megabytes)
    return {"root": root, "corpus": corpus, "clean": {}}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    return workspace(tmp_path_factory.mktemp("kill"), 1.0)  # about 1 MB: 3-6 s of segmentation here


@pytest.fixture(scope="module")
def small_work(tmp_path_factory) -> dict:
    return workspace(tmp_path_factory.mktemp("kill_small"), 0.3)  # the default case: a second of segmentation


def stage_inputs(work: dict, stage: str) -> dict[str, list[Path]]:
    if stage == "segment":
        return {"corpus": [work["corpus"]]}
    seg = work["root"] / "seg_input"
    if not seg.exists():
        build("segment", seg, {"corpus": [work["corpus"]]}, workers=1)
    return {"corpus": [seg]}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def command(stage: str, inputs: dict, config: dict, out: Path, hook: bool = False, force: bool = False) -> list[str]:
    args = [sys.executable, *(["-c", HOOK] if hook else ["-m", "nlp_pipe"]), stage, "--out", str(out)]
    for name, paths in inputs.items():
        for path in paths:
            args += [f"--{name.replace('_', '-')}", str(path)]
    for key, value in config.items():
        flag = key.replace("_", "-")
        args += [f"--{flag}" if value is True else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return args + (["--force"] if force else [])


def run_stage(stage: str, inputs: dict, config: dict, out: Path) -> None:
    """Run the stage to the end through the CLI: in this process (the same `main` users run, without
    the interpreter start-up) except word2vec, whose vectors depend on PYTHONHASHSEED."""
    args = command(stage, inputs, config, out)
    if stage == "word2vec":
        done = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        done = run_cli(*args[3:])
        assert done.code == 0, done.err[-3000:]


def digests(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in names}


def clean_run(work: dict, stage: str) -> tuple[Path, dict]:
    """An uninterrupted run of the stage (cached per module): its directory and manifest."""
    if stage not in work["clean"]:
        config, _ = STAGES[stage]
        out = work["root"] / f"clean_{stage}"
        run_stage(stage, stage_inputs(work, stage), config, out)
        assert manifests.verify(out) == []
        work["clean"][stage] = (out, manifests.read_manifest(out))
    return work["clean"][stage]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and ".tmp-" in p.name)


def started(out: Path) -> bool:
    """The stage is building: its temporary directory exists (made under the lock)."""
    return bool(list(out.parent.glob(f".{out.name}.tmp-*")))


def kill_at(proc: subprocess.Popen, out: Path, point: str, rng: random.Random, wall: float) -> None:
    """SIGKILL `proc` (its whole process group) at the kill point; the hooked points kill themselves.
    `wall` is the clean run's build time (its manifest's wall_time_s)."""
    if point == "startup":  # a random moment before the build starts: imports, planning, taking the lock
        deadline = time.monotonic() + rng.uniform(0.0, 3.0)
        while time.monotonic() < deadline and not started(out) and proc.poll() is None:
            time.sleep(0.005)
    elif point in ("build", "force-build"):
        deadline = time.monotonic() + 120
        while not started(out):
            assert proc.poll() is None, "the run ended before its temporary directory appeared"
            assert time.monotonic() < deadline, "the stage never started"
            time.sleep(0.005)
        deadline = time.monotonic() + rng.uniform(0.05, 0.8) * wall if wall > 0 else 0.0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    if point.startswith("publish"):
        proc.wait(timeout=300)
    else:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and any workers it started (its own session), unless it already exited."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished before the kill
        pass
    proc.wait()


def pipeline_file(path: Path, stage: str, inputs: dict, config: dict, out: Path) -> Path:
    """A one-stage pipeline writing the same artifact, so `nlp-pipe status` can be asked about it."""
    doc = {"name": "kill", "workdir": str(path.parent / "runs"),
           "stages": [{"stage": stage, "out": str(out), "config": config,
                       "inputs": {k: [str(p) for p in v] for k, v in inputs.items()}}]}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def check_kill(work: dict, tmp_path: Path, stage: str, point: str) -> None:
    config, compared = STAGES[stage]
    inputs = stage_inputs(work, stage)
    clean_dir, clean = clean_run(work, stage)
    rng = random.Random(f"{SEED}-{stage}-{point}")
    parent = tmp_path / "runs"
    parent.mkdir()
    out = parent / stage
    previous = point in ("publish-2", "force-build")  # these start from a complete artifact
    for attempt in range(3):  # a run that beat its kill (a busier machine when timing the clean run) tries again sooner;
        # the last try kills as soon as the temporary appears, so no machine load lets the run finish first
        if out.exists():
            shutil.rmtree(out)
        if previous:
            shutil.copytree(clean_dir, out)
        with open(tmp_path / "stderr.txt", "w", encoding="utf-8") as log:  # a file, not a pipe nobody drains
            proc = subprocess.Popen(command(stage, inputs, config, out, hook=point.startswith("publish"), force=previous),
                                    env={**env(), "KILL_AT_RENAME": point[-1]}, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=log)
            try:
                kill_at(proc, out, point, rng, clean["wall_time_s"] / 3**attempt if attempt < 2 else 0.0)
            finally:
                kill_group(proc)
        stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            break
    assert proc.returncode == KILLED, f"not killed (exit {proc.returncode}): {stderr[-2000:]}"

    # 1. nothing half-written is taken as finished
    plan = runner.plan(stage, config, inputs, out)
    manifest = manifests.read_manifest(out)
    if manifest is None:
        assert not plan.fresh and plan.reason in ("no artifact yet", f"no finished artifact ({out.name} has no manifest.json)")
        status = run_cli("status", pipeline_file(tmp_path / "pipe.yaml", stage, inputs, config, out))
        assert status.code == 0 and "will run" in status.out and plan.reason in status.out, status
    else:  # only ever the complete previous artifact, untouched
        assert previous and manifest == clean and manifests.verify(out) == [] and plan.fresh
    for entry in parent.iterdir():  # whatever else is there is hidden, never a finished-looking artifact
        assert entry.name.startswith(".") or entry == out, entry
    if point == "publish-1" and not previous:
        assert leftovers(parent), "the killed run's temporary (with its manifest) should still be there"

    # 2. the rerun completes and equals a clean run
    run_stage(stage, inputs, config, out)
    assert manifests.verify(out) == []
    assert manifests.read_manifest(out)["fingerprint"] == clean["fingerprint"]
    assert manifests.read_manifest(out)["counts"] == clean["counts"]
    assert digests(out, compared) == digests(clean_dir, compared)
    if manifest is None:  # the rerun built: it removed the killed run's temporaries under the lock
        assert leftovers(parent) == []
    assert runner.plan(stage, config, inputs, out).fresh


# The default suite's representative set (make test): a kill mid-build, a kill at each of publish's two steps and
# a --force rebuild killed over a complete artifact, across three stages, on the small corpus: about 25 s.
DEFAULT = [("segment", "build"), ("vocab", "publish-1"), ("phrases", "publish-2"), ("segment", "force-build")]


@pytest.mark.parametrize("stage, point", DEFAULT, ids=[f"{s}-{p}" for s, p in DEFAULT])
def test_killed_stage_then_rerun_equals_a_clean_run_default(small_work, tmp_path, stage, point):
    check_kill(small_work, tmp_path, stage, point)


MATRIX = [(stage, point) for stage in STAGES for point in POINTS if (stage, point) not in DEFAULT]


@pytest.mark.slow
@pytest.mark.parametrize("stage, point", MATRIX, ids=[f"{s}-{p}" for s, p in MATRIX])
def test_killed_stage_then_rerun_equals_a_clean_run(work, tmp_path, stage, point):
    check_kill(work, tmp_path, stage, point)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_repeated_kills_at_random_points(work, tmp_path, stage):
    """Five kills in a row at seeded random moments of the same run directory, then a clean finish."""
    config, compared = STAGES[stage]
    inputs = stage_inputs(work, stage)
    clean_dir, clean = clean_run(work, stage)
    rng = random.Random(f"{SEED}-{stage}-repeated")
    out = tmp_path / "runs" / stage
    out.parent.mkdir()
    for _ in range(5):
        proc = subprocess.Popen(command(stage, inputs, config, out), env=env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0 + clean["wall_time_s"]))  # start-up is 0.5-3 s here
        kill_group(proc)
        manifest = manifests.read_manifest(out)  # a run may have finished before its kill: then it is complete
        assert manifest is None or (manifest["fingerprint"] == clean["fingerprint"] and manifests.verify(out) == [])
        assert runner.plan(stage, config, inputs, out).fresh == (manifest is not None)
    run_stage(stage, inputs, config, out)
    assert manifests.verify(out) == [] and digests(out, compared) == digests(clean_dir, compared)
    assert leftovers(out.parent) == []  # removed by whichever run built the artifact


# A writer that holds an artifact's lock, starts a process pool (fork) whose one worker sleeps, prints the worker's
# pid and dies at once (as a second Ctrl-C ends it: os._exit, no pool shutdown). argv: out, "managed" or "plain".
_POOL_WRITER = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from nlp_pipe.core import artifacts, process
def noop():
    pass
with artifacts.locked(Path(sys.argv[1])):
    options = process.pool_initializer(noop) if sys.argv[2] == "managed" else {}
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), **options)
    pool.submit(time.sleep, 60)
    time.sleep(0.5)
    print(*pool._processes, flush=True)
    os._exit(143)
"""


def _orphans(tmp_path: Path, how: str) -> list[int]:
    printed = tmp_path / f"{how}.txt"
    with open(printed, "w") as out:  # not a pipe: a surviving worker would keep it open, and run() wait for it
        done = subprocess.run([sys.executable, "-c", _POOL_WRITER, str(tmp_path / "bert"), how], stdout=out,
                              stderr=subprocess.STDOUT, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(runner.__file__).parents[1])})
    assert done.returncode == 143, printed.read_text()
    return [int(pid) for pid in printed.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc/locks are Linux's")
def test_pool_workers_die_with_their_writer_and_never_hold_its_lock(tmp_path):
    """Two SIGTERMs while pretrain built its cache left the pool's workers running (reparented to PID 1, ~500 MB
    each, minutes) holding the artifact's and the cache's locks: the rerun was refused, naming the dead pid.
    Workers of `process.pool_initializer` die with the writer; any forked child closes its copy of a held lock."""
    (worker,) = _orphans(tmp_path, "managed")
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the pool worker outlived its parent"
    (stray,) = _orphans(tmp_path, "plain")  # a worker outliving its parent anyway (no pool_initializer)
    try:
        assert _alive(stray)
        with open(tmp_path / ".bert.lock", "a+") as fh:  # nobody holds it: the worker closed its copy at fork
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.kill(stray, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/locks is Linux's")
def test_a_lock_whose_taker_is_dead_is_taken_over(tmp_path):
    """A lock still held only by what its dead taker forked (a child that inherited the descriptor) is no writer."""
    script = ("import fcntl, os, sys, time\nfh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
              "fh.write(f'pid {os.getpid()}'); fh.flush()\nif os.fork() == 0:\n    time.sleep(60); os._exit(0)\n"
              "print(os.getpid(), flush=True)")
    printed = tmp_path / "taker.txt"
    with open(printed, "w") as out:
        subprocess.run([sys.executable, "-c", script, str(tmp_path / ".bert.lock")], stdout=out, timeout=30, check=True)
    taker = int(printed.read_text())
    child = [int(line.split()[4]) for line in Path("/proc/locks").read_text().splitlines()
             if f":{(tmp_path / '.bert.lock').stat().st_ino} " in line + " "]
    try:
        assert child == [taker]  # /proc/locks names the dead taker
        with artifacts.locked(tmp_path / "bert"):
            assert (tmp_path / ".bert.lock").read_text(encoding="utf-8") == f"pid {os.getpid()}"
    finally:
        for pid in subprocess.run(["pgrep", "-P", "1", "-f", "fcntl.flock"], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)


def _fails_in_child(item: int) -> int:
    if item == 1:
        raise ValueError("run 1 is broken")
    if item == 2:
        os._exit(3)  # killed (out of memory, say): no result ever comes
    return item * 10


@pytest.mark.skipif(not process.can_fork(), reason="process.forked forks")
def test_forked_children_report_their_failures():
    """What a forked child raises is raised in the parent (after the parent's own item); a child that dies without a
    result is a one-line error naming its exit code, not a wait for ever."""
    assert process.forked(_fails_in_child, [0, 3, 4]) == [0, 30, 40]
    with pytest.raises(ValueError, match="run 1 is broken"):
        process.forked(_fails_in_child, [0, 1])
    with pytest.raises(RuntimeError, match="exit code 3"):
        process.forked(_fails_in_child, [0, 2])
