"""jieba word segmentation shared by every stage that needs words (segment, predict, whole-word masking).

A `Segmenter` cuts with the engine its picklable `SegmenterSpec` names (`text.engines`: jieba,
jieba's algorithm compiled, or rjieba made to give jieba's exact output; `auto` picks the fastest
proven one installed). A
user dictionary goes into the segmenter's own `jieba.Tokenizer`, never the global default, so
loading one never changes jieba behind the user's back; a fast engine then mirrors that
tokenizer's words and frequencies.

`cut_parallel` fans chunks of texts out to helper processes (forked from this one once the
dictionary is loaded, or each building their own where fork is not the start method) and cuts a
chunk itself whenever they are all busy; it keeps a bounded number of chunks in flight (memory
stays flat) and yields results in input order. `LoadProbe` tells how many cores other processes
leave free, so a stage starts no more processes than there are cores to run them.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import jieba

from ..core import process
from ..core.errors import UserError
from ..core.files import SEGMENTER_JSON
from . import engines

log = logging.getLogger(__name__)

FreqPolicy = Literal["file", "multiply", "force"]


@dataclass(frozen=True)
class SegmenterSpec:
    """Everything that decides how text is cut; recorded in manifests and sent to workers."""

    hmm: bool = True
    mode: Literal["accurate", "search"] = "accurate"
    userdict: tuple[tuple[str, int | None], ...] = ()  # (word, frequency or None)
    policy: FreqPolicy = "force"
    multiplier: float = 1000.0
    dictionary: str | None = None  # main dictionary file; None = jieba's bundled dict.txt
    engine: str = "auto"  # one of engines.ENGINE_CHOICES; a saved spec names the engine that cut
    engine_version: str | None = None  # that engine's package version, recorded for the reader

    @property
    def force_split(self) -> frozenset[str]:
        """Words jieba's HMM must not keep whole under this spec: those a user dictionary gives frequency 0
        (`add_word(word, 0)` puts them in jieba's process-wide `finalseg.Force_Split_Words`; here they stay
        this spec's, so a segmenter never changes how another one, or jieba itself, cuts)."""
        if self.policy == "multiply":  # every word gets a frequency of at least 1
            return frozenset()
        return frozenset(word for word, freq in self.userdict if freq == 0)

    def with_engine(self) -> SegmenterSpec:
        """This spec with `auto` (or a missing engine) resolved to the engine that will really cut, and its version."""
        name = engines.resolve(self.engine)
        return replace(self, engine=name, engine_version=engines.package_version(name))

    def save(self, directory: Path) -> None:
        """segmenter.json: the exact cut (user-dictionary words included) travels with the data, so a
        classifier trained on it cuts new text at predict time the same way."""
        (directory / SEGMENTER_JSON).write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def load(directory: Path) -> SegmenterSpec:
        """The spec saved in `directory`'s segmenter.json (unknown keys of other versions are ignored)."""
        path = directory / SEGMENTER_JSON
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{directory} has no {SEGMENTER_JSON}; re-run its segment stage with this nlp_pipe version") from None
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); re-run the stage that wrote it") from None
        known = {f.name for f in fields(SegmenterSpec)}
        spec = {k: v for k, v in raw.items() if k in known}
        spec["userdict"] = tuple((w, f) for w, f in spec.get("userdict", ()))
        spec.setdefault("engine", "jieba")  # written before engines existed: it was cut by jieba
        if spec["engine"] not in engines.ENGINE_CHOICES:
            raise UserError(f"{path} names segmentation engine '{spec['engine']}', which this nlp_pipe version "
                            f"does not know (known: {', '.join(engines.ENGINES)}); re-run its segment stage")
        return SegmenterSpec(**spec)


