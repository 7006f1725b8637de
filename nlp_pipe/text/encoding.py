"""Bytes of a user's text file: opening (plain, .gz, .bz2), finding the encoding, cutting lines.

UTF-8 with or without BOM is recognised directly; anything else goes to charset-normalizer, with every
GB family name widened to GB18030 (their superset). A file that is not text (NUL bytes, control codes)
stops with one line, and so does an encoding the user forced that turns the file into mojibake.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import os
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import charset_normalizer

from ..core.errors import UserError

SAMPLE = 1 << 20
_SPREAD, _PIECE = 8, 64 << 10  # pieces of a larger file's rest read for detection, and their size
_GB = {"gb2312", "gbk", "gb18030", "hz", "cp936"}
_CONTROL_SHARE = 0.01  # more control characters than this in a decoded sample: not text
_MOJIBAKE_SHARE = 0.5  # forced decoding: share of non-ASCII characters that are Latin-1 letters or C1 codes


def open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            return cast(IO[bytes], gzip.open(path, "rb"))
        if name.endswith(".bz2"):
            return cast(IO[bytes], bz2.open(path, "rb"))
        return open(path, "rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror})") from None


@contextmanager
def reading(path: Path) -> Iterator[IO[bytes]]:
    """`open_binary(path)` for the block; a read that fails inside it (a truncated or corrupt .gz/.bz2, an I/O
    error) is one line naming the file, not a traceback nor the runner's "free space? permissions?" hint."""
    with open_binary(path) as fh:
        try:
            yield fh
        except (EOFError, OSError) as exc:
            raise UserError(f"{path}: reading failed ({exc}); is the file complete and readable?") from None


