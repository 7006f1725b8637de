"""Every change the package makes to process-wide state, in one place, made once at the CLI entry.

    process.configure()          csv's field limit, jieba's logger (library state any stage may rely on)
    with process.signals_handled():   SIGINT / SIGTERM -> `Interrupted` (the CLI's one-line exit 130 / 143)
    process.check_interrupted()  at each training step and before publishing: an interrupt whose exception was lost
    with process.environment(NAME=value):   variables for the block and the processes it starts, restored after
    ProcessPoolExecutor(n, **process.pool_initializer(init, *args))   workers that die with their parent
    process.forked(fn, items)    fn(item) for each item, all but the first in children forked for them
    process.serving_threads(n)   `nlp-pipe serve`: n threads a model call (torch's are process-wide)

The terminal's logging and the libraries' verbosity variables are core.console's (also called once, by the
CLI group); the Trainer sets torch's intra-op threads for its block only and restores them on exit.
Tests call `configure()` as the CLI does.
"""

from __future__ import annotations

import atexit
import csv
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
CSV_FIELD_LIMIT = 1 << 30  # real corpora have single fields far above csv's 128 KiB default
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal that arrived, if any: what a launched rank then dies of is that signal
_handling: list[bool] = []  # non-empty while signals_handled() is active (the CLI's run)
_published: list[str] = []  # artifacts this process's CLI run wrote (for `ending`'s line)
_ending: list[bool] = []  # non-empty once `ending` ran


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. Not an Exception, so no `except Exception` swallows it while the runner's
    `finally` blocks still clean up (staging directory, lock, a launch's word to the other ranks); not a
    KeyboardInterrupt, which click turns into Abort. The Trainer adds the step it was at and its last
    checkpoint; the CLI prints `line()` and exits with `exit_code`."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.step: int | None = None  # the optimizer step training had reached (None: not training)
        self.checkpoint: int | None = None  # the step of the newest complete checkpoint (0: none yet)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        if self.step is None and self.checkpoint:  # before or after training: setting up, evaluating, reporting
            return (f"interrupted ({name}); nothing was published; rerun the same command to resume "
                    f"from the checkpoint at step {self.checkpoint}")
        if self.step is None:
            return f"interrupted ({name}); nothing was published; rerun the same command to start again"
        if not self.checkpoint:
            return (f"interrupted ({name}) at step {self.step}; no checkpoint was written yet; "
                    "rerun the same command to start again")
        return (f"interrupted ({name}) at step {self.step}; the last checkpoint is step {self.checkpoint}; "
                "rerun the same command to resume")


def configure() -> None:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    # jieba prints its dictionary loading through a stderr handler of its own at DEBUG, a level it sets at
    # import (so it must be imported first: 0.06 s); WARNING keeps that chatter off the terminal
    import jieba

    jieba.setLogLevel(logging.WARNING)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for the block (processes started in it inherit them); what was there before,
    set or not, is back afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pool_initializer(init: Callable[..., None], *args: Any) -> dict[str, Any]:
    """`initializer` and `initargs` for a ProcessPoolExecutor whose workers run `init(*args)`: each worker also dies
    with the process that started it. A second Ctrl-C ends that process at once (`signals_handled`), without the
    pool's shutdown: its workers ran on, reparented to PID 1, ~500 MB each for minutes. Linux only (prctl's
    PR_SET_PDEATHSIG); the signal comes when the forking *thread* ends, so only pools started from the main thread
    ask for it."""
    main = threading.current_thread() is threading.main_thread()
    return {"initializer": _in_worker, "initargs": (main, init, *args)}


def _in_worker(main: bool, init: Callable[..., None], *args: Any) -> None:
    if main and sys.platform.startswith("linux"):  # the parent: this process's (fork, spawn) or the forkserver
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the worker merely outlives a killed parent
            pass
    init(*args)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def can_fork() -> bool:
    """Linux only: macOS offers fork, but its system libraries may crash in a forked child (Python defaults to spawn
    there)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def forked(fn: Callable[[T], R], items: Sequence[T], while_waiting: Callable[[], None] = lambda: None) -> list[R]:
    """[fn(item) for item in items], items[0] in this process and each other in a child forked for it: a child
    inherits everything loaded here (a dictionary, a compiled engine) and pickles only its result back. A child's
    exception is raised here (after this process's own item). Children ignore SIGINT (a Ctrl-C reaches the whole
    process group: this process's `Interrupted` is the one to report), die with this process, and are killed when
    this process stops early: nothing runs on after it. `while_waiting` is called every 0.2 s while this process
    waits for them (a progress bar). Fork only (`can_fork`); a ProcessPoolExecutor suits many small tasks."""
    context = multiprocessing.get_context("fork")
    main = threading.current_thread() is threading.main_thread()
    children: list[tuple[Any, Any]] = []  # (process, the end of its pipe that its result comes from)
    try:
        for item in items[1:]:
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(fn, item, send, main), daemon=True)
            child.start()
            send.close()
            children.append((child, receive))
        results = [fn(items[0])]
        for child, receive in children:
            while not receive.poll(0.2):  # True too once the child's end is closed
                while_waiting()
            try:
                ok, value = receive.recv()
            except EOFError:  # it ended without a result: killed (out of memory, say)
                child.join()
                raise RuntimeError(f"a helper process ended without its result (exit code {child.exitcode})") from None
            if not ok:
                raise value
            results.append(value)
        return results
    finally:
        for child, receive in children:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()


def _child(fn: Callable[[Any], Any], item: Any, send: Any, main: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _in_worker(main, lambda: None)  # dies with its parent
    try:
        result: tuple[bool, Any] = (True, fn(item))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        result = (False, exc)
    try:
        send.send(result)
    except Exception as exc:  # an exception that does not pickle: its words still do
        send.send((False, RuntimeError(f"{type(result[1]).__name__}: {result[1]}; and sending it failed: {exc}")))
    send.close()


def serving_threads(threads: int) -> None:
    """For the life of a server process: a PyTorch model's calls on `threads` threads (torch's count is
    process-wide; an export's onnxruntime session takes its own), and tokenizers' thread pool off unless the user
    set TOKENIZERS_PARALLELISM: each model worker tokenizes its batch on its own core, and the pool only competed
    with the other workers (0.25 vs 0.13 CPU-ms a text in 4-text batches)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch" in sys.modules:  # a PyTorch artifact is loaded; serving an export never imports torch
        import torch

        torch.set_num_threads(threads)


@contextmanager
def signals_handled() -> Iterator[None]:
    """While the CLI runs, SIGINT and SIGTERM raise `Interrupted` in the main thread; the handlers before
    are restored afterwards (tests run the CLI inside pytest). A second signal while the first is being
    cleaned up ends the process at once, with the same code and no traceback (the hidden staging directory
    it may leave is removed by the next run, under the lock)."""
    def first(signum: int, frame: FrameType | None) -> None:
        _received.append(signum)
        for s in SIGNALS:
            signal.signal(s, again)
        raise Interrupted(signum)

    def again(signum: int, frame: FrameType | None) -> None:
        sys.stderr.flush()
        os._exit(128 + signum)

    unraisable = sys.unraisablehook

    def lost(info: Any) -> None:
        # the handler's exception, raised while Python ran a weakref callback or __del__, is "ignored" by Python
        # (a traceback on stderr, and the run goes on): check_interrupted raises it again, so it needs no traceback
        if not isinstance(info.exc_value, Interrupted):
            unraisable(info)

    before = {s: signal.getsignal(s) for s in SIGNALS}
    _received.clear()
    sys.unraisablehook = lost
    for s in SIGNALS:
        signal.signal(s, first)
    _handling.append(True)
    try:
        yield
    finally:
        _handling.pop()
        for s, handler in before.items():
            signal.signal(s, handler)
        sys.unraisablehook = unraisable


def published(what: str) -> None:
    """`what` is written and complete: an interrupt while the process ends (`ending`) names it."""
    _published.append(what)


def ending() -> None:
    """For the rest of the CLI's process: SIGINT and SIGTERM end it at once, with one line naming what was published
    and the shell's code. Python's own handler is back after `signals_handled`, and the ~1.5 s of atexit callbacks
    and library teardown after `expand: wrote ...` turned a Ctrl-C into exit 130 with a traceback or no word at all,
    though the artifact was complete."""
    def late(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        done = f" after {', '.join(_published)} was published (it is complete)" if _published else ""
        sys.stdout.flush()
        sys.stderr.write(f"interrupted ({name}){done}; the process ended before its clean-up\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    for s in SIGNALS:
        signal.signal(s, late)
    _ending.append(True)


def _teardown() -> None:
    """The last atexit callback of an `ending` process: after it Python puts the default handlers back (not over an
    ignored signal) and tears down its modules, where a signal killed the process silently, exit 130 after a
    complete run. Ignored there, the process ends with its own code; its last line already said what it wrote."""
    if _ending:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


atexit.register(_teardown)  # at import, before the libraries': atexit runs its callbacks last-registered first


def check_interrupted() -> None:
    """Raise the interrupt that arrived if its exception was lost: the signal handler raises wherever Python
    is, and inside a weakref callback or __del__ Python drops the exception. 2 of 15 Ctrl-Cs during textcnn's
    set-up were lost so, and the run trained to the end, published and exited 0. Called where stopping is
    safe: each training step and before the runner publishes (not in cleanup, which runs after the exception
    did propagate)."""
    if _handling and _received:  # outside the CLI's run (a library call after it) no signal is ours to raise
        raise Interrupted(_received[0])


def pending() -> Interrupted | None:
    """The interrupt that arrived during the CLI's run, if any (outside its run no signal is ours)."""
    return received() if _handling else None


def received() -> Interrupted | None:
    """The interrupt this process got, if one arrived: a rank whose peer was interrupted may fail in a
    collective (gloo: connection closed) before its own signal is handled; that failure is the interrupt."""
    return Interrupted(_received[0]) if _received else None