class Segmenter:
    """Cuts text as `spec` says; `engine` is the engine really used (a missing package falls back to jieba).

    `tokenizer`, when given, is a jieba tokenizer already holding the spec's dictionaries: segmenters
    that differ only in mode or HMM can share one instead of each loading and tuning their own.
    """

    def __init__(self, spec: SegmenterSpec, tokenizer: jieba.Tokenizer | None = None) -> None:
        self.spec = spec
        name = engines.resolve(spec.engine)
        # jieba's own tokenizer holds a user dictionary (its frequency policies are jieba's arithmetic);
        # with the default dictionary alone a proven fast engine needs no jieba tokenizer at all
        needs_jieba = (name == "jieba" or bool(spec.userdict) or spec.dictionary is not None
                       or (name != "compiled" and not engines.builtin_dictionary_proven()))
        self.tokenizer: jieba.Tokenizer | None = tokenizer
        if needs_jieba:
            self._jieba_tokenizer()
        self.engine = self._engine(name)

    def _engine(self, name: str) -> engines.Engine:
        search = self.spec.mode == "search"
        split = self.spec.force_split
        if name == "jieba":
            return engines.JiebaEngine(self._jieba_tokenizer(), self.spec.hmm, search, split)
        if name == "compiled":
            return engines.compiled(self.tokenizer, self.spec.hmm, search, split)
        dictionary = engines.mirror(self.tokenizer, [w for w, _ in self.spec.userdict])
        if name == "rjieba-native":
            return engines.RjiebaNativeEngine(dictionary, self.spec.hmm, search)
        return engines.RjiebaEngine(dictionary, self.spec.hmm, search, split,
                                    lambda: engines.JiebaEngine(self._jieba_tokenizer(), self.spec.hmm, False, split))

    def _jieba_tokenizer(self) -> jieba.Tokenizer:
        """jieba's tokenizer with the spec's dictionaries, built on first use."""
        if self.tokenizer is None:
            self.tokenizer = jieba.Tokenizer(self.spec.dictionary or jieba.DEFAULT_DICT)
            self.tokenizer.initialize()
            with engines.force_split_kept():  # a word of frequency 0 is this spec's to force-split (`force_split`)
                for word, freq in self.spec.userdict:
                    self._add(word, freq)
        return self.tokenizer

    def _add(self, word: str, freq: int | None) -> None:
        tok, spec = self.tokenizer, self.spec
        if tok is None:
            raise RuntimeError("user-dictionary word added before the tokenizer was built")
        if spec.policy == "file":
            tok.add_word(word, freq)
        elif spec.policy == "multiply":
            base = freq if freq is not None else tok.suggest_freq(word, False)
            tok.add_word(word, max(1, int(base * spec.multiplier)))
        else:  # force: at least the frequency that makes jieba keep the word whole
            tok.add_word(word, freq)
            tok.suggest_freq(word, tune=True)

    def cut(self, text: str) -> list[str]:
        """jieba's words for `text`, without the whitespace tokens jieba emits for spaces."""
        return [w for w in self.engine.words(text) if not w.isspace()]

    def cut_lines(self, texts: list[str]) -> list[str]:
        """`[" ".join(self.cut(t)) for t in texts]`, done a chunk at a time (much faster with rjieba)."""
        return engines.engine_lines(self.engine, texts)

    def cut_columns(self, texts: list[str]) -> tuple[bytes, Any]:
        """(the lines of `cut_lines`, each ending in \\n, as UTF-8; their words as an Arrow list array,
        one list a line: the line split on " "), which the compiled engine writes without making a
        Python string per line or word."""
        import pyarrow as pa  # here, not at the top: serving a word model needs the segmenter, not Arrow
        import pyarrow.compute as pc

        columns = getattr(self.engine, "utf8_columns", None)
        if columns is None:
            lines = self.cut_lines(texts)
            return "".join(line + "\n" for line in lines).encode("utf-8"), pc.split_pattern(pa.array(lines, pa.string()), " ")
        corpus, data, word_ends, line_ends = columns(texts)
        words = pa.StringArray.from_buffers(len(word_ends) - 1, pa.py_buffer(word_ends), pa.py_buffer(data))
        return corpus, pa.ListArray.from_arrays(pa.array(line_ends), words)


_worker: Segmenter | None = None
COLUMNS = "columns"  # cut_parallel's `join` for `Segmenter.cut_columns`


def _init_worker(spec_or_segmenter: SegmenterSpec | Segmenter) -> None:
    global _worker
    given = spec_or_segmenter
    _worker = given if isinstance(given, Segmenter) else Segmenter(given)


def _cut_chunk(texts: list[str], join: str | None, then: Callable[[list[str], Any], Any] | None) -> Any:
    if _worker is None:
        raise RuntimeError("segmenter worker used before its initializer ran")
    return _cut_texts(_worker, texts, join, then)


def _cut_texts(segmenter: Segmenter, texts: list[str], join: str | None,
               then: Callable[[list[str], Any], Any] | None = None) -> Any:
    if join is None:
        cut: Any = [segmenter.cut(t) for t in texts]
    elif join == COLUMNS:
        cut = segmenter.cut_columns(texts)
    elif join == " ":
        cut = segmenter.cut_lines(texts)
    else:
        cut = [join.join(segmenter.cut(t)) for t in texts]
    return cut if then is None else then(texts, cut)


