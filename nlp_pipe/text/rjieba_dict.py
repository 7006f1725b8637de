"""jieba's dictionary as rjieba must hold it for jieba's route: the same words, frequencies and total.

jieba's DAG only has words of frequency > 0 (its FREQ also holds every prefix with 0), and its
`total` counts duplicate dictionary lines and every `add_word` (old frequencies are never
subtracted); jieba-rs makes every stored word a DAG edge and a "known word" whatever its
frequency, and keeps the sum of current frequencies as its total. So only words above 0 go to
rjieba, and a placeholder word that no block can contain carries the difference of the totals:
log(total), part of every route score, is then jieba's. With jieba's default dictionary alone,
rjieba's built-in copy is used as it is (proven equal: every one of the 349,045 words, each
frequency through `suggest_freq`, and the total up to the duplicate line `B超 3`); a user
dictionary then only re-weights its own words.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import jieba

from ..core.errors import UserError

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TOTAL_KEY = "\ue000nlp_pipe total\ue000"  # holds jieba's extra total; no block can contain it
# jieba 0.42.1's dict.txt: its sha256, jieba's total for it (B超 is listed twice), and the sum of its
# distinct words' frequencies, which is what rjieba's built-in copy of it totals.
_DICT_SHA256 = "7197c3211ddd98962b036cdf40324d1ea2bfaa12bd028e68faa70111a88e12a8"
_DICT_TOTAL, _DICT_DISTINCT_TOTAL = 60101967, 60101964
_DICT_ASCII_ALNUM_WORDS: frozenset[str] = frozenset()  # it has B超, C++, AT&T, but no `ok` or `mp3`


class RjiebaDictionary:
    """An `rjieba.Jieba` holding exactly the words a jieba tokenizer knows with a frequency above 0,
    and jieba's total, so its route is jieba's; plus the ASCII words' frequencies, for the one
    route choice the adapter recomputes itself."""

    def __init__(self, tokenizer: jieba.Tokenizer | None, changed: list[str], builtin_proven: bool) -> None:
        """`tokenizer` None: jieba's default dictionary untouched (rjieba's built-in copy of it);
        otherwise `changed` lists the words added or re-weighted after jieba loaded its dictionary.
        `builtin_proven`: the installed rjieba's built-in dictionary is proven to be jieba's dict.txt."""
        import rjieba

        self._tokenizer = tokenizer
        self._ascii: dict[str, int] | None = None
        if tokenizer is None:
            if not builtin_proven:
                raise RuntimeError("rjieba's built-in dictionary is not proven to be jieba's dict.txt; "
                                   "mirror a loaded jieba tokenizer instead")
            self.total = _DICT_TOTAL
            self.rjieba = rjieba.Jieba()
            distinct_total = _DICT_DISTINCT_TOTAL
        else:
            self.total = tokenizer.total
            self.rjieba = self._mirror(rjieba, tokenizer, changed, builtin_proven)
            distinct_total = sum(tokenizer.FREQ.values())  # prefixes count 0
        extra = self.total - distinct_total
        if extra < 0 or (tokenizer is not None and _TOTAL_KEY in tokenizer.FREQ):
            raise RuntimeError(f"cannot mirror jieba's total {self.total} in rjieba (words sum to {distinct_total})")
        if extra:
            self.rjieba.add_word(_TOTAL_KEY, extra, None)
        self.log_total = math.log(self.total)

    @staticmethod
    def _mirror(rjieba: Any, tokenizer: jieba.Tokenizer, changed: list[str], builtin_proven: bool) -> Any:
        freq = tokenizer.FREQ
        if max(freq.values(), default=0) >= 2**63:  # jieba takes any whole number, jieba-rs a 64-bit one
            raise UserError("a user-dictionary frequency of 2**63 or more is past what rjieba holds; cut with "
                            "--engine compiled (or jieba), which take any")
        if tokenizer.dictionary is None and builtin_proven:
            fast = rjieba.Jieba()  # the default dictionary, then only what the user dictionary changed
            if not any(freq.get(w, 0) <= 0 and fast.has_word(w) for w in changed):  # rjieba cannot delete
                for word in changed:
                    if freq.get(word, 0) > 0:
                        fast.add_word(word, freq[word], None)
                return fast
        full = rjieba.Jieba.empty()
        for word, count in freq.items():
            if count > 0:
                full.add_word(word, count, None)
        return full

    def ascii_alnum_words(self) -> frozenset[str]:
        """The words of two or more ASCII letters and digits: those HMM-off output cannot tell from
        single-character steps. jieba's own dictionary has none."""
        if self._tokenizer is None:
            return _DICT_ASCII_ALNUM_WORDS
        return frozenset(w for w in self.ascii_words() if len(w) > 1 and w.isascii() and w.isalnum())

    def ascii_words(self) -> dict[str, int]:
        """{word: frequency} of the words that start with an ASCII letter or digit (built on first use)."""
        if self._ascii is None:
            if self._tokenizer is not None:
                self._ascii = {w: f for w, f in self._tokenizer.FREQ.items() if f > 0 and w[0] in _ASCII_ALNUM}
            else:
                text = _default_dict_path().read_text(encoding="utf-8")
                self._ascii = {m[1]: int(m[2]) for m in re.finditer(r"^([0-9A-Za-z][^ \r\n]*) ([0-9]+)", text, re.M)}
        return self._ascii


def _default_dict_path() -> Path:
    return Path(jieba.__file__).resolve().parent / jieba.DEFAULT_DICT_NAME


def is_jieba_dict_txt() -> bool:
    """Is jieba's bundled dictionary the dict.txt of jieba 0.42.1 (by its sha256)?"""
    return hashlib.sha256(_default_dict_path().read_bytes()).hexdigest() == _DICT_SHA256
