"""Segmentation engines: jieba itself, and rjieba (jieba-rs, ~15x faster) made to cut exactly as jieba 0.42.1.

    Segmenter(SegmenterSpec(engine="rjieba")).engine.words(text) == jieba.lcut(text)   # text.segmenter

`rjieba` is an adapter. Measured against `jieba.lcut` on 30.8 MB of real text, plain rjieba 0.2.2
agrees on every line with the HMM off and differs on 1.25% of lines with it on, for two reasons:

1. Inside an HMM buffer (a run of single-character route steps), jieba splits the non-hanzi part
   with `re_skip` = `[a-zA-Z0-9]+(?:\\.\\d+)?%?` and yields the rest whole; jieba-rs keeps runs such
   as `inside-out`, `10.4.5`, `3.5mm` whole (jieba: `inside - out`, `10.4 . 5`, `3.5 mm`).
2. jieba-rs's HMM tables are jieba's rounded to 6 decimals, which flips near-ties of the Viterbi.

So the adapter asks rjieba only for what is proven identical (the dictionary route, HMM off) and
does the HMM step itself with jieba's own tables, compiled (`text.hmm`): one pass over the route's
tokens finds the runs of single-character steps, and only those runs are re-cut. Further details
jieba and jieba-rs handle differently, and how each is met:

- The route needs jieba's dictionary exactly: words of frequency 0 and jieba's peculiar total
  (`text.rjieba_dict` says how they are mirrored).
- Characters jieba-rs counts as hanzi and jieba does not (CJK extension A, U+9FD6-U+9FFF,
  compatibility ideographs, the supplementary planes) and lone surrogates end a block in jieba:
  the text is split at them before rjieba sees it, and each is one token, as in jieba.
- With the HMM off, jieba joins single-character ASCII letter/digit steps into one token, so a
  token such as `ok` may be a dictionary word or two steps. With the HMM on this matters (two
  steps form a buffer that jieba then cuts char by char): the route choice is recomputed from the
  dictionary frequencies; a choice within rounding distance of a tie is left to jieba itself.
- Search mode adds the dictionary 2- and 3-grams of longer words in Python, after the exact cut
  (remembered per word: the same long words come back all the time).

`rjieba-native` is plain rjieba on the same dictionary: faster still, not identical with the HMM
on; it is only used when asked for, and the segment stage then measures and reports its agreement.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import jieba
from jieba import finalseg

from ..core.errors import UserError
from .rjieba_dict import RjiebaDictionary, is_jieba_dict_txt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    name: str
    package: str  # the PyPI distribution that provides it
    exact: bool  # proven to give jieba 0.42.1's output in every mode (benchmarks/segment.py --verify)
    about: str


ENGINES = {
    "jieba": EngineInfo("jieba", "jieba", True, "jieba 0.42.1 itself (pure Python)"),
    "compiled": EngineInfo("compiled", "numba", True, "jieba's own route, HMM and search n-grams compiled with numba "
                                                      "(text.compiled_jieba): jieba's output, the fastest"),
    "rjieba": EngineInfo("rjieba", "rjieba", True, "jieba-rs route + jieba's own HMM, compiled: jieba's output, ~13x faster"),
    "rjieba-native": EngineInfo("rjieba-native", "rjieba", False, "plain jieba-rs: fastest, differs with the HMM on"),
}
ENGINE_CHOICES = ("auto", *ENGINES)
# `auto` takes the first of these whose package is installed and proven for this version
AUTO_ORDER = ("compiled", "rjieba", "jieba")
# Versions the identity check (benchmarks/segment.py --verify, tests/test_engines.py) was run on; None: the
# engine is this package's own code (numba only compiles it, with IEEE arithmetic), proven with the package.
PROVEN_VERSIONS: dict[str, tuple[str, ...] | None] = {"compiled": None, "rjieba": ("0.2.2",), "jieba": ("0.42.1",)}

_HAN = "\u4E00-\u9FD5a-zA-Z0-9+#&._%\\-"  # jieba's re_han_default character class
# jieba-rs counts these as hanzi, jieba does not; surrogates cannot cross into Rust; \x00, \x01 and \x02
# are the adapter's own separators. All are single tokens in jieba, so a text is split at them.
_ODD = re.compile("([\u3400-\u4DBF\u9FD6-\u9FFF\uF900-\uFAFF\U00020000-\U0003FFFF\ud800-\udfff\x00\x01\x02])")
_BLOCK_CHARS = re.compile(f"[{_HAN}]+")
_SURROGATE = re.compile("([\ud800-\udfff])")
_ALNUM_TOKEN = re.compile("(?<=\x01)[a-zA-Z0-9]{2,}(?=\x01)")
_SLOW_START_S = 3.0  # a compiled engine loads from numba's cache in about 0.4 s; compiling takes 7-12 s
_TIE_TOLERANCE = 1e-13  # relative: 450x the rounding a sum of jieba's route can carry


class Engine(Protocol):
    name: str

    def words(self, text: str) -> list[str]:
        """jieba's tokens for `text`, whitespace tokens included (as `jieba.lcut`)."""
        ...


