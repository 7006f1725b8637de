"""Which words expand adds: word files (always), then frequent corpus words and phrases the vocabulary lacks.

Corpus words are jieba words: a segment or phrases artifact's corpus.txt, or raw text files cut here
with the same segmenter as everywhere else. Candidates are ranked by count and filtered (length,
a Chinese character, a letter, a stoplist) before the WordPlanner sorts them into new and existing.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core import console
from ..core.config import option
from ..core.contract import Counts
from ..core.errors import UserError
from ..core.files import CORPUS_TXT, PHRASES_TSV
from ..text.corpus import BytesRead, ReadOptions, read_rows
from ..text.segmenter import SegmenterSpec, cut_parallel, default_workers
from .tokenizer_growth import WordPlanner

log = logging.getLogger(__name__)
_PARALLEL_MIN_BYTES = 1 << 20  # below this, starting jieba workers costs more than it saves


@dataclass(frozen=True)
class DiscoveryOptions(ReadOptions):
    """How corpus words are found and filtered; the expand stage's config inherits these fields."""

    # how raw text corpora are cut, then which of their words are kept
    hmm: bool = option(True, "jieba HMM when segmenting raw text corpora")
    workers: int = option(0, "jieba processes for raw text corpora; 0 = one per core for inputs over 1 MB", min=0)
    min_freq: int = option(10, "corpus words and phrases seen fewer times are not added", min=1)
    max_words: int = option(5000, "at most this many corpus words, most frequent first (0 = no cap; word files are not capped)", min=0)
    min_len: int = option(2, "shortest corpus word in characters", min=1)
    max_len: int = option(8, "longest corpus word in characters", min=1)
    cjk_only: bool = option(True, "corpus words must contain a Chinese character (Latin words already have WordPiece pieces)")
    measure_rows: int = option(2000, "corpus texts on which tokens per text are measured before and after (0 = none)", min=0)

    def __post_init__(self) -> None:
        if self.min_len > self.max_len:
            raise ValueError(f"min_len = {self.min_len} is above max_len = {self.max_len}")


@dataclass
class Found:
    counts: dict[str, int]  # new word -> its count (corpus, phrases or word file)
    sources: dict[str, str]  # new word -> words | corpus | phrases
    rows: Counts  # corpus rows read
    sample: list[str]  # the first measure_rows corpus texts


def gather_words(config: DiscoveryOptions, inputs: dict[str, list[Path]], planner: WordPlanner) -> Found:
    """Word files first (in file order, whatever their count), then corpus words and phrases by count."""
    found = Found({}, {}, Counts(), [])
    for word, n in _read_word_files(inputs["words"], found.rows).items():
        if planner.consider(word) == "new":
            found.counts[word], found.sources[word] = n, "words"
    corpus_counts = _corpus_words(config, inputs["corpus"], found.rows, found.sample)
    stop = _read_stoplist(inputs["stoplist"])
    for word, (n, source) in _discover(config, planner, corpus_counts, _read_phrases(inputs["phrases"]), stop).items():
        found.counts[word], found.sources[word] = n, source
    return found


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: word lists must be UTF-8 (byte {exc.start} is not)") from None


def _read_word_files(paths: list[Path], counts: Counts) -> dict[str, int]:
    """`word [count]` a line, in file order; a repeated word keeps its largest count. A line whose second field is
    not a whole number, or with a third, is dropped (counted with its line, warned): `hello world` is not the word
    `hello`, nor `人工智能 12 extra` the word 人工智能."""
    words: dict[str, int] = {}
    for path in paths:
        for number, line in enumerate(_read_lines(path), start=1):
            parts = line.split()
            reason = ("word file: more than `word count`" if len(parts) > 2 else
                      "word file: count not a whole number" if len(parts) == 2 and not parts[1].isdigit() else None)
            if reason:
                counts.drop(reason, where=f"{path}:{number}")
                log.warning("%s: line %d %r dropped (%s)", path, number, line.strip(), reason.removeprefix("word file: "))
            elif parts:
                words[parts[0]] = max(words.get(parts[0], 0), int(parts[1]) if len(parts) > 1 else 0)
    return words


