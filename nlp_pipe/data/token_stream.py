"""Token ids and whole-word starts of a run of documents, as numpy arrays, at tokenizer speed or better.

A BERT tokenizer (BertNormalizer with handle_chinese_chars, BertPreTokenizer, WordPiece, no added
tokens besides the special ones) puts spaces around every CJK ideograph before it splits, so an
ideograph is always a token of its own and the text between two ideographs is tokenised as if it
stood alone. For such a tokenizer the ids of ideographs come from a lookup table and every other
run of text is encoded once per distinct string with tokenizers' `encode_batch` and remembered:
Chinese text is mostly ideographs and a few thousand distinct runs (punctuation, numbers, Latin
words), so this is several times faster than encoding the text whole, and it gives the same ids
(checked against plain encoding on the first text; any difference, or any other tokenizer, means
plain encoding). No library tokenises this way; `tokenizers` has no per-character shortcut.

Word starts are jieba's words (a segment artifact's, or cut here) over the tokens: a token starts a
word when its first character lies in another word than the previous token's (so every word piece
of a Latin word belongs to its jieba word), and each sentence starts a word.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# ideograph blocks BertNormalizer pads with spaces (a subset of its list is enough: what is left out is encoded whole)
_IDEOGRAPHS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF))
_TABLE_SIZE = 0x2A6E0
_UNKNOWN = -1
_RUN_CACHE_LIMIT = 500_000  # distinct non-ideograph runs remembered (numbers and Latin words keep coming)
_CHECK_CHARS = 20_000  # characters of the first text encoded both ways
_SENTENCE_END = re.compile(r"[。！？!?]+[”’\"'」』）)】》]*")  # closing quotes stay with their sentence
_SPACES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


@dataclass
class Encoded:
    """One text's tokens: ids and the character each token starts at."""

    ids: np.ndarray
    chars: np.ndarray


def plain_backend(tokenizer: Any) -> Any:
    """A copy of the tokenizer's Rust backend with truncation and padding off. A tokenizer.json saved after
    transformers called the tokenizer with padding=True, truncation=True keeps both switched on (a finetune
    artifact's did: BatchLongest padding, truncation at its max_seq_len), and its `encode_batch` then pads
    every text to the longest and cuts it: [PAD] ids counted as real tokens."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer")
    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


class TokenEncoder:
    """Encodes texts with the tokenizer's Rust backend (no truncation, no special tokens)."""

    def __init__(self, tokenizer: Any) -> None:
        self.backend = plain_backend(tokenizer)
        config = json.loads(self.backend.to_str())
        self.per_character = _pads_ideographs(config)
        # a BERT pre-tokenizer splits at every newline, so the lines of a run are encoded apart in one encode_batch:
        # tokenizers encodes one text of a whole run (a MB) about 2.5x slower (a vocabulary with added words, which
        # rules out the per-character shortcut, spent 10.8 of 12 CPU-s of an 8 MB build in that one call)
        self.by_line = _splits_at_newlines(config)
        self._checked = False
        self._table = np.full(_TABLE_SIZE, _UNKNOWN, dtype=np.int64)
        self._runs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def encode(self, text: str) -> Encoded:
        if not self._checked:
            self._checked = True
            self._check(text[:_CHECK_CHARS])
        if self.per_character:
            return self._fast(text)
        return self._lines(text) if self.by_line else self._plain(text)

    def _check(self, sample: str) -> None:
        """Each shortcut must give plain encoding's tokens on the first text; one that differs is switched off."""
        plain = self._plain(sample)
        for name, way in (("per_character", self._fast), ("by_line", self._lines)):
            if getattr(self, name):
                mine = way(sample)
                if not (np.array_equal(mine.ids, plain.ids) and np.array_equal(mine.chars, plain.chars)):
                    log.warning("the %s shortcut differs from plain encoding for this tokenizer: not used", name.replace("_", "-"))
                    setattr(self, name, False)

    def _plain(self, text: str) -> Encoded:
        enc = self.backend.encode(text, add_special_tokens=False)
        return Encoded(np.asarray(enc.ids, dtype=np.int64), np.asarray([s for s, _ in enc.offsets], dtype=np.int64))

    def _lines(self, text: str) -> Encoded:
        lines = text.split("\n")
        bases = np.cumsum([0, *(len(line) + 1 for line in lines[:-1])]).tolist()
        ids, chars = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for enc, base in zip(self.backend.encode_batch(lines, add_special_tokens=False), bases):
            ids.append(np.asarray(enc.ids, dtype=np.int64))
            chars.append(np.asarray([s for s, _ in enc.offsets], dtype=np.int64) + base)
        return Encoded(np.concatenate(ids), np.concatenate(chars))

    def _fast(self, text: str) -> Encoded:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ideograph = np.zeros(len(points), dtype=bool)
        for low, high in _IDEOGRAPHS:
            ideograph |= (points >= low) & (points <= high)
        at = np.flatnonzero(ideograph)
        ids = [self._ideograph_ids(points[at])]
        chars = [at]
        edges = np.flatnonzero(np.diff(np.concatenate(([1], ideograph.view(np.int8), [1]))))
        starts, ends = edges[0::2].tolist(), edges[1::2].tolist()  # the runs between ideographs
        pieces = [text[s:e] for s, e in zip(starts, ends)]
        self._remember(pieces)
        runs = self._runs
        for start, piece in zip(starts, pieces):
            run_ids, run_chars = runs[piece]
            if len(run_ids):
                ids.append(run_ids)
                chars.append(run_chars + start)
        all_ids, all_chars = np.concatenate(ids), np.concatenate(chars)
        order = np.argsort(all_chars, kind="stable")
        return Encoded(all_ids[order], all_chars[order])

    def _ideograph_ids(self, points: np.ndarray) -> np.ndarray:
        ids = self._table[points]
        missing = np.unique(points[ids == _UNKNOWN])
        if len(missing):
            for point, enc in zip(missing.tolist(), self.backend.encode_batch([chr(p) for p in missing.tolist()],
                                                                               add_special_tokens=False)):
                if len(enc.ids) != 1:  # not what a BERT normalizer does: the check below catches the difference
                    raise RuntimeError(f"ideograph {chr(point)!r} gave {len(enc.ids)} tokens")
                self._table[point] = enc.ids[0]
            ids = self._table[points]
        return ids

    def _remember(self, pieces: list[str]) -> None:
        new = [p for p in set(pieces) if p not in self._runs]
        if not new:
            return
        if len(self._runs) + len(new) > _RUN_CACHE_LIMIT:
            self._runs.clear()
        for piece, enc in zip(new, self.backend.encode_batch(new, add_special_tokens=False)):
            self._runs[piece] = (np.asarray(enc.ids, dtype=np.int64), np.asarray([s for s, _ in enc.offsets], dtype=np.int64))


