"""Reading user text: txt / jsonl / csv / tsv, encodings, normalisation, row accounting.

Files are read as bytes and decoded line by line (nlp_pipe.text.encoding), so an undecodable line is
reported with its file, line number and byte offset instead of a traceback, and memory stays flat
however large the file is. Each format's parser (nlp_pipe.text.formats) yields rows; every row read
is either yielded or counted as dropped with a reason and the line where it happened. A file whose
bad rows pass `max_bad_rows` stops the stage: that is a wrong format or encoding, not noise.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..core.contract import Counts
from ..core.errors import UserError
from ..core.files import segmented_dataset
from .encoding import SAMPLE, check_forced, detect_encoding, open_binary, reading, records
from .formats import ReadOptions, Row, jsonl_columns, jsonl_rows, table_rows, txt_rows
from .normalization import to_halfwidth

log = logging.getLogger(__name__)

__all__ = ["BytesRead", "Checkpoint", "Counts", "ReadOptions", "Row", "Span", "SpanCounts", "SpanRead", "detect_encoding",
           "read_rows", "read_texts", "split_lines"]
_BAD = ("undecodable", "malformed", "invalid_unicode")
_CHECK_EVERY = 10_000  # rows between two checks of the bad-row share while reading
# what an undecodable line's error suggests: the stages reading corpora have both options; other callers
# (`nlp-pipe predict`) name only what their command has
_DECODE_HINT = "fix the file, pass --encoding, or --on-decode-error skip"


class BytesRead:
    """The bytes of the files `read_rows` has read so far (pass it as `read`): what a progress bar over the
    files' sizes should show, in their own encoding (their text re-encoded as UTF-8 overshot a GBK file's size
    by half). Compressed files count their decompressed bytes."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n


def read_rows(path: Path, opts: ReadOptions, counts: Counts, label: str | None = None,
              decode_hint: str = _DECODE_HINT, read: BytesRead | None = None, span: Span | None = None,
              checkpoints: list[Checkpoint] | None = None) -> Iterator[Row]:
    """Rows of one file; `label` (if given) labels every row, as for one-file-per-class corpora.

    With `span` (from `split_lines`), only its lines, numbered as in the whole file; the share of bad rows is
    then not checked here but recorded in `checkpoints` at each point where reading the whole file checks it
    (`SpanCounts` raises what that would have raised, once the spans before are known)."""
    if span is None:
        fmt, encoding = _resolved(path, opts)
    else:
        fmt, encoding = span.fmt, span.encoding
    if span is None or span.start == 0:
        log.info("reading %s as %s (%s)", path, fmt, encoding)
    lines = _decoded_lines(path, encoding, opts.on_decode_error, counts, decode_hint, read or BytesRead(), span)
    parsers: dict[str, Callable[..., Iterator[Row]]] = {"txt": txt_rows, "jsonl": jsonl_rows, "csv": table_rows, "tsv": table_rows}
    table: dict[str, Any] = {"fmt": fmt} if fmt in ("csv", "tsv") else {}
    if span is not None and span.columns and not span.picks:
        table["columns"] = span.columns  # picked (and recorded) by the span that holds the file's first record
    start_in, start_bad = counts.rows_in, counts.bad(_BAD)
    decoded = fmt != "jsonl"  # text decoded from bytes as it is (JSON's escapes can make lone surrogates)
    before = span.line - 1 if span else 0  # the file's rows before the span (one a line in a txt file)
    overridden = span is not None and not span.picks  # said at the file's first record (a txt file's rows have no label)
    for row in parsers[fmt](lines, path, opts, counts, **table):
        counts.rows_in += 1
        text = _clean(row.text, opts, decoded)
        row_label = label if label is not None else row.label
        if label is not None and row.label is not None and not overridden:
            overridden = True  # said once a file: the file's own labels are not used
            log.warning("%s has a label column; --label-per-file labels all its rows '%s' instead", path, label)
        # a label too (--label-per-file's may hold the surrogates Python makes of undecodable argv bytes)
        if text is None or (row_label is not None and _clean(row_label, opts, decoded and label is None) is None):
            counts.drop("invalid_unicode", where=f"{path.name}:{row.line}")
        elif not text:
            counts.drop("empty", where=f"{path.name}:{row.line}")
        elif row_label is not None and not row_label.strip():
            counts.drop("no_label", where=f"{path.name}:{row.line}")
        else:
            counts.rows_out += 1
            yield Row(text, row_label.strip() if row_label is not None else None, row.line)
        if (before + counts.rows_in - start_in) % _CHECK_EVERY == 0:
            if checkpoints is None:
                _check_bad_share(path, opts, fmt, encoding, counts, counts.rows_in - start_in, counts.bad(_BAD) - start_bad)
            else:
                checkpoints.append(Checkpoint(before + counts.rows_in - start_in, {r: counts.dropped[r] for r in _BAD}))
    if checkpoints is None:
        _check_bad_share(path, opts, fmt, encoding, counts, counts.rows_in - start_in, counts.bad(_BAD) - start_bad)