def cut_parallel(segmenter: Segmenter | SegmenterSpec, chunks: Iterable[list[str]], workers: int,
                 join: str | None = None, then: Callable[[list[str], Any], Any] | None = None) -> Iterator[Any]:
    """Segment chunks of texts in `workers` processes, this one included, results in input order.

    `workers - 1` helper processes are started; whenever they all have enough queued, this process
    cuts the next chunk itself instead of waiting, so with a fast engine the reading and writing it
    also does never leaves a core idle, and a busy machine never makes it slower than one process.
    Each text comes back as its list of words or, with `join`, as one string of its words joined
    by `join`: a string is about 10x cheaper to pickle between processes than a list of words;
    `join=COLUMNS` cuts a chunk into `Segmenter.cut_columns`.
    `then(texts, cut)`, when given, runs in the process that cut the chunk and its value is
    yielded instead: work on the words there (building columns, counting) runs in parallel too,
    instead of in this process, which also reads, writes, and hands out every chunk. It must be
    a module-level function (it is pickled by name).
    """
    seg = segmenter if isinstance(segmenter, Segmenter) else Segmenter(segmenter)
    if workers <= 1:
        for chunk in chunks:
            yield _cut_texts(seg, chunk, join, then)
        return
    helpers = workers - 1
    context = multiprocessing.get_context()  # the platform default: fork on Linux before Python 3.14
    # With fork the helpers inherit this process's loaded dictionary (copy-on-write, nothing
    # pickled) instead of each spending CPU time loading their own while sharing the cores.
    init = seg if context.get_start_method() == "fork" else seg.spec
    with ProcessPoolExecutor(helpers, mp_context=context, **process.pool_initializer(_init_worker, init)) as pool:
        pending: deque[Future | Any] = deque()  # in input order: a helper's future or a chunk cut here
        balance = _Balance(helpers)
        for chunk in chunks:
            while True:
                while pending and _ready(pending[0]):
                    yield _result(pending.popleft())
                if sum(1 for p in pending if isinstance(p, Future) and not p.done()) < 2 * helpers:
                    pending.append(pool.submit(_cut_chunk, chunk, join, then))
                    break
                if balance.steal():
                    start = time.perf_counter()
                    pending.append(_cut_texts(seg, chunk, join, then))
                    balance.cut_s += time.perf_counter() - start
                    balance.cut_n += 1
                    break
                start = time.perf_counter()
                head = _result(pending.popleft())  # the helpers are behind and this process is ahead: wait
                balance.wait_s += time.perf_counter() - start
                yield head
            balance.chunks += 1
            if len(pending) >= 4 * workers:  # bounded: reading never runs far ahead of writing
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


class _Balance:
    """When this process should cut a chunk itself. Per chunk it spends `other` seconds reading and
    writing and would spend `c` cutting; its helpers cut the rest. All finish together when it cuts a
    share f = (c - helpers * other) / (c * (helpers + 1)) of the chunks; cutting every other chunk,
    as a plain "cut when the queue is full" rule ends up doing, makes it the slowest process."""

    def __init__(self, helpers: int) -> None:
        self.helpers = helpers
        self.start = time.perf_counter()
        self.chunks = self.cut_n = 0
        self.cut_s = self.wait_s = 0.0

    def steal(self) -> bool:
        if self.cut_n == 0:
            return True  # measure what a chunk costs here
        c = self.cut_s / self.cut_n
        other = max(0.0, time.perf_counter() - self.start - self.cut_s - self.wait_s) / max(1, self.chunks)
        share = max(0.0, (c - self.helpers * other) / (c * (self.helpers + 1)))
        return self.cut_n < share * self.chunks


def _ready(item: Future | Any) -> bool:
    return not isinstance(item, Future) or item.done()


def _result(item: Future | Any) -> Any:
    return item.result() if isinstance(item, Future) else item


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_PROBE_WINDOW_S = 0.05  # /proc/stat counts in 10 ms ticks: 10 of them on 2 cores


class LoadProbe:
    """How many cores other processes keep busy, measured over the time between `__init__` and
    `free_cores()` (Linux /proc/stat minus this process's own CPU time); elsewhere the 1-minute
    load average stands in. Wrapping work this process does anyway (loading the dictionary) makes
    the measurement free."""

    def __init__(self) -> None:
        self._start = (_busy_cpu_s(), _own_cpu_s(), time.perf_counter())

    def others(self) -> float:
        busy0, own0, t0 = self._start
        if busy0 is None:
            try:
                return os.getloadavg()[0]
            except (AttributeError, OSError):
                return 0.0
        # a dictionary already loaded in this process (a pipeline's second segment, a benchmark's repeat) leaves
        # no window, and the load average counts this process's own work of the last minute (it kept a
        # benchmark's stage at 1 process on an idle 2-core machine): count the runnable tasks instead, or
        # wait out a short window
        if time.perf_counter() - t0 < _PROBE_WINDOW_S and (runnable := _runnable_others()) is not None:
            return runnable
        time.sleep(max(0.0, _PROBE_WINDOW_S - (time.perf_counter() - t0)))
        busy1, own1, t1 = _busy_cpu_s() or busy0, _own_cpu_s(), time.perf_counter()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

    def free_cores(self) -> int:
        """Usable cores minus those others use, rounded; at least 1."""
        cores = default_workers()
        return max(1, min(cores, math.floor(cores - self.others() + 0.5)))


def _runnable_others(window_s: float = 0.01) -> float | None:
    """Other tasks on a core or waiting for one, on average over `window_s` (Linux /proc/loadavg's running
    count, read ~1,000 times: this process, single-threaded here, is one of them); None off Linux. The ticks
    of /proc/stat need 50 ms to tell 1 busy core from 0 on 2 cores: a tenth of cutting 10 MB there."""
    samples, end = [], time.perf_counter() + window_s
    try:
        with open("/proc/loadavg", "rb") as fh:
            while time.perf_counter() < end:
                fh.seek(0)
                samples.append(int(fh.read().split()[3].split(b"/")[0]))
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, sum(samples) / len(samples) - 1) if samples else None


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (all but idle and iowait); None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system
