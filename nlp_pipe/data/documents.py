"""Pretraining documents: corpora -> documents (a text, with its sentences or jieba words where known).

Raw text files come in two layouts: one document a line (split into sentences on 。！？!? later,
data/token_stream.py), or BERT's one sentence a line with a blank line between documents (the lines
joined with newlines, each line a sentence). `layout="auto"` looks at the first rows of each file:
blank lines between at least 5% of the rows mean the second layout. A segment artifact gives one
document a row with its jieba words, which are kept so whole-word masking uses exactly the
segmentation the user chose.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from ..core.contract import Counts
from ..core.files import segmented_dataset
from ..text.corpus import ReadOptions, read_rows

Layout = Literal["auto", "line", "blank"]
_SNIFF_ROWS = 2000
_BLANK_SHARE = 0.05
_LAYOUTS = {"line": "one document a line", "blank": "documents separated by blank lines"}
log = logging.getLogger(__name__)


class Document(NamedTuple):
    text: str
    sentences: list[int] | None  # characters where its sentences start; None = split on 。！？ later
    words: np.ndarray | list[str] | None  # jieba words, or their lengths where they cover the text; None = cut later


def detect_layout(path: Path, opts: ReadOptions) -> Literal["line", "blank"]:
    """`blank` when empty lines separate at least 5% of the first rows (BERT's document format)."""
    return _sniff(path, opts)[0]


def _sniff(path: Path, opts: ReadOptions) -> tuple[Literal["line", "blank"], str]:
    """The detected layout and why."""
    rows = list(itertools.islice(read_rows(path, opts, Counts()), _SNIFF_ROWS))
    gaps = sum(1 for a, b in zip(rows, rows[1:]) if b.line > a.line + 1)
    blank = bool(rows) and gaps >= _BLANK_SHARE * len(rows)
    return ("blank" if blank else "line"), (f"{gaps} of its first {len(rows)} rows follow a blank line, "
                                            f"{'at least' if blank else 'under'} {_BLANK_SHARE:.0%}")


def file_documents(path: Path, opts: ReadOptions, layout: Layout, counts: Counts) -> Iterator[Document]:
    """Documents of one raw text file; rows are counted in `counts` by the reader. A detected layout is logged
    with its reason; blank-line documents also as a notice in the manifest, since they decide the sentence pairs."""
    if layout == "auto":
        layout, why = _sniff(path, opts)
        other = "line" if layout == "blank" else "blank"
        said = f"{path.name}: read as {_LAYOUTS[layout]} ({why}); --layout {other} reads it as {_LAYOUTS[other]}"
        if layout == "blank":
            counts.notice(said)
        else:
            log.info(said)
    if layout == "line":
        for row in read_rows(path, opts, counts):
            if row.text.strip():
                yield Document(row.text, None, None)
        return
    sentences: list[str] = []
    last_line, separators = None, 0
    for row in read_rows(path, opts, counts):
        if sentences and last_line is not None and row.line > last_line + 1:  # a blank line ends a document
            yield _joined(sentences)
            sentences, separators = [], separators + 1
        sentences.append(row.text)
        last_line = row.line
    if sentences:
        yield _joined(sentences)
    # the reader counted the blank lines as dropped empty rows: here they are document separators
    moved = min(separators, counts.dropped.get("empty", 0))
    if moved:
        counts.dropped["empty"] -= moved
        counts.drop("document_separator", moved)
        if not counts.dropped["empty"]:
            del counts.dropped["empty"]


def _joined(lines: list[str]) -> Document:
    starts = list(itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
    return Document("\n".join(lines), starts, None)


def artifact_documents(path: Path, counts: Counts, stage: str = "pretrain") -> Iterator[Document]:
    """Documents of a segment artifact: one a row, with the artifact's jieba words as their lengths (read
    with pyarrow, no Python string a word) where they cover the text or all of it but its whitespace, else
    as the words themselves."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in _record_batches(segmented_dataset(path, stage)):
        words = batch.column("words")
        if isinstance(words, pa.ChunkedArray):
            words = words.combine_chunks()
        lengths = pc.utf8_length(words.flatten()).to_numpy(zero_copy_only=False)
        offsets = words.offsets.to_numpy()
        offsets = offsets - offsets[0]
        for i, text in enumerate(batch.column("text").to_pylist()):
            counts.rows_in += 1
            if not text.strip():
                counts.drop("empty")
                continue
            counts.rows_out += 1
            mine = lengths[offsets[i]:offsets[i + 1]]
            total = int(mine.sum())
            covered = total == len(text) or total == len("".join(text.split()))
            yield Document(text, None, mine if covered else words[i].as_py())


def _record_batches(dataset: Any) -> Iterator[Any]:
    """The text and words of a saved dataset's Arrow files, read batch by batch with plain reads: memory-mapping
    them (datasets' way) counts every page read as this process's memory in a container (3.4 GB RSS at 1 GB of text)."""
    import pyarrow as pa

    if dataset._indices is not None:  # not what save_to_disk writes; kept correct for any other dataset
        yield from dataset.select_columns(["text", "words"]).with_format("arrow").iter(batch_size=1000)
        return
    for file in dataset.cache_files:
        with pa.OSFile(file["filename"]) as fh:
            for batch in pa.ipc.open_stream(fh):
                yield batch.select(["text", "words"])


def documents(paths: list[Path], opts: ReadOptions, layout: Layout, counts: Counts, stage: str = "pretrain") -> Iterator[Document]:
    """Every document of every corpus input, files and segment artifacts alike (`stage` names the caller in errors)."""
    for path in paths:
        if path.is_dir():
            yield from artifact_documents(path, counts, stage)
        else:
            yield from file_documents(path, opts, layout, counts)
