"""Reading user text: txt / jsonl / csv / tsv, encodings, normalisation, row accounting.

Files are read as bytes and decoded line by line, so an undecodable line is reported
with its file, line number and byte offset instead of a traceback, and memory stays
flat however large the file is. Every row read is either yielded or counted as
dropped with a reason.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

import charset_normalizer

from ..core.config import option
from ..core.errors import UserError
from ..core.files import DATASET_DIR

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "text_a", "review", "content", "sentence", "comment")
LABEL_COLUMNS = ("label", "labels", "class", "category")
_SAMPLE = 1 << 20
_GB = {"gb2312", "gbk", "gb18030", "hz", "cp936"}
_HALFWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

csv.field_size_limit(1 << 30)  # real corpora have single fields far above csv's 128 KiB default


class Counts:
    """Rows in, rows out and rows dropped by reason: what every stage records in its manifest."""

    def __init__(self) -> None:
        self.rows_in = 0
        self.rows_out = 0
        self.dropped: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "dropped": dict(sorted(self.dropped.items()))}


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


@dataclass(frozen=True)
class Row:
    text: str
    label: str | None
    line: int  # 1-based line where the row starts


def detect_encoding(path: Path) -> str:
    """UTF-8 (BOM or not) when the sample is essentially valid UTF-8, else charset-normalizer's
    guess with every GB family name widened to GB18030 (their superset)."""
    with _open(path) as fh:
        sample = fh.read(_SAMPLE)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{path}: UTF-16 text is not supported; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
    text = sample.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    multibyte = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    # A few bad bytes inside otherwise valid multi-byte UTF-8 mean a damaged UTF-8 file (reported
    # line by line later), not another encoding: GBK text decoded as UTF-8 fails almost everywhere.
    if bad == 0 or multibyte > 20 * bad or (bad <= 4 and multibyte > 2 * bad):
        return "utf-8"
    best = charset_normalizer.from_bytes(sample).best()
    guess = best.encoding if best else "gb18030"  # a Python codec name such as utf_16_le: returned unchanged
    name = guess.lower().replace("_", "")
    # A few GBK characters are often guessed as cp949, cp932 or big5 and would be silently
    # garbled: bytes that read as common simplified Chinese in GB18030 are GB18030.
    if name in _GB or name.startswith("gb") or _reads_as_common_gb(sample):
        return "gb18030"
    if name.startswith(("utf16", "utf32")):  # lines are cut at b"\n" bytes: only ASCII-compatible encodings
        raise UserError(f"{path}: detected {guess}: UTF-16/UTF-32 text is not supported; convert it to UTF-8 "
                        "(iconv -f UTF-16 -t UTF-8), or pass --encoding if the guess is wrong")
    return guess


def _reads_as_common_gb(sample: bytes) -> bool:
    """The sample decodes as GB18030 and (almost) all its non-ASCII characters are in GB2312,
    the common simplified set; Big5 bytes read as GBK land mostly outside it."""
    if len(sample) == _SAMPLE:  # the sample may end inside a character: cut at its last line end
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        wide = [ch for ch in sample.decode("gb18030") if ord(ch) > 0x7F]
    except UnicodeDecodeError:
        return False
    common = sum(1 for ch in wide if _in_gb2312(ch))
    return bool(wide) and common >= 0.95 * len(wide)


def _in_gb2312(ch: str) -> bool:
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def read_rows(path: Path, opts: ReadOptions, counts: Counts, label: str | None = None) -> Iterator[Row]:
    """Rows of one file; `label` (if given) labels every row, as for one-file-per-class corpora."""
    fmt = opts.format if opts.format != "auto" else _format_from_name(path)
    encoding = opts.encoding if opts.encoding != "auto" else detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"{path}: unknown encoding '{encoding}'") from None
    log.info("reading %s as %s (%s)", path, fmt, encoding)
    lines = _decoded_lines(path, encoding, opts.on_decode_error, counts)
    readers: dict[str, Callable[..., Iterator[Row]]] = {"txt": _txt_rows, "jsonl": _jsonl_rows, "csv": _table_rows,
                                                        "tsv": _table_rows}
    table = {"fmt": fmt} if fmt in ("csv", "tsv") else {}
    for row in readers[fmt](lines, path, opts, counts, **table):
        counts.rows_in += 1
        text = _clean(row.text, opts)
        row_label = label if label is not None else row.label
        if text is None or (row_label is not None and _clean(row_label, opts) is None):  # a label too
            counts.drop("invalid_unicode")
        elif not text:
            counts.drop("empty")
        elif row_label is not None and not row_label.strip():
            counts.drop("no_label")
        else:
            counts.rows_out += 1
            yield Row(text, row_label.strip() if row_label is not None else None, row.line)


def _format_from_name(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2")]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext, "txt")


def _open(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if name.endswith(".bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror})") from None


def _records(fh: IO[bytes], skip_bom: bool = False) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) pairs; lines end at \\n, or at \\r in files that never use \\n."""
    first = fh.read(_SAMPLE)
    offset = 0
    if skip_bom and first.startswith(codecs.BOM_UTF8):  # a BOM is no text: a file of only a BOM has no line
        first, offset = first[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    sep = b"\r" if b"\r" in first and b"\n" not in first else b"\n"
    pending, chunk = b"", first
    while chunk:
        parts = (pending + chunk).split(sep)
        pending = parts.pop()
        for part in parts:
            yield offset, part
            offset += len(part) + 1
        chunk = fh.read(_SAMPLE)
    if pending:
        yield offset, pending


def _decoded_lines(path: Path, encoding: str, on_error: str, counts: Counts) -> Iterator[tuple[int, str]]:
    base = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
    utf8 = base.lower().replace("_", "-") in ("utf-8", "utf8")
    with _open(path) as fh:
        for number, (offset, raw) in enumerate(_records(fh, skip_bom=utf8), start=1):
            try:
                text = raw.decode(base)
            except UnicodeDecodeError as exc:
                if on_error == "stop":
                    raise UserError(
                        f"{path}: line {number}, byte offset {offset + exc.start}: cannot decode as {encoding} "
                        f"({raw[exc.start:exc.start + 4]!r}); fix the file, pass --encoding, or --on-decode-error skip"
                    ) from None
                counts.rows_in += 1
                counts.drop("undecodable")
                continue
            yield number, text.rstrip("\r").lstrip("\ufeff")


def _clean(text: str, opts: ReadOptions) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. "\ud800" escapes in JSON) cannot be stored
        return None
    text = text.replace("\r", " ").replace("\n", " ").lstrip("\ufeff")
    if opts.halfwidth:
        text = text.translate(_HALFWIDTH)
    return text.strip()


