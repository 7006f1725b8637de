"""jieba user dictionaries: `word [freq] [tag]` a line, as `jieba.load_userdict` reads them.

vocab, phrases and expand write one (`jieba_userdict.txt`) into their artifacts; segment and vocab
read them from files or from those artifacts. This module is the one reader and writer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import UserError
from ..core.files import USERDICT_TXT
from .encoding import detect_encoding

log = logging.getLogger(__name__)
_LINE = re.compile(r"^(.+?)( [0-9]+)?( [a-z]+)?$")  # jieba 0.42.1's re_userdict: a tag is lowercase
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what jieba's `line.strip()` on the undecoded bytes removes


def userdict_file(source: Path, stage: str) -> Path:
    """The dictionary file of `source`: the file itself, or an artifact's jieba_userdict.txt."""
    file = source / USERDICT_TXT if source.is_dir() else source
    if not file.is_file():
        raise UserError(f"{stage}: {source} has no {USERDICT_TXT}; pass a vocab, phrases or expand artifact, or a word file")
    return file


def read_userdict(path: Path) -> list[tuple[str, int | None]]:
    """Words (and optional frequencies) of a jieba user dictionary or word list, in file order, repeats kept
    (jieba adds every line: each counts in its total); lines split and stripped as `jieba.load_userdict`
    does (at \\n only, ASCII whitespace), so `New York 5` is the word `New York` and `大模型\\x85` keeps its
    \\x85. UTF-8 or GBK (detected as corpora are: the words are written back as UTF-8 wherever they go)."""
    entries = []
    encoding = detect_encoding(path)
    try:
        lines = path.read_bytes().decode(encoding).split("\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: a word list must be UTF-8 or GBK text; read as {encoding}, byte {exc.start} is not "
                        "valid") from None
    spaced = []  # (line number, word) of words holding whitespace: jieba reads them so, but never cuts one out
    for number, line in enumerate(lines, start=1):
        line = line.strip(_ASCII_SPACE).lstrip("\ufeff")
        match = _LINE.match(line) if line else None
        if match:
            word, freq, _tag = match.groups()
            entries.append((word, int(freq) if freq else None))
            if any(c.isspace() for c in word):
                spaced.append((number, word))
    if spaced:
        log.warning("%s: %d line(s) give a word with whitespace inside (line %d: %r), which jieba reads as one word and "
                    "never finds in text: a line is `word [count] [tag]`, one space apart, the count a whole number",
                    path, len(spaced), *spaced[0])
    return entries


def write_userdict(path: Path, entries: Iterable[tuple[str, int]]) -> None:
    """`word freq` a line; words holding whitespace cannot be stored (jieba splits lines at spaces)."""
    path.write_text("".join(f"{w} {max(int(n), 1)}\n" for w, n in entries if w and not any(c.isspace() for c in w)),
                    encoding="utf-8")