def _resolved(path: Path, opts: ReadOptions) -> tuple[str, str]:
    """The file's format and encoding (`opts`' own, or found from the name and the bytes), checked."""
    fmt = opts.format if opts.format != "auto" else _format_from_name(path)
    encoding = opts.encoding if opts.encoding != "auto" else detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"{path}: unknown encoding '{encoding}'") from None
    if opts.encoding != "auto":
        check_forced(path, encoding)
    return fmt, encoding


def _check_bad_share(path: Path, opts: ReadOptions, fmt: str, encoding: str, counts: Counts, rows: int, bad: int) -> None:
    """Stop at a file whose `bad` of `rows` read so far are too many; `counts` (all files so far) names them."""
    if bad > 3 and bad > opts.max_bad_rows * rows:
        reasons = ", ".join(f"{counts.dropped[r]} {r}" for r in _BAD if counts.dropped[r])
        first = "; first at " + ", ".join(counts.where[r][0] for r in _BAD if counts.where.get(r)) if counts.where else ""
        raise UserError(f"{path}: {bad} of {rows} rows read so far are unusable ({reasons}{first}), more than "
                        f"max_bad_rows = {opts.max_bad_rows:.0%}: read as {fmt} in {encoding}, is that the right format "
                        "(--format) and encoding (--encoding)? Raise --max-bad-rows to keep going anyway")


@dataclass(frozen=True)
class Span:
    """Whole lines of one txt or jsonl file, read on their own: bytes [start, end), the first of them line `line`."""

    start: int
    end: int
    line: int
    encoding: str
    last: bool  # the file's last span: its whole-file check comes after it
    columns: tuple[str, str | None] | None = None  # a jsonl file's text and label keys, from its first record
    picks: bool = False  # holds that first record: picks the keys there (recording them, warning), as a whole read does

    @property
    def fmt(self) -> str:
        return "jsonl" if self.columns else "txt"


@dataclass(frozen=True)
class Checkpoint:
    """Where reading a whole file checks its share of bad rows: after `rows` of its rows, the span's bad rows then."""

    rows: int
    bad: dict[str, int]


# Encodings in which the byte \n is only ever a line end (never inside a character, as in UTF-16)
_SPLITTABLE = {"utf-8", "utf8", "utf-8-sig", "utf8-sig", "gb18030"}