def package_version(name: str) -> str | None:
    """The installed version of engine `name`'s package, None when it is not installed (or does not import)."""
    package = ENGINES[name].package
    try:
        importlib.import_module(package)
        return importlib.metadata.version(package)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return None


def resolve(requested: str) -> str:
    """The engine to use for `requested`: `auto` = the fastest installed engine proven identical to
    jieba; a named engine whose package is missing falls back to jieba, with a notice (never a
    different segmentation without one)."""
    if requested not in ENGINE_CHOICES:
        raise UserError(f"unknown segmentation engine '{requested}'; choose one of {', '.join(ENGINE_CHOICES)}")
    if requested == "auto":
        for name in AUTO_ORDER[:-1]:
            version = package_version(name)
            if _proven_version(name, version):
                return name
            log.warning("segmentation engine %s %s, so jieba cuts (same words, %s)", name,
                        f"{version} is not a version proven identical to jieba" if version else
                        f"is not installed (pip install '{ENGINES[name].package}')", "slower")
        return AUTO_ORDER[-1]
    if package_version(requested) is None:
        differs = "" if ENGINES[requested].exact else f", whose words differ from {requested}'s on some texts"
        log.warning("segmentation engine %s is not installed (pip install '%s'): cutting with jieba instead%s",
                    requested, ENGINES[requested].package, differs)
        return "jieba"
    if not proven(requested) and ENGINES[requested].exact:
        log.warning("segmentation engine %s %s is not a version proven identical to jieba (proven: %s)", requested,
                    package_version(requested), ", ".join(PROVEN_VERSIONS[requested] or ()))
    return requested


def proven(name: str) -> bool:
    """Is engine `name`, as installed, proven to cut exactly as jieba (the reference itself always is)?"""
    return name == "jieba" or (ENGINES[name].exact and _proven_version(name, package_version(name)))


def _proven_version(name: str, version: str | None) -> bool:
    versions = PROVEN_VERSIONS[name]
    return version is not None and (versions is None or version in versions)


# held while jieba's process-wide force-split set is swapped or restored: a tokenizer built in one thread while
# a JiebaEngine cuts in another would otherwise add to, or empty, the engine's own set
_FORCE_SPLIT_SWAP = threading.RLock()


@contextlib.contextmanager
def force_split_kept() -> Iterator[None]:
    """jieba's process-wide `finalseg.Force_Split_Words` as it was before the block (whose `add_word(w, 0)`
    calls would add to it): every segmenter passes its own words to its engine instead."""
    with _FORCE_SPLIT_SWAP:
        before = set(finalseg.Force_Split_Words)
        try:
            yield
        finally:
            finalseg.Force_Split_Words.clear()
            finalseg.Force_Split_Words.update(before)


class JiebaEngine:
    """jieba itself, on a tokenizer that already holds the user dictionary; `force_split` in place of jieba's
    process-wide force-split words while it cuts."""

    name = "jieba"

    def __init__(self, tokenizer: jieba.Tokenizer, hmm: bool, search: bool, force_split: frozenset[str]) -> None:
        self._cut = tokenizer.lcut_for_search if search else tokenizer.lcut
        self._hmm = hmm
        self._force_split = set(force_split)

    def words(self, text: str) -> list[str]:
        # finalseg.cut reads its module global at each call: swapped (under a lock, for threads) around the cut
        with _FORCE_SPLIT_SWAP:
            saved, finalseg.Force_Split_Words = finalseg.Force_Split_Words, self._force_split
            try:
                return self._cut(text, HMM=self._hmm)
            finally:
                finalseg.Force_Split_Words = saved


@functools.cache
def builtin_dictionary_proven() -> bool:
    """Is the installed rjieba's built-in dictionary proven to be this jieba's dict.txt?"""
    return is_jieba_dict_txt() and _proven_version("rjieba", package_version("rjieba"))


def compiled(tokenizer: jieba.Tokenizer | None, hmm: bool, search: bool, force_split: frozenset[str]) -> Engine:
    """jieba's cut compiled (`text.compiled_jieba`) on jieba's bundled dictionary (`tokenizer` None,
    read once a process) or on what `tokenizer` holds; numba loads only when one is made."""
    start = time.perf_counter()
    from . import compiled_jieba

    trie = compiled_jieba.default_trie() if tokenizer is None else compiled_jieba.JiebaTrie.of_tokenizer(tokenizer)
    engine = compiled_jieba.CompiledJieba(trie, hmm, search, force_split)
    took = time.perf_counter() - start
    if took > _SLOW_START_S:  # numba compiled it: the first run after install, or no writable cache
        log.info("segmentation engine compiled in %.0f s (numba keeps the machine code: later runs load it in "
                 "about 0.4 s)", took)
    return engine


