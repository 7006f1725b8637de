"""Segmented texts as word-id rows for TextCNN (and character-id and character-n-gram-id rows), and their batches.

Rows are kept unpadded; a batch is padded to its own longest row (at least the widest kernel), and the
Trainer groups similar lengths into batches, so little compute goes to padding. torch is imported only
by the functions that make tensors: an exported TextCNN encodes its texts here on onnxruntime, without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .ngram_bag import NgramIndex, bag_text

if TYPE_CHECKING:
    import torch

PAD_ID, UNK_ID = 0, 1  # rows 0 and 1 of every TextCNN vocabulary: [PAD], [UNK]


@dataclass
class WordIds:
    """Texts as word-id arrays (ragged) with their class ids, and the share of words that were unknown."""

    ids: list[np.ndarray]
    labels: np.ndarray  # class ids; -1 for unlabelled texts
    oov_rate: float

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.ids[i], int(self.labels[i])

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r) for r in self.ids), dtype=np.int64, count=len(self.ids))

    def select(self, index: Sequence[int] | np.ndarray) -> WordIds:
        return WordIds([self.ids[i] for i in index], self.labels[np.asarray(index, dtype=np.int64)], self.oov_rate)


def encode(texts: Sequence[Sequence[str]], index: dict[str, int], max_len: int, labels: np.ndarray | None = None) -> WordIds:
    """Each text's first max_len words as vocabulary ids ([UNK] for unknown words)."""
    total = unknown = 0
    rows = []
    for words in texts:
        ids = np.fromiter((index.get(w, UNK_ID) for w in words[:max_len]), dtype=np.int64, count=min(len(words), max_len))
        total += len(ids)
        unknown += int((ids == UNK_ID).sum())
        rows.append(ids)
    labels = np.full(len(rows), -1, dtype=np.int64) if labels is None else labels
    return WordIds(rows, labels, unknown / total if total else 0.0)


def pad_array(rows: Sequence[np.ndarray], min_len: int = 1) -> np.ndarray:
    """[rows, longest row (at least min_len)] int64 ids, PAD_ID after each row's end."""
    width = max(min_len, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def pad(rows: Sequence[np.ndarray], min_len: int = 1) -> torch.Tensor:
    """pad_array as a tensor."""
    import torch

    return torch.from_numpy(pad_array(rows, min_len))


class Collator:
    """(ids, label) rows -> {"input_ids", "attention_mask", "labels"} for the Trainer."""

    def __init__(self, min_len: int) -> None:
        self.min_len = min_len

    def __call__(self, rows: list[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
        import torch

        input_ids = pad([ids for ids, _ in rows], self.min_len)
        return {"input_ids": input_ids, "attention_mask": (input_ids != PAD_ID).long(),
                "labels": torch.as_tensor([label for _, label in rows], dtype=torch.long)}


def text_chars(text: str) -> list[str]:
    """The characters a char stream reads: every character of the raw text but whitespace."""
    return list(bag_text(text))


Row = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # (word ids, char ids, n-gram ids) of one text
STREAM_KEYS = ("input_ids", "char_ids", "ngram_ids")  # the model's argument for each position of a Row


@dataclass
class TextIds:
    """Texts as up to three streams (words, characters, a bag of character n-grams), one row each per text,
    with their class ids. Rows are ((word ids, char ids, n-gram ids), label); a stream that is not used is None."""

    words: WordIds | None
    chars: WordIds | None
    ngrams: WordIds | None = None

    @property
    def streams(self) -> tuple[WordIds | None, WordIds | None, WordIds | None]:
        return self.words, self.chars, self.ngrams

    @property
    def main(self) -> WordIds:
        stream = self.chars if self.chars is not None else self.words
        if stream is None:
            raise ValueError("TextIds needs a word or a character stream")
        return stream

    @property
    def labels(self) -> np.ndarray:
        return self.main.labels

    @property
    def lengths(self) -> np.ndarray:
        """Lengths of the longer convolved stream (characters when present): what batches are grouped by."""
        return self.main.lengths

    def __len__(self) -> int:
        return len(self.main)

    def __getitem__(self, i: int) -> tuple[Row, int]:
        a, b, c = (s.ids[i] if s is not None else None for s in self.streams)
        return (a, b, c), int(self.labels[i])

    def select(self, index: Sequence[int] | np.ndarray) -> TextIds:
        return TextIds(*(s.select(index) if s is not None else None for s in self.streams))

    def concat(self, other: TextIds) -> TextIds:
        def join(a: WordIds | None, b: WordIds | None) -> WordIds | None:
            return None if a is None or b is None else WordIds(a.ids + b.ids, np.concatenate([a.labels, b.labels]), a.oov_rate)
        return TextIds(*(join(a, b) for a, b in zip(self.streams, other.streams)))


@dataclass
class TextEncoder:
    """Words and raw texts -> TextIds with the vocabularies and cut lengths of one model (None: stream unused)."""

    words: dict[str, int] | None
    chars: dict[str, int] | None
    max_len: int
    char_max_len: int
    ngrams: NgramIndex | None = None

    def __call__(self, words: Sequence[Sequence[str]] | None, texts: Sequence[str] | None,
                 labels: np.ndarray | None = None) -> TextIds:
        if (self.words is not None and words is None) or ((self.chars is not None or self.ngrams is not None) and texts is None):
            raise ValueError("TextEncoder: a stream's input is missing")
        bag = None
        if self.ngrams is not None and texts is not None:
            rows, unknown = self.ngrams.encode(texts)
            bag = WordIds(rows, np.full(len(rows), -1, dtype=np.int64) if labels is None else labels, unknown)
        return TextIds(encode(words, self.words, self.max_len, labels) if self.words is not None and words is not None else None,
                       encode([text_chars(t) for t in texts], self.chars, self.char_max_len, labels)
                       if self.chars is not None and texts is not None else None, bag)


def stream_arrays(rows: Sequence[Row], min_len: int) -> dict[str, np.ndarray]:
    """{"input_ids", "char_ids", "ngram_ids"} (those present) for rows of streams, each padded on its own
    (the convolved ones to at least min_len; a bag needs no width)."""
    out = {}
    for position, key in enumerate(STREAM_KEYS):
        if rows and rows[0][position] is not None:
            out[key] = pad_array([r[position] for r in rows], min_len if key != "ngram_ids" else 1)  # type: ignore[misc]
    return out


def stream_batch(rows: Sequence[Row], min_len: int) -> dict[str, torch.Tensor]:
    """stream_arrays as tensors."""
    import torch

    return {key: torch.from_numpy(value) for key, value in stream_arrays(rows, min_len).items()}


class StreamCollator:
    """(streams, label) rows -> {"input_ids"?, "char_ids"?, "ngram_ids"?, "labels"} for the Trainer."""

    def __init__(self, min_len: int) -> None:
        self.min_len = min_len

    def __call__(self, rows: list[tuple[Row, int]]) -> dict[str, torch.Tensor]:
        import torch

        return {**stream_batch([ids for ids, _ in rows], self.min_len),
                "labels": torch.as_tensor([label for _, label in rows], dtype=torch.long)}