def _pads_ideographs(config: dict[str, Any]) -> bool:
    """Whether the tokenizer is BERT's: every ideograph a token, runs between ideographs independent."""
    normalizer, pre, model = config.get("normalizer") or {}, config.get("pre_tokenizer") or {}, config.get("model") or {}
    return (normalizer.get("type") == "BertNormalizer" and bool(normalizer.get("handle_chinese_chars"))
            and pre.get("type") == "BertPreTokenizer" and model.get("type") == "WordPiece"
            and all(t.get("special") for t in config.get("added_tokens") or []))


def _splits_at_newlines(config: dict[str, Any]) -> bool:
    """Whether the pre-tokenizer ends a piece at every newline: BERT's, alone or in a Sequence (expand's puts a
    Split of CJK characters before it); pre-tokenizers only split, so one after another cannot join lines."""
    pre = config.get("pre_tokenizer") or {}
    members = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    return any(m.get("type") == "BertPreTokenizer" for m in members)


def sentence_starts(text: str) -> list[int]:
    """Characters where the sentences of a one-document-a-line text start (after 。！？!? and closing quotes)."""
    return [0, *(m.end() for m in _SENTENCE_END.finditer(text))]


def word_starts(text: str, words: np.ndarray | list[str]) -> np.ndarray:
    """Characters where `words` (or the words of these lengths) start in `text`. Fast when the words cover
    the text, or all of it but the whitespace (what a segment artifact keeps); words not found in order
    are skipped otherwise."""
    given_lengths = isinstance(words, np.ndarray)
    lengths = np.asarray(words, dtype=np.int64) if given_lengths else np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    starts = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    if total == len(text):
        return starts
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    solid = np.flatnonzero(~np.isin(points, _SPACES))
    if total == len(solid) and (given_lengths or "".join(words) == "".join(text.split())):
        return solid[starts] if len(starts) else starts
    if given_lengths:
        raise ValueError("word lengths that do not cover the text")
    found_at, pos = [], 0
    for word in words:
        found = text.find(word, pos)
        if found >= 0:
            found_at.append(found)
            pos = found + len(word)
    return np.asarray(found_at, dtype=np.int64)


def word_start_flags(token_chars: np.ndarray, starts: np.ndarray, n_chars: int) -> np.ndarray:
    """True where a token begins a new word: its first character is in another word than the last token's."""
    marks = np.zeros(n_chars + 1, dtype=bool)
    marks[starts] = True
    word_of = np.cumsum(marks)[token_chars]
    flags = np.ones(len(token_chars), dtype=bool)
    flags[1:] = word_of[1:] != word_of[:-1]
    return flags