def mirror(tokenizer: jieba.Tokenizer | None, changed: list[str]) -> RjiebaDictionary:
    """jieba's dictionary state in rjieba: the default one (`tokenizer` None) or `tokenizer`'s."""
    if tokenizer is None:
        return _default_dictionary()
    return RjiebaDictionary(tokenizer, changed, builtin_dictionary_proven())


@functools.cache
def _default_dictionary() -> RjiebaDictionary:
    """The default dictionary, built once a process (0.09 s: every segmenter, stage run and predict
    call after the first shares it). Nothing changes it after it is built: engines only cut and
    look words up, and a user dictionary always gets a dictionary of its own."""
    return RjiebaDictionary(None, [], builtin_dictionary_proven())


class _NeedJieba(Exception):
    """A route choice too close to a tie to decide without jieba's own floating-point sums."""


class RjiebaEngine:
    """rjieba's route and jieba's HMM, buffers and search n-grams: jieba's output (see the module doc).

    Internally a cut is one string, the route's tokens joined by \\x01, which `text.hmm` turns into
    the words in one compiled pass; a whole chunk of texts (joined by \\x00, which ends a block like
    any other non-hanzi character) goes through rjieba and that pass in one call each."""

    name = "rjieba"

    def __init__(self, dictionary: RjiebaDictionary, hmm: bool, search: bool, force_split: frozenset[str],
                 jieba_fallback: Callable[[], JiebaEngine]) -> None:
        self._dict = dictionary
        self._cut = dictionary.rjieba.cut
        self._has_word = dictionary.rjieba.has_word
        self._hmm = hmm
        self._search = search
        self._fallback = jieba_fallback  # jieba in accurate mode: search n-grams are added here
        # text.hmm loads numba and its compiled code: only when an rjieba engine is made, not for every importer of
        # the segmenter (serving or predicting with a BERT never cuts)
        from . import hmm as jieba_hmm

        self._hmm_cut, self._long_words = jieba_hmm.cut, jieba_hmm.long_words
        self._split = jieba_hmm.force_split(force_split)
        self._grams: dict[str, str] = {}  # a long word -> its dictionary n-grams and itself, joined by spaces
        self._ascii_multi: frozenset[str] | None = None
        self._longest_ascii = 1
        if hmm:
            self._ascii_words_multi()  # now, so that forked workers inherit it
        self.lines(["中文"])  # compiles (or loads) text.hmm's code now, before workers fork

    def words(self, text: str) -> list[str]:
        if _ODD.search(text):
            return self._around_odd(text)
        joined = self._joined(text, lines=False)
        return joined.split("\x01") if joined else []

    def lines(self, texts: list[str]) -> list[str]:
        """Each text's words joined by spaces, whitespace tokens dropped; one rjieba call for them all
        (a text that needs care, holding the adapter's separators or odd characters, is cut on its own)."""
        alone = [i for i, t in enumerate(texts) if not t or t.isspace() or _ODD.search(t)]
        if alone:
            single = {i: _line(self.words(texts[i])) for i in alone}
            rest = [t for i, t in enumerate(texts) if i not in single]
            others = iter(self.lines(rest) if rest else [])
            return [single[i] if i in single else next(others) for i in range(len(texts))]
        lines = self._joined(chr(0).join(texts), lines=True).split("\x00")
        if len(lines) != len(texts):
            raise RuntimeError(f"cut {len(texts)} texts into {len(lines)} lines")
        return lines

    def _joined(self, text: str, lines: bool) -> str:
        """jieba's words of `text` (free of odd characters) joined by \\x01, or (`lines`) the
        segment stage's lines: joined by spaces, whitespace dropped, texts split at \\x00."""
        hmm = self._hmm
        try:
            route = self._route(text)
        except _NeedJieba:
            route, hmm = "\x01".join(self._fallback().words(text)), False
        if not route:
            return ""
        joined = self._hmm_cut(route, hmm, self._has_word, lines, self._split)
        return self._search_grams(joined, " " if lines else "\x01") if self._search else joined

    def _around_odd(self, text: str) -> list[str]:
        """Characters that end a block in jieba but not in jieba-rs are one token each; the text
        between them is cut on its own (cutting is block by block, so this changes nothing)."""
        words: list[str] = []
        for i, piece in enumerate(_ODD.split(text)):
            if i % 2:
                words.append(piece)
            elif piece:
                words.extend(self._joined(piece, lines=False).split("\x01"))
        return words

    def _route(self, text: str) -> str:
        """rjieba's HMM-off tokens joined by \\x01, ASCII tokens resolved (`_resolve_ascii`) when the HMM is on."""
        joined = "\x01".join(self._cut(text, False))
        if not self._hmm or not joined or not self._ascii_words_multi():
            return joined
        return self._resolve_ascii(f"\x01{joined}\x01")[1:-1]

    def _ascii_words_multi(self) -> frozenset[str]:
        if self._ascii_multi is None:
            self._ascii_multi = self._dict.ascii_alnum_words()
        return self._ascii_multi

    def _resolve_ascii(self, joined: str) -> str:
        """`joined` (tokens between \\x01s) with each ASCII letter/digit token that is also a dictionary
        word marked as one route step (\\x02 prefix) or split into its single-character steps."""
        ambiguous = self._ascii_words_multi()
        if not ambiguous:  # jieba's own dictionary has no such word
            return joined
        pieces, done = [], 0
        for match in _ALNUM_TOKEN.finditer(joined):
            token = match.group()
            if token in ambiguous:
                start = match.start()
                one_step = self._is_one_step(token, joined[start:start + 4 * self._longest_ascii + 8], len(joined))
                pieces += [joined[done:start], "\x02" + token if one_step else "\x01".join(token)]
                done = match.end()
        return "".join(pieces) + joined[done:] if pieces else joined

    def _is_one_step(self, token: str, following: str, bound: int) -> bool:
        """Did jieba's route take `token` as one word, or as single characters? HMM-off output merges
        letter/digit steps, so the token is one of the two; compare their log-probabilities as jieba's
        `calc` does (the rest of the route adds the same to both). `following` is the joined text from
        the token on, `bound` a bound on the length of its block."""
        words = self._dict.ascii_words()
        if self._longest_ascii == 1:
            self._longest_ascii = max(map(len, words), default=1)
        block = cast(re.Match[str], _BLOCK_CHARS.match(following.replace("\x01", ""))).group()
        singles = 0.0
        for i, char in enumerate(token):
            starts_word = any(block[i:i + n] in words for n in range(2, self._longest_ascii + 1))
            if starts_word and not words.get(char):
                return True  # no single-character edge here: the route must take the whole word
            singles += math.log(words.get(char) or 1) - self._dict.log_total
        whole = math.log(words[token]) - self._dict.log_total
        # jieba's own sums along the block carry rounding of up to ~1e-16 per step of size <= log(total)
        tolerance = _TIE_TOLERANCE * (len(token) + 2) * (bound + 1) * (self._dict.log_total + 1)
        if abs(whole - singles) <= tolerance:
            raise _NeedJieba
        return whole > singles

    def _search_grams(self, joined: str, sep: str) -> str:
        """`Tokenizer.cut_for_search` on words joined by `sep`: before each word longer than 2 (3), its
        dictionary 2-grams (3-grams)."""
        memo, has_word = self._grams, self._has_word
        pieces: list[str] = []
        done = 0
        spans = self._long_words(joined, sep)
        for start, end in zip(spans[::2], spans[1::2]):
            word = joined[start:end]
            grams = memo.get(word)
            if grams is None:
                if len(memo) > 200_000:  # about 150 bytes each
                    memo.clear()
                found = [g for g in (word[i:i + 2] for i in range(end - start - 1)) if has_word(g)]
                if end - start > 3:
                    found += [g for g in (word[i:i + 3] for i in range(end - start - 2)) if has_word(g)]
                grams = memo[word] = "".join(g + " " for g in found)
            if grams:
                pieces += (joined[done:start], grams if sep == " " else grams.replace(" ", sep))
                done = start
        return "".join(pieces) + joined[done:] if pieces else joined


def _line(words: list[str]) -> str:
    return " ".join(w for w in words if not w.isspace())


class RjiebaNativeEngine:
    """Plain rjieba on jieba's dictionary: not jieba's output with the HMM on (see the module doc)."""

    name = "rjieba-native"

    def __init__(self, dictionary: RjiebaDictionary, hmm: bool, search: bool) -> None:
        self._cut = dictionary.rjieba.cut_for_search if search else dictionary.rjieba.cut
        self._hmm = hmm

    def words(self, text: str) -> list[str]:
        if not _SURROGATE.search(text):
            return self._cut(text, self._hmm)
        # a lone surrogate cannot cross into Rust: one token of its own, as in jieba
        return [w for i, piece in enumerate(_SURROGATE.split(text)) if piece
                for w in ([piece] if i % 2 else self._cut(piece, self._hmm))]


def engine_lines(engine: Engine, texts: list[str]) -> list[str]:
    """Each text's words joined by single spaces, jieba's whitespace tokens left out."""
    lines = getattr(engine, "lines", None)
    return lines(texts) if lines else [_line(engine.words(t)) for t in texts]
