"""Bags of character n-grams (n <= 3), counted and looked up as numpy arrays.

An n-gram is one int64 key: each character's code point + 1 in a 21-bit field, the last character lowest
((c0+1) << 42 | (c1+1) << 21 | (c2+1) for a 3-gram), so a shorter n-gram leaves its high fields 0 and keys
of different lengths never collide. Counting document frequencies and mapping a text to its n-grams' ids
are then sorts and binary searches over all texts at once. Written by hand because nothing installed does
this fast: scikit-learn's CountVectorizer (char analyzer) builds every n-gram as a Python string, about
20x slower on ChnSentiCorp, which would cost more than training the bag beside a TextCNN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_N = 3
_BITS = 21  # code points are < 0x110000 <= 2**21 - 1, so code point + 1 fits; 3 fields fit in 63 bits
_FIELD = (1 << _BITS) - 1


def bag_text(text: str) -> str:
    """The text without its whitespace (str.split's whitespace is str.isspace's): what an n-gram bag and a
    char stream (word_ids.text_chars) read."""
    return "".join(text.split())


def gram_key(gram: str) -> int:
    """The key of one n-gram (1 to MAX_N characters)."""
    if not 1 <= len(gram) <= MAX_N:
        raise ValueError(f"an n-gram has 1 to {MAX_N} characters, not {len(gram)}: {gram!r}")
    key = 0
    for ch in gram:
        key = (key << _BITS) | (ord(ch) + 1)
    return key


def key_gram(key: int) -> str:
    chars = []
    while key:
        chars.append(chr((key & _FIELD) - 1))
        key >>= _BITS
    return "".join(reversed(chars))


def distinct_keys(texts: Sequence[str], max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, key) of every distinct 1..max_n-gram of every text (whitespace removed), sorted by row then key."""
    if not 1 <= max_n <= MAX_N:
        raise ValueError(f"n-grams up to {MAX_N} characters, not {max_n}")
    cleaned = [bag_text(t) for t in texts]
    lengths = np.fromiter((len(t) for t in cleaned), dtype=np.int64, count=len(cleaned))
    codes = np.frombuffer("".join(cleaned).encode("utf-32-le"), dtype=np.uint32).astype(np.int64) + 1
    rows = np.repeat(np.arange(len(cleaned), dtype=np.int64), lengths)
    left = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(codes))  # characters from here to the text's end
    keys, key_rows = [codes], [rows]
    gram = codes
    for n in range(2, max_n + 1):
        gram = (gram[:-1] << _BITS) | codes[n - 1:]  # gram[i] = the n-gram starting at character i
        valid = left[: len(gram)] >= n
        keys.append(gram[valid])
        key_rows.append(rows[: len(gram)][valid])
    all_rows, all_keys = np.concatenate(key_rows), np.concatenate(keys)
    order = np.lexsort((all_keys, all_rows))
    all_rows, all_keys = all_rows[order], all_keys[order]
    first = np.ones(len(all_keys), dtype=bool)
    first[1:] = (all_rows[1:] != all_rows[:-1]) | (all_keys[1:] != all_keys[:-1])
    return all_rows[first], all_keys[first]


@dataclass
class NgramIndex:
    """A bag's vocabulary: n-gram strings whose position is their id (grams[0] is padding, never matched)."""

    grams: list[str]
    max_n: int
    texts: list[int] = field(default_factory=list)  # per gram, the training texts it is in (empty when loaded)
    _keys: np.ndarray = field(init=False, repr=False)
    _ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        keys = np.fromiter((gram_key(g) for g in self.grams[1:]), dtype=np.int64, count=len(self.grams) - 1)
        order = np.argsort(keys, kind="stable")
        self._keys, self._ids = keys[order], order + 1
        if len(self._keys) > 1 and (self._keys[1:] == self._keys[:-1]).any():
            raise ValueError("duplicate n-grams in the bag's vocabulary")

    @classmethod
    def count(cls, texts: Sequence[str], max_n: int, min_count: int, max_vocab: int, pad: str) -> NgramIndex:
        """`pad`, then the n-grams in at least min_count of `texts` (once per text), most texts first (ties by
        key, so the order is reproducible), at most max_vocab of them."""
        _, keys = distinct_keys(texts, max_n)
        unique, counts = np.unique(keys, return_counts=True)
        kept = counts >= min_count
        unique, counts = unique[kept], counts[kept]
        order = np.lexsort((unique, -counts))[:max_vocab]
        return cls([pad, *(key_gram(int(k)) for k in unique[order])], max_n, [0, *counts[order].tolist()])

    def idf(self, documents: int) -> np.ndarray:
        """Smoothed inverse document frequency of every gram, ln((1 + documents) / (1 + texts)) + 1, as
        scikit-learn's TfidfVectorizer weighs them (the padding row 0 gets 0)."""
        if len(self.texts) != len(self.grams):
            raise ValueError("idf needs the counts of NgramIndex.count")
        idf = np.log((1 + documents) / (1 + np.asarray(self.texts, dtype=np.float64))) + 1
        idf[0] = 0.0
        return idf.astype(np.float32)

    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], float]:
        """Each text's known n-grams as ids (unknown ones left out: a bag has no [UNK]), and the share of
        distinct n-grams that were unknown."""
        rows, keys = distinct_keys(texts, self.max_n)
        where = np.searchsorted(self._keys, keys).clip(max=max(len(self._keys) - 1, 0))
        known = self._keys[where] == keys if len(self._keys) else np.zeros(len(keys), dtype=bool)
        ids = self._ids[where[known]] if len(self._keys) else np.zeros(0, dtype=np.int64)
        bounds = np.searchsorted(rows[known], np.arange(1, len(texts)))
        return np.split(ids, bounds), 1 - known.sum() / len(keys) if len(keys) else 0.0


def bag_matrix(rows: Sequence[np.ndarray], idf: np.ndarray) -> Any:
    """Texts' n-gram ids (NgramIndex.encode) as a scipy CSR matrix [texts, len(idf)]: each present n-gram's
    idf, every row L2-normalised; exactly the features TextCNN's wide part weighs, so a linear model fitted on
    it transfers to that part as it is."""
    from scipy import sparse

    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    columns = np.concatenate(rows) if len(rows) else np.zeros(0, dtype=np.int64)
    values = idf[columns].astype(np.float64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    row = np.repeat(np.arange(len(rows)), lengths)
    values /= np.sqrt(np.bincount(row, weights=values ** 2, minlength=len(rows))).clip(min=1e-6)[row]
    return sparse.csr_matrix((values, columns, indptr), shape=(len(rows), len(idf)))