def sample_of(path: Path) -> bytes:
    """The first MiB, and for a larger plain file whole lines from _SPREAD places spread over the rest: a file can
    change encoding after its first MiB (ASCII rows first, GBK ones later), and rows decoded with the first MiB's
    guess would be lost. Compressed files give their first MiB only (no cheap seeking)."""
    with open_binary(path) as fh:
        try:
            head = fh.read(SAMPLE)
            if len(head) < SAMPLE or path.name.lower().endswith((".gz", ".bz2")) or b"\n" not in head:
                return head
            size = fh.seek(0, os.SEEK_END)
            pieces = [head[: head.rfind(b"\n") + 1]]  # whole lines only: no character cut in two
            for i in range(1, _SPREAD + 1):
                fh.seek(SAMPLE + (size - SAMPLE - _PIECE) * i // _SPREAD if size > SAMPLE + _PIECE else SAMPLE)
                piece = fh.read(_PIECE)
                start, end = piece.find(b"\n") + 1, piece.rfind(b"\n") + 1
                if 0 < start < end:
                    pieces.append(piece[start:end])
            return b"".join(pieces)
        except (OSError, EOFError) as exc:  # a damaged .gz/.bz2
            raise UserError(f"{path}: cannot read ({exc}); is the archive complete?") from None


def detect_encoding(path: Path) -> str:
    """UTF-8 (BOM or not) when the sample is essentially valid UTF-8, else charset-normalizer's
    guess with every GB family name widened to GB18030 (their superset)."""
    sample = sample_of(path)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{path}: UTF-16 text is not supported; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
    text = sample.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - bad  # non-ASCII characters, counted in C
    # A few bad bytes inside otherwise valid multi-byte UTF-8 mean a damaged UTF-8 file (reported
    # line by line later), not another encoding: GBK text decoded as UTF-8 fails almost everywhere.
    if bad == 0 or (multibyte > 20 * bad and multibyte >= 20):
        return "utf-8"
    if _reads_as_common_gb(sample):  # before the looser rule below: a short GB text can hold a few valid UTF-8 pairs
        return "gb18030"
    if bad <= 4 and multibyte >= 2 * bad:  # "好吃\n\xff": damaged UTF-8 (charset-normalizer said cp1251)
        return "utf-8"
    if b"\x00" in sample:  # not UTF-8 and NUL bytes: no text encoding this reader supports
        raise UserError(f"{path} holds NUL bytes and is not UTF-8: a binary file, not text (UTF-16 text needs converting "
                        "to UTF-8: iconv -f UTF-16 -t UTF-8)")
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
    if _control_share(sample.decode(guess, errors="replace")) > _CONTROL_SHARE:
        raise UserError(f"{path} does not look like text in any encoding (control bytes throughout; best guess {guess}); "
                        "pass a text file, or --encoding if you know it")
    return guess


def check_forced(path: Path, encoding: str) -> None:
    """An encoding the user chose must not turn a UTF-8 or GB18030 file into mojibake (exit 0 with garbage)."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig", "gb18030"):
        return
    sample = sample_of(path)
    cut = sample[: sample.rfind(b"\n") + 1] if len(sample) == SAMPLE else sample
    decoded = cut.decode(encoding, errors="replace")
    wide = [ch for ch in decoded if ord(ch) > 0x7F]
    suspicious = sum(1 for ch in wide if ord(ch) <= 0xFF)  # Latin-1 letters and C1 codes: lead/trail bytes read alone
    if not wide or suspicious < _MOJIBAKE_SHARE * len(wide):
        return
    for real in ("utf-8", "gb18030"):
        try:
            text = cut.decode(real)
        except UnicodeDecodeError:
            continue
        if sum(1 for ch in text if ord(ch) > 0x2E7F) > 0.5 * sum(1 for ch in text if ord(ch) > 0x7F):
            raise UserError(f"{path}: decoding it as {encoding} gives mojibake ({suspicious / len(wide):.0%} of its non-ASCII "
                            f"characters are Latin-1 letters or control codes), yet it reads cleanly as {real}; drop "
                            f"--encoding (auto detects it) or pass --encoding {real}")


def records(fh: IO[bytes], skip_bom: bool = False, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) pairs; lines end at \\n, or at \\r in files that never use \\n. With `start` / `end`,
    the lines of those bytes only (whole lines: `corpus.split_lines` cuts after a \\n)."""
    left = end - start if end is not None else -1  # bytes still to read; -1: to the end

    def read() -> bytes:
        nonlocal left
        if left == 0:
            return b""
        block = fh.read(SAMPLE if left < 0 else min(SAMPLE, left))
        left = left if left < 0 else left - len(block)
        return block

    if start:
        fh.seek(start)
    first, offset = read(), start
    if skip_bom and not start and first.startswith(codecs.BOM_UTF8):  # a BOM is no text: a file of only a BOM has no line
        first, offset = first[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    sep = b"\r" if not start and b"\r" in first and b"\n" not in first else b"\n"
    pending, chunk = b"", first
    while chunk:
        parts = (pending + chunk).split(sep)
        pending = parts.pop()
        for part in parts:
            yield offset, part
            offset += len(part) + 1
        chunk = read()
    if pending:
        yield offset, pending


def _control_share(text: str) -> float:
    controls = sum(1 for ch in text if ch not in "\t\n\r\f\v" and unicodedata.category(ch) == "Cc")
    return controls / max(len(text), 1)


def _reads_as_common_gb(sample: bytes) -> bool:
    """The sample decodes as GB18030 and (almost) all its non-ASCII characters are in GB2312,
    the common simplified set; Big5 bytes read as GBK land mostly outside it."""
    if len(sample) == SAMPLE:  # the sample may end inside a character: cut at its last line end
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        wide = [ch for ch in sample.decode("gb18030") if ord(ch) > 0x7F]
    except UnicodeDecodeError:
        return False
    common = sum(1 for ch in wide if encodes(ch, "gb2312"))
    return bool(wide) and common >= 0.95 * len(wide)


def unicode_text(text: str) -> bool:
    """Whether `text` is text a tokenizer takes: no lone surrogate (e.g. "\\udcff", bytes that were not UTF-8 on a
    command line, or a JSON escape); printable text, nearly all of it, is checked without encoding."""
    return text.isprintable() or encodes(text, "utf-8")


def encodes(text: str, codec: str) -> bool:
    """Whether `codec` can write `text` (utf-8 cannot write a lone surrogate such as "\\ud800")."""
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
