"""jieba word segmentation shared by every stage that needs words (segment, predict, whole-word masking).

A `Segmenter` owns its own `jieba.Tokenizer` built from a picklable `SegmenterSpec`, never
the global default, so loading a user dictionary never changes jieba behind the user's back.
`cut_parallel` fans chunks of texts out to worker processes (forked from a process that has
built the tokenizer once, or each building their own where fork is not the start method),
keeps only a bounded number of chunks in flight (memory stays flat) and yields results in
input order.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import jieba

from ..core.errors import UserError
from ..core.files import SEGMENTER_JSON

jieba.setLogLevel(logging.WARNING)
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
        return SegmenterSpec(**spec)


class Segmenter:
    def __init__(self, spec: SegmenterSpec) -> None:
        self.spec = spec
        self.tokenizer = jieba.Tokenizer(spec.dictionary or jieba.DEFAULT_DICT)
        self.tokenizer.initialize()
        for word, freq in spec.userdict:
            self._add(word, freq)

    def _add(self, word: str, freq: int | None) -> None:
        tok, spec = self.tokenizer, self.spec
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
        if self.spec.mode == "search":
            words = self.tokenizer.lcut_for_search(text, HMM=self.spec.hmm)
        else:
            words = self.tokenizer.lcut(text, HMM=self.spec.hmm)
        return [w for w in words if not w.isspace()]


_worker: Segmenter | None = None


def _init_worker(spec_or_segmenter: SegmenterSpec | Segmenter) -> None:
    global _worker
    given = spec_or_segmenter
    _worker = given if isinstance(given, Segmenter) else Segmenter(given)


def _cut_chunk(texts: list[str], join: str | None) -> list:
    if _worker is None:
        raise RuntimeError("segmenter worker used before its initializer ran")
    if join is None:
        return [_worker.cut(t) for t in texts]
    return [join.join(_worker.cut(t)) for t in texts]


def cut_parallel(spec: SegmenterSpec, chunks: Iterable[list[str]], workers: int,
                 join: str | None = None) -> Iterator[list]:
    """Segment chunks of texts in `workers` processes (1 = in this process), results in order.

    Each text comes back as its list of words or, with `join`, as one string of its words joined
    by `join`: a string is about 10x cheaper to pickle between processes than a list of words.
    """
    if workers <= 1:
        seg = Segmenter(spec)
        for chunk in chunks:
            yield [seg.cut(t) if join is None else join.join(seg.cut(t)) for t in chunk]
        return
    context = multiprocessing.get_context()  # the platform default: fork on Linux before Python 3.14
    # With fork, load the dictionary once, here: the workers inherit it (copy-on-write, nothing
    # pickled) instead of each spending a CPU-second loading its own while sharing the cores.
    init = Segmenter(spec) if context.get_start_method() == "fork" else spec
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(init,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(_cut_chunk, chunk, join))
            if len(pending) >= 3 * workers:  # bounded: reading never runs far ahead of segmenting
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