def _read_stoplist(paths: list[Path]) -> set[str]:
    return {line.split()[0] for path in paths for line in _read_lines(path) if line.split()}


def _read_phrases(dirs: list[Path]) -> Counter:
    phrases: Counter = Counter()
    for directory in dirs:
        for line in _read_lines(directory / PHRASES_TSV)[1:]:  # phrase, score, count, parts
            cells = line.split("\t")
            if len(cells) >= 3 and cells[0] and cells[2].isdigit():
                phrases[cells[0]] = max(phrases[cells[0]], int(cells[2]))
    return phrases


def _corpus_words(config: DiscoveryOptions, paths: list[Path], counts: Counts, sample: list[str]) -> Counter:
    """Word counts over every corpus input; rows are counted in `counts`, the first measure_rows texts kept."""
    words: Counter = Counter()
    files = [p for p in paths if not p.is_dir()]
    for directory in (p for p in paths if p.is_dir()):
        if not (directory / CORPUS_TXT).exists():
            raise UserError(f"expand: corpus {directory} has no {CORPUS_TXT}; pass a segment or phrases artifact, or text files")
        for line in console.file_lines([directory / CORPUS_TXT], "expand: counting words"):
            counts.rows_in += 1
            tokens = line.split()
            if not tokens:
                counts.drop("empty")
                continue
            counts.rows_out += 1
            words.update(tokens)
            if len(sample) < config.measure_rows:
                sample.append(_join(tokens))
    for tokens in _segment_files(config, files, counts, sample):
        words.update(tokens)
    return words


def _segment_files(config: DiscoveryOptions, files: list[Path], counts: Counts, sample: list[str]) -> Iterator[list[str]]:
    if not files:
        return
    read = BytesRead()
    rows = itertools.chain.from_iterable(read_rows(path, config, counts, read=read) for path in files)
    big = sum(f.stat().st_size for f in files) >= _PARALLEL_MIN_BYTES
    workers = config.workers or (default_workers() if big else 1)

    def chunks() -> Iterator[list[str]]:
        while chunk := [row.text for row in itertools.islice(rows, 500)]:
            sample.extend(chunk[: max(0, config.measure_rows - len(sample))])
            console.advance_to(bar, read.n)
            yield chunk

    with console.bytes_progress(sum(f.stat().st_size for f in files), "expand: segmenting") as bar:
        for words in cut_parallel(SegmenterSpec(hmm=config.hmm), chunks(), workers):
            yield from words


def _join(words: list[str]) -> str:
    """A text back from its jieba words: no spaces, except between two Latin/digit runs."""
    out = words[0]
    for word in words[1:]:
        out += (" " if out[-1].isascii() and out[-1].isalnum() and word[0].isascii() and word[0].isalnum() else "") + word
    return out


def _discover(config: DiscoveryOptions, planner: WordPlanner, words: Counter, phrases: Counter,
              stop: set[str]) -> dict[str, tuple[int, str]]:
    """Frequent corpus words and phrases the vocabulary lacks, most frequent first, up to max_words."""
    candidates = {w: (n, "corpus") for w, n in words.items()}
    candidates.update({p: (max(n, words.get(p, 0)), "phrases") for p, n in phrases.items()})
    ranked = sorted(((w, n, s) for w, (n, s) in candidates.items() if _eligible(config, w, n, stop)),
                    key=lambda t: (-t[1], t[0]))
    chosen: dict[str, tuple[int, str]] = {}
    for word, n, source in ranked:
        if config.max_words and len(chosen) >= config.max_words:
            break
        if planner.consider(word) == "new":
            chosen[word] = (n, source)
    return chosen


def _eligible(config: DiscoveryOptions, word: str, n: int, stop: set[str]) -> bool:
    if n < config.min_freq or not config.min_len <= len(word) <= config.max_len or word in stop:
        return False
    if config.cjk_only and not any(_is_cjk(ch) for ch in word):
        return False
    return any(ch.isalpha() for ch in word)  # never bare numbers or punctuation runs


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
