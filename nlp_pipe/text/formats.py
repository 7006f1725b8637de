"""Rows of decoded lines for each file format: txt (a line a row), jsonl, csv and tsv, and column choice.

Each parser turns (line number, text) pairs into Rows and counts what it cannot use (empty, malformed)
with the line where it happened. CSV is parsed a line at a time: a quoted field may span lines, but an
opening quote whose continuation lines read as complete rows of their own is an unterminated quote, so
that line is malformed; the rows after it are not swallowed into its text.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ..core.config import option
from ..core.contract import Counts
from ..core.errors import UserError

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "text_a", "review", "content", "sentence", "comment")
LABEL_COLUMNS = ("label", "labels", "class", "category", "sentiment", "polarity", "emotion", "target", "y")
# columns that usually hold a label: a file that has one besides the label used gets a notice
LIKELY_LABELS = (*LABEL_COLUMNS, "cat", "tag", "tags", "topic", "score", "rating", "stars", "intent")
_MAX_QUOTED_LINES = 200  # a quoted field spanning more lines than this is an unterminated quote

Lines = Iterable[tuple[int, str]]


@dataclass(frozen=True)
class ReadOptions:
    """How to read a corpus file; stage configs that read raw text inherit these fields."""

    format: Literal["auto", "txt", "jsonl", "csv", "tsv"] = option("auto",
                                                                   "file format; auto = from the extension (.txt .jsonl .csv .tsv, "
                                                                       "optionally .gz/.bz2)")
    text_column: str = option("", "column (name, or 0-based index without header) holding the text; empty = auto (text, text_a, review, "
                              "...)")
    label_column: str = option("", "column holding the label; empty = auto ('label' when present), 'none' = unlabelled")
    header: bool = option(True, "csv/tsv files start with a header row")
    encoding: str = option("auto", "file encoding; auto detects UTF-8 (with or without BOM) and GB18030/GBK")
    halfwidth: bool = option(False, "map full-width ASCII forms and the ideographic space to half-width")
    on_decode_error: Literal["stop", "skip"] = option("stop", "an undecodable line stops the run (stop) or is dropped and counted (skip)")
    max_bad_rows: float = option(0.05, "stop when more than this share of a file's rows (and more than 3) is undecodable or "
                                       "malformed: a wrong format or encoding, not a few bad lines", min=0.0, max=1.0)


class Row(NamedTuple):
    """A row read (a tuple: made twice for each row read, in half the time of a frozen dataclass)."""

    text: str
    label: str | None
    line: int  # 1-based line where the row starts


def txt_rows(lines: Lines, path: Path, opts: ReadOptions, counts: Counts) -> Iterator[Row]:
    for number, text in lines:
        yield Row(text, None, number)


def jsonl_rows(lines: Lines, path: Path, opts: ReadOptions, counts: Counts,
               columns: tuple[str, str | None] | None = None) -> Iterator[Row]:
    """`columns`: the text and label keys, when the lines are not the file's first (picked from its first record)."""
    text_key, label_key = columns or (None, None)
    for number, line in lines:
        if not line.strip():
            counts.rows_in += 1
            counts.drop("empty", where=f"{path.name}:{number}")
            continue
        record = _record(line)
        if record is None:
            counts.rows_in += 1
            counts.drop("malformed", where=f"{path.name}:{number}")
            continue
        if text_key is None:
            text_key, label_key = pick_columns(list(record), path, opts, counts)
        value = record.get(text_key)
        label = record.get(label_key) if label_key else None
        # `label or ""` would turn the label 0 (or False) into "" and drop the row as no_label
        label_text = None if label_key is None else "" if label is None else str(label)
        yield Row("" if value is None else str(value), label_text, number)


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def jsonl_columns(lines: Lines, path: Path, opts: ReadOptions) -> tuple[int, tuple[str, str | None]] | None:
    """The line of the first record of `lines` and the text and label keys `jsonl_rows` picks from it; None when
    there is none."""
    for number, line in lines:
        if line.strip() and (record := _record(line)) is not None:
            return number, pick_columns(list(record), path, opts, Counts())
    return None


