"""Pretraining documents: corpora -> documents (lists of sentences, with jieba words where known).

Raw text files come in two layouts: one document a line (split into sentences on 。！？!?), or
BERT's one sentence a line with a blank line between documents. `layout="auto"` looks at the
first rows of each file: blank lines between at least 5% of the rows mean the second layout.
A segment artifact gives one document a row with its jieba words, which are kept (split at the
same sentence boundaries) so whole-word masking uses exactly the segmentation the user chose.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import datasets

from ..text.corpus import Counts, ReadOptions, read_rows, segmented_dataset

Layout = Literal["auto", "line", "blank"]
FEATURES = datasets.Features({
    "sentences": datasets.Sequence(datasets.Value("string")),
    "words": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),  # [] = segment with jieba later
})
_SENTENCE_END = re.compile(r"[。！？!?]+[”’\"'」』）)】》]*")  # closing quotes stay with their sentence
_SNIFF_ROWS = 2000
_BLANK_SHARE = 0.05


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, cut after 。！？!? (and any closing quotes or brackets that follow)."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start:match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_words(text: str, words: list[str]) -> tuple[list[str], list[list[str]]]:
    """Sentences of `text` and the words of each; a word goes to the sentence where it starts.

    Words that cannot be found in the text in order (a segmentation of other text) are dropped,
    which only makes whole-word masking treat their characters as single-character words.
    """
    sentences = split_sentences(text)
    ends, pos = [], 0
    for sentence in sentences:
        pos = text.index(sentence, pos) + len(sentence)
        ends.append(pos)
    per_sentence: list[list[str]] = [[] for _ in sentences]
    pos, current = 0, 0
    for word in words:
        found = text.find(word, pos)
        if found < 0:
            continue
        while current < len(ends) - 1 and found >= ends[current]:
            current += 1
        per_sentence[current].append(word)
        pos = found + len(word)
    return sentences, per_sentence


def detect_layout(path: Path, opts: ReadOptions) -> Literal["line", "blank"]:
    """`blank` when empty lines separate at least 5% of the first rows (BERT's document format)."""
    rows = list(itertools.islice(read_rows(path, opts, Counts()), _SNIFF_ROWS))
    gaps = sum(1 for a, b in zip(rows, rows[1:]) if b.line > a.line + 1)
    return "blank" if rows and gaps >= _BLANK_SHARE * len(rows) else "line"


def file_documents(path: Path, opts: ReadOptions, layout: Layout, counts: Counts) -> Iterator[dict]:
    """Documents of one raw text file; rows are counted in `counts` by the reader."""
    if layout == "auto":
        layout = detect_layout(path, opts)
    if layout == "line":
        for row in read_rows(path, opts, counts):
            yield {"sentences": split_sentences(row.text), "words": []}
        return
    sentences: list[str] = []
    last_line, separators = None, 0
    for row in read_rows(path, opts, counts):
        if sentences and last_line is not None and row.line > last_line + 1:  # a blank line ends a document
            yield {"sentences": sentences, "words": []}
            sentences, separators = [], separators + 1
        sentences.append(row.text)
        last_line = row.line
    if sentences:
        yield {"sentences": sentences, "words": []}
    # the reader counted the blank lines as dropped empty rows: here they are document separators
    moved = min(separators, counts.dropped.get("empty", 0))
    if moved:
        counts.dropped["empty"] -= moved
        counts.drop("document_separator", moved)
        if not counts.dropped["empty"]:
            del counts.dropped["empty"]


def artifact_documents(path: Path, counts: Counts) -> Iterator[dict]:
    """Documents of a segment artifact: one a row, with the artifact's jieba words."""
    table = segmented_dataset(path, "pretrain")
    for batch in table.iter(batch_size=1000):
        for text, words in zip(batch["text"], batch["words"]):
            counts.rows_in += 1
            sentences, per_sentence = split_words(text, words)
            if not sentences:
                counts.drop("empty")
                continue
            counts.rows_out += 1
            yield {"sentences": sentences, "words": per_sentence}


def documents(paths: list[Path], opts: ReadOptions, layout: Layout, counts: Counts) -> Iterator[dict]:
    """Every document of every corpus input, files and segment artifacts alike."""
    for path in paths:
        if path.is_dir():
            yield from artifact_documents(path, counts)
        else:
            yield from file_documents(path, opts, layout, counts)
