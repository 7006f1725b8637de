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
from pathlib import Path

from ..core.contract import Counts
from ..core.errors import UserError
from ..core.files import segmented_dataset
from .encoding import check_forced, detect_encoding, reading, records
from .formats import ReadOptions, Row, jsonl_rows, table_rows, txt_rows
from .normalization import to_halfwidth

log = logging.getLogger(__name__)

__all__ = ["BytesRead", "Counts", "ReadOptions", "Row", "detect_encoding", "read_rows", "read_texts"]
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
              decode_hint: str = _DECODE_HINT, read: BytesRead | None = None) -> Iterator[Row]:
    """Rows of one file; `label` (if given) labels every row, as for one-file-per-class corpora."""
    fmt = opts.format if opts.format != "auto" else _format_from_name(path)
    encoding = opts.encoding if opts.encoding != "auto" else detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"{path}: unknown encoding '{encoding}'") from None
    if opts.encoding != "auto":
        check_forced(path, encoding)
    log.info("reading %s as %s (%s)", path, fmt, encoding)
    lines = _decoded_lines(path, encoding, opts.on_decode_error, counts, decode_hint, read or BytesRead())
    parsers: dict[str, Callable[..., Iterator[Row]]] = {"txt": txt_rows, "jsonl": jsonl_rows, "csv": table_rows, "tsv": table_rows}
    table = {"fmt": fmt} if fmt in ("csv", "tsv") else {}
    start_in, start_bad = counts.rows_in, counts.bad(_BAD)
    overridden = False
    for row in parsers[fmt](lines, path, opts, counts, **table):
        counts.rows_in += 1
        text = _clean(row.text, opts)
        row_label = label if label is not None else row.label
        if label is not None and row.label is not None and not overridden:
            overridden = True  # said once a file: the file's own labels are not used
            log.warning("%s has a label column; --label-per-file labels all its rows '%s' instead", path, label)
        if text is None or (row_label is not None and _clean(row_label, opts) is None):  # a label too
            counts.drop("invalid_unicode", where=f"{path.name}:{row.line}")
        elif not text:
            counts.drop("empty", where=f"{path.name}:{row.line}")
        elif row_label is not None and not row_label.strip():
            counts.drop("no_label", where=f"{path.name}:{row.line}")
        else:
            counts.rows_out += 1
            yield Row(text, row_label.strip() if row_label is not None else None, row.line)
        if (counts.rows_in - start_in) % _CHECK_EVERY == 0:
            _check_bad_share(path, opts, counts, start_in, start_bad, fmt, encoding)
    _check_bad_share(path, opts, counts, start_in, start_bad, fmt, encoding)


def _check_bad_share(path: Path, opts: ReadOptions, counts: Counts, start_in: int, start_bad: int, fmt: str,
                     encoding: str) -> None:
    rows, bad = counts.rows_in - start_in, counts.bad(_BAD) - start_bad
    if bad > 3 and bad > opts.max_bad_rows * rows:
        reasons = ", ".join(f"{counts.dropped[r]} {r}" for r in _BAD if counts.dropped[r])
        first = "; first at " + ", ".join(counts.where[r][0] for r in _BAD if counts.where.get(r)) if counts.where else ""
        raise UserError(f"{path}: {bad} of {rows} rows read so far are unusable ({reasons}{first}), more than "
                        f"max_bad_rows = {opts.max_bad_rows:.0%}: read as {fmt} in {encoding}, is that the right format "
                        "(--format) and encoding (--encoding)? Raise --max-bad-rows to keep going anyway")


def _format_from_name(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2")]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext, "txt")


def _decoded_lines(path: Path, encoding: str, on_error: str, counts: Counts, hint: str,
                   read: BytesRead) -> Iterator[tuple[int, str]]:
    base = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
    utf8 = base.lower().replace("_", "-") in ("utf-8", "utf8")
    with reading(path) as fh:  # a truncated .gz/.bz2, a read error: one line
        for number, (offset, raw) in enumerate(records(fh, skip_bom=utf8), start=1):
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


def _clean(text: str, opts: ReadOptions) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. "\ud800" escapes in JSON) cannot be stored
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
