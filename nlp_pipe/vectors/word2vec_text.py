"""The word2vec text format: a `COUNT DIM` header, then `word v1 ... vDIM` a line; plain, .bz2 or .gz.

Read as a stream (only the vectors are held in memory, never the text), every row checked; written with
%.9g so float32 values round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from gensim.models import KeyedVectors

from ..core.contract import Counts
from ..core.errors import UserError
from ..text.encoding import reading

_BATCH_ROWS = 4096


def read_word2vec_text(path: str | Path, *, keep: Collection[str] | None = None, counts: Counts | None = None,
                       limit: int = 0, on_decode_error: str = "stop") -> KeyedVectors:
    """Stream a word2vec text file (plain, .bz2 or .gz) into KeyedVectors, checking every row.

    Only the vectors are held in memory, never the text. A header that disagrees with the rows, a
    non-numeric value or a wrong row length stops with the line number. `keep` restricts to those
    words; duplicates keep the first row. `counts` receives rows in/out and dropped rows by reason
    (duplicate, not_in_vocab, space_in_word, blank_line, undecodable).
    """
    path = Path(path)
    counts = counts if counts is not None else Counts()
    with reading(path) as fh:
        lines = _decoded(fh, path, on_decode_error, counts)
        n_rows, dim = _header(next(lines, (1, ""))[1], path)
        capacity = min(n_rows, limit or n_rows, len(keep) if keep is not None else n_rows)
        try:
            matrix = np.empty((capacity, dim), dtype=np.float32)
        except (MemoryError, ValueError):
            raise UserError(f"{path}: the header (line 1) announces {n_rows} x {dim} floats, more than memory holds; "
                            f"fix the header, or import fewer (limit, vocab)") from None
        words: list[str] = []
        seen: set[str] = set()
        batch: list[tuple[int, str, list[str]]] = []
        line_no = 1
        for line_no, text in lines:
            if not text:
                counts.drop("blank_line")
                continue
            counts.rows_in += 1
            if counts.rows_in > n_rows:
                raise UserError(f"{path}: line {line_no}: more rows than the {n_rows} announced by the header (line 1); fix the header")
            word, values = _split_row(text, dim, path, line_no)
            if word is None:
                counts.drop("space_in_word")  # cannot be stored in word2vec text format
            elif word in seen:
                counts.drop("duplicate")
            elif keep is not None and word not in keep:
                counts.drop("not_in_vocab")
            else:
                seen.add(word)
                batch.append((line_no, word, values))
                if len(batch) == _BATCH_ROWS:
                    _store(batch, matrix, words, path)
            if limit and counts.rows_in == limit:
                break
        _store(batch, matrix, words, path)
    if not limit and counts.rows_in < n_rows:
        raise UserError(f"{path}: the header (line 1) announces {n_rows} vectors but the file ends after "
                        f"{counts.rows_in} rows (line {line_no}); fix the header or the file")
    counts.rows_out = len(words)
    return _keyed_vectors(words, matrix if len(words) == capacity else matrix[: len(words)].copy())


def write_word2vec_text(kv: KeyedVectors, path: Path) -> None:
    """`COUNT DIM`, then `word v1 ... vDIM` a line in index order; %.9g round-trips float32 exactly."""
    row_format = " ".join(["%.9g"] * kv.vector_size)
    bad = [w for w in kv.index_to_key if not w or " " in w or "\n" in w]
    if bad:
        raise UserError(f"{path.name}: words with spaces or newlines cannot be stored in word2vec text format: {bad[:5]}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(kv)} {kv.vector_size}\n")
        for start in range(0, len(kv), _BATCH_ROWS):
            rows = np.asarray(kv.vectors[start:start + _BATCH_ROWS], dtype=np.float32).tolist()
            keys = kv.index_to_key[start:start + _BATCH_ROWS]
            fh.write("".join(f"{w} {row_format % tuple(r)}\n" for w, r in zip(keys, rows)))


def _decoded(fh: IO[bytes], path: Path, on_error: str, counts: Counts) -> Iterator[tuple[int, str]]:
    offset = 0
    for number, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if on_error == "stop" or number == 1:
                raise UserError(f"{path}: line {number}, byte offset {offset + exc.start}: not UTF-8 "
                                f"({raw[exc.start:exc.start + 4]!r}); fix the file "
                                f"(import-vectors can skip such lines: --on-decode-error skip)") from None
            counts.rows_in += 1
            counts.drop("undecodable")
            offset += len(raw)
            continue
        offset += len(raw)
        yield number, text.lstrip("\ufeff").rstrip(" \t\r\n") if number == 1 else text.rstrip(" \t\r\n")


def _header(text: str, path: Path) -> tuple[int, int]:
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) < 1:
        raise UserError(f"{path}: line 1 should be the word2vec header `COUNT DIM`, got {text[:60]!r} "
                        f"(headerless GloVe-style files need one added: `sed -i '1i COUNT DIM' FILE`)")
    return int(parts[0]), int(parts[1])


def _split_row(text: str, dim: int, path: Path, line_no: int) -> tuple[str | None, list[str]]:
    parts = text.split(" ")  # like gensim: only spaces separate, so a word may hold other whitespace
    if len(parts) == dim + 1 and parts[0]:
        return parts[0], parts[1:]
    if len(parts) > dim and (not parts[0] or not all(map(is_number, parts[1:len(parts) - dim]))):
        return None, []  # a word that is or holds a space: the row is fine, the word cannot be stored
    raise UserError(f"{path}: line {line_no}: {len(parts) - 1} values for '{parts[0]}', but the header (line 1) "
                    f"says dimension {dim}")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _store(batch: list[tuple[int, str, list[str]]], matrix: np.ndarray, words: list[str], path: Path) -> None:
    if not batch:
        return
    try:
        values = np.array([v for _, _, v in batch], dtype=np.float32)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        for line_no, word, row in batch:  # find the culprit for the message
            for value in row:
                if not is_number(value) or not np.isfinite(np.float32(value)):
                    raise UserError(f"{path}: line {line_no}: value {value!r} for '{word}' is not a finite number")
    start = len(words)
    matrix[start:start + len(batch)] = values
    words.extend(w for _, w, _ in batch)
    batch.clear()


def _keyed_vectors(words: list[str], matrix: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(matrix.shape[1], count=0, dtype=np.float32)
    kv.index_to_key = words
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    kv.vectors = matrix
    kv.next_index = len(words)
    return kv