def _txt_rows(lines, path, opts, counts) -> Iterator[Row]:
    for number, text in lines:
        yield Row(text, None, number)


def _jsonl_rows(lines, path, opts, counts) -> Iterator[Row]:
    text_key = label_key = None
    for number, line in lines:
        if not line.strip():
            counts.rows_in += 1
            counts.drop("empty")
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            counts.rows_in += 1
            counts.drop("malformed")
            continue
        if text_key is None:
            text_key, label_key = _pick_columns(list(record), path, opts)
        value = record.get(text_key)
        label = record.get(label_key) if label_key else None
        # `label or ""` would turn the label 0 (or False) into "" and drop the row as no_label
        label_text = None if label_key is None else "" if label is None else str(label)
        yield Row("" if value is None else str(value), label_text, number)


def _table_rows(lines, path, opts, counts, fmt: str) -> Iterator[Row]:
    if fmt == "csv":
        consumed: list[int] = []  # line numbers read for the record being parsed

        def feed():
            for number, text in lines:
                consumed.append(number)
                yield text + "\n"

        def records():
            for cells in csv.reader(feed()):  # a quoted field may span lines: report the first
                yield consumed[0], cells
                consumed.clear()

        cells_iter = records()
    else:  # TSV: no quoting rules, so a stray '"' in a review cannot swallow the lines after it
        cells_iter = ((number, text.split("\t")) for number, text in lines)
    text_i = label_i = None
    for number, cells in cells_iter:
        if text_i is None:
            if not any(c.strip() for c in cells):
                continue
            names = [c.strip().lstrip("\ufeff") for c in cells] if opts.header else [str(i) for i in range(len(cells))]
            text_i, label_i = _pick_columns(names, path, opts, index=True)
            if opts.header:
                continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):  # csv.reader reads a blank line as []
            counts.rows_in += 1
            counts.drop("empty")
        elif len(cells) <= max(text_i, label_i if label_i is not None else -1):
            counts.rows_in += 1
            counts.drop("malformed")
        else:
            yield Row(cells[text_i], None if label_i is None else cells[label_i], number)


def _pick_columns(names: list[str], path: Path, opts: ReadOptions, index: bool = False):
    def find(wanted: str, what: str, flag: str) -> Any:
        if wanted not in names:
            raise UserError(f"{path}: no {what} column '{wanted}'; columns: {', '.join(names)} (set {flag})")
        return names.index(wanted) if index else wanted

    if opts.text_column:
        text = find(opts.text_column, "text", "--text-column")
    else:
        auto = [n for n in TEXT_COLUMNS if n in names]
        if not auto and (opts.header or not names):  # `{}` as the first JSON record has no column at all
            raise UserError(f"{path}: no text column among {', '.join(names) or 'no columns'}; set --text-column")
        text = find(auto[0] if auto else names[-1], "text", "--text-column")
    if opts.label_column.lower() == "none":
        return text, None
    if opts.label_column:
        return text, find(opts.label_column, "label", "--label-column")
    auto = [n for n in LABEL_COLUMNS if n in names]
    return text, (find(auto[0], "label", "--label-column") if auto and opts.header else None)


def read_texts(paths: list[Path], opts: ReadOptions, counts: Counts, stage: str) -> list[tuple[str, str | None, str]]:
    """(text, label or None, source file name) of every kept row of text files and segment artifacts, in order."""
    rows = []
    for path in paths:
        if not path.is_dir():
            rows += [(row.text, row.label, path.name) for row in read_rows(path, opts, counts)]
            continue
        for batch in segmented_dataset(path, stage).iter(batch_size=1000):
            for text, label in zip(batch["text"], batch.get("label") or [None] * len(batch["text"])):
                counts.rows_in += 1
                if not text.strip():
                    counts.drop("empty")
                    continue
                counts.rows_out += 1
                rows.append((text, label, path.name))
    return rows


def segmented_dataset(artifact: Path, stage: str, keep_in_memory: bool = False) -> Any:
    """The `datasets` dataset of a segment (or augment) artifact: text, words and label columns."""
    import datasets

    folder = artifact / DATASET_DIR
    if not folder.is_dir():
        raise UserError(f"{stage}: {artifact} is not a segment artifact (no {DATASET_DIR}/); pass text files or a segment artifact")
    return datasets.load_from_disk(str(folder), keep_in_memory=keep_in_memory)