def table_rows(lines: Lines, path: Path, opts: ReadOptions, counts: Counts, fmt: str) -> Iterator[Row]:
    records = _csv_records(lines, path, counts) if fmt == "csv" else ((n, text.split("\t")) for n, text in lines)
    text_i = label_i = None
    width = 0
    for number, cells in records:
        if text_i is None:
            if not any(c.strip() for c in cells):
                continue
            names = [c.strip().lstrip("\ufeff") for c in cells] if opts.header else [str(i) for i in range(len(cells))]
            text_i, label_i = pick_columns(names, path, opts, counts, index=True)
            width = len(names)
            if opts.header:
                continue
        if fmt == "tsv" and text_i == width - 1 and len(cells) > width:  # TSV has no quoting: the last column keeps its tabs
            cells = cells[: width - 1] + ["\t".join(cells[width - 1:])]
        if not cells or (len(cells) == 1 and not cells[0].strip()):  # csv.reader reads a blank line as []
            counts.rows_in += 1
            counts.drop("empty", where=f"{path.name}:{number}")
        elif len(cells) != width:
            counts.rows_in += 1
            counts.drop("malformed", where=f"{path.name}:{number}")  # ragged: which cell is which is a guess
        else:
            yield Row(cells[text_i], None if label_i is None else cells[label_i], number)


def _csv_records(lines: Lines, path: Path, counts: Counts) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each CSV record; an unterminated quote makes its line a malformed row."""
    source = iter(lines)
    replay: deque[tuple[int, str]] = deque()  # lines to parse again after an unterminated quote
    width = None
    while True:
        item = replay.popleft() if replay else next(source, None)
        if item is None:
            return
        number, text = item
        cells = _parse(text)
        if cells is not None:
            width = width or len(cells)
            yield number, cells
            continue
        block = [item]  # an open quoted field: join the lines that close it
        while cells is None:
            nxt = replay.popleft() if replay else next(source, None)
            if nxt is not None and len(block) <= _MAX_QUOTED_LINES:
                # A line that reads as a record by itself may still close the quote (csv.writer's `"\n0",pos`
                # is the lines `"` and `0",pos`): a join that parses strictly, with the file's width, wins.
                joined = _parse_strict("\n".join(t for _, t in block + [nxt]))
                if joined is not None and (width is None or len(joined) == width):
                    block.append(nxt)
                    cells = joined
                    break
            if nxt is None or len(block) > _MAX_QUOTED_LINES or (width and _is_record(nxt[1], width)):
                counts.rows_in += 1
                counts.drop("malformed", where=f"{path.name}:{number}")
                log.warning("%s: line %d opens a quote that never closes; counted as malformed", path, number)
                replay.extendleft(reversed(block[1:] + ([nxt] if nxt is not None else [])))
                break
            block.append(nxt)
            cells = _parse("\n".join(t for _, t in block))
        if cells is not None:
            width = width or len(cells)
            yield number, cells


def _parse(text: str) -> list[str] | None:
    """The cells of one complete record; None when a quoted field is still open at the end."""
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return None
        return next(csv.reader([text]), [])  # other quirks (text after a closing quote): csv's lenient reading


def _parse_strict(text: str) -> list[str] | None:
    """The cells of one complete record read strictly (as csv.writer writes); None otherwise."""
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error:
        return None


def _is_record(text: str, width: int) -> bool:
    cells = _parse(text)
    return cells is not None and len(cells) == width and width > 1


def pick_columns(names: list[str], path: Path, opts: ReadOptions, counts: Counts, index: bool = False) -> tuple[Any, Any]:
    """The text and label columns (names, or indices with `index`), recorded in `counts`."""
    def find(wanted: str, what: str, flag: str) -> Any:
        if wanted not in names:
            raise UserError(f"{path}: no {what} column '{wanted}'; columns: {', '.join(names)} (set {flag})")
        return names.index(wanted) if index else wanted

    if opts.text_column:
        text_name = opts.text_column
    else:
        auto = [n for n in TEXT_COLUMNS if n in names]
        if not auto and (opts.header or not names):  # `{}` as the first JSON record has no column at all
            raise UserError(f"{path}: no text column among {', '.join(names) or 'no columns'}; set --text-column")
        text_name = auto[0] if auto else names[-1]
    label_name = None
    if opts.label_column and opts.label_column.lower() != "none":
        label_name = opts.label_column
    elif not opts.label_column and opts.header:
        label_name = next((n for n in LABEL_COLUMNS if n in names), None)
    text, label = find(text_name, "text", "--text-column"), find(label_name, "label", "--label-column") if label_name else None
    unused = [n for n in names if n.lower() in LIKELY_LABELS and n not in (text_name, label_name)]
    counts.columns[path.name] = {"text": text_name, "label": label_name, **({"unused_label_like": unused} if unused else {})}
    log.info("%s: text column '%s', label column %s", path, text_name, f"'{label_name}'" if label_name else "none")
    if unused:
        counts.notice(f"{path.name}: column(s) {', '.join(unused)} look like labels but are not used "
                      f"(label column: {label_name or 'none'}); choose one with --label-column")
    return text, label