def split_lines(paths: list[Path], opts: ReadOptions, parts: int) -> list[list[tuple[int, Span]]] | None:
    """`paths` as `parts` runs of whole lines of about equal size, in input order, each a list of (file index, Span),
    for processes that each read their own run; None when a file cannot be read from a byte offset on, or when
    checking it fails (the plain reader then reports that in input order): a compressed file, csv or tsv (a quoted
    field spans lines), lines that end in \r alone, an encoding other than UTF-8 or GB18030, a jsonl file with no
    record in its first MiB (its text and label keys come from its first record). The line numbers where the runs
    start are counted here, one pass over the bytes before each cut (bytes.count: about 1 ms a MB)."""
    sizes, encodings, columns, firsts = [], [], [], []
    for path in paths:
        try:
            fmt, encoding = _resolved(path, opts)
            with open_binary(path) as fh:
                head = fh.read(SAMPLE)
            first = _first_columns(path, opts, encoding) if fmt == "jsonl" else None
        except UserError:
            return None
        if fmt not in ("txt", "jsonl") or (fmt == "jsonl" and first is None) or path.name.lower().endswith((".gz", ".bz2")) \
                or encoding.lower().replace("_", "-") not in _SPLITTABLE or (b"\r" in head and b"\n" not in head):
            return None
        sizes.append(path.stat().st_size)
        encodings.append(encoding)
        columns.append(first[1] if first else None)
        firsts.append(first[0] if first else 0)
    total = sum(sizes)
    cuts = [total * k // parts for k in range(1, parts)]  # where each run after the first should start, in all bytes
    runs: list[list[tuple[int, Span]]] = [[]]
    offset = 0
    for i, (path, size, encoding, keys, first_line) in enumerate(zip(paths, sizes, encodings, columns, firsts)):
        start, line = 0, 1
        with open(path, "rb") as fh:
            while cuts and cuts[0] < offset + size:
                at = _line_start(fh, max(start, cuts.pop(0) - offset))
                if at > start:
                    fh.seek(start)
                    lines = _count_newlines(fh, at - start)
                    picks = line <= first_line < line + lines
                    runs[-1].append((i, Span(start, at, line, encoding, at == size, keys, picks)))
                    line += lines
                    start = at
                if runs[-1]:
                    runs.append([])
        if start < size:
            runs[-1].append((i, Span(start, size, line, encoding, True, keys, line <= first_line)))
        offset += size
    return [run for run in runs if run]


def _first_columns(path: Path, opts: ReadOptions, encoding: str) -> tuple[int, tuple[str, str | None]] | None:
    """The line of a jsonl file's first record and the text and label keys it gives (as reading the file whole picks
    them); None when its first MiB has no record (the plain reader then says what is wrong)."""
    lines = _decoded_lines(path, encoding, "skip", Counts(), "", BytesRead(), Span(0, SAMPLE, 1, encoding, False))
    return jsonl_columns(lines, path, opts)


def _line_start(fh: IO[bytes], at: int) -> int:
    """The offset of the first line that starts at or after `at` (the file's size when none does)."""
    if at == 0:
        return 0
    fh.seek(at - 1)
    while block := fh.read(SAMPLE):
        if (i := block.find(b"\n")) >= 0:
            return fh.tell() - len(block) + i + 1
    return fh.tell()


def _count_newlines(fh: IO[bytes], n: int) -> int:
    count = 0
    while n > 0 and (block := fh.read(min(n, 8 * SAMPLE))):
        count += block.count(b"\n")
        n -= len(block)
    return count


@dataclass
class SpanRead:
    """What reading one Span gave (in the process that read it): its rows' counts, its checkpoints, and the error
    that stopped it, if one did."""

    file: int
    span: Span
    counts: Counts = field(default_factory=Counts)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    error: UserError | None = None


class SpanCounts:
    """The counts of spans read in several processes, added in input order, raising what reading the files whole in
    one process would have raised, at the same row: a checkpoint's share of bad rows, a span's own error, a whole
    file's share at its end. Every process reads on after the others' first error, so only this order says which
    error a user sees first."""

    def __init__(self, paths: list[Path], opts: ReadOptions, counts: Counts) -> None:
        self.paths, self.opts, self.counts = paths, opts, counts
        self._file_rows = self._file_bad = 0  # of the current file's spans added so far

    def add(self, read: SpanRead) -> None:
        path, span = self.paths[read.file], read.span
        if span.start == 0:
            self._file_rows = self._file_bad = 0
        for point in read.checkpoints:
            seen = Counts()
            seen.dropped.update(self.counts.dropped)
            seen.dropped.update(point.bad)
            for reason in _BAD:  # the first line of each reason: from the rows before the span, else from the span
                first = self.counts.where.get(reason) or (read.counts.where.get(reason) if point.bad.get(reason) else None)
                if first:
                    seen.where[reason] = first
            _check_bad_share(path, self.opts, span.fmt, span.encoding, seen, point.rows, self._file_bad + sum(point.bad.values()))
        if read.error is not None:
            raise read.error
        self.counts.absorb(read.counts)
        self._file_rows += read.counts.rows_in
        self._file_bad += read.counts.bad(_BAD)
        if span.last:
            _check_bad_share(path, self.opts, span.fmt, span.encoding, self.counts, self._file_rows, self._file_bad)


def _format_from_name(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2")]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext, "txt")


def _decoded_lines(path: Path, encoding: str, on_error: str, counts: Counts, hint: str,
                   read: BytesRead, span: Span | None = None) -> Iterator[tuple[int, str]]:
    base = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
    utf8 = base.lower().replace("_", "-") in ("utf-8", "utf8")
    start, end, first = (span.start, span.end, span.line) if span else (0, None, 1)
    with reading(path) as fh:  # a truncated .gz/.bz2, a read error: one line
        for number, (offset, raw) in enumerate(records(fh, skip_bom=utf8, start=start, end=end), start=first):
            read.add(len(raw))
            try:
                text = raw.decode(base)
            except UnicodeDecodeError as exc:
                if on_error == "stop":
                    raise UserError(
                        f"{path}: line {number}, byte offset {offset + exc.start}: cannot decode as {encoding} "
                        f"({raw[exc.start:exc.start + 4]!r}); {hint}"
                    ) from None
                counts.rows_in += 1
                counts.drop("undecodable", where=f"{path.name}:{number}")
                continue
            yield number, text.rstrip("\r").lstrip("\ufeff")


def _clean(text: str, opts: ReadOptions, decoded: bool = False) -> str | None:
    if not decoded:  # a decoder never makes a lone surrogate; "\ud800" escapes in JSON do, and they cannot be stored
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return None
    text = text.replace("\r", " ").replace("\n", " ").lstrip("\ufeff")
    if opts.halfwidth:
        text = to_halfwidth(text)
    return text.strip()


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
