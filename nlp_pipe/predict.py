"""`nlp-pipe predict`: texts from the command line, a file or stdin, through any classifier artifact.

    from nlp_pipe.predict import TextClassifier        # also `from nlp_pipe import TextClassifier`
    rows = predict(TextClassifier.load("runs/demo/textcnn"), read_texts(["好评"], None, "auto"))

Files are read like corpora (UTF-8 with or without BOM, GB18030/GBK detected, an undecodable line
named with its line and byte offset), one text a line. An empty line has nothing to classify: it
stops with its line number rather than getting a label. Imports no training code; an export
(`nlp-pipe export`) runs on onnxruntime without torch or transformers.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .classifiers.loaded import TextClassifier
from .core.contract import Counts
from .core.errors import UserError
from .text.corpus import ReadOptions, read_rows

__all__ = ["TextClassifier", "read_texts", "predict"]


def read_texts(texts: Sequence[str], file: str | None, encoding: str) -> list[str]:
    """The --text values, then the lines of `file` ('-' = stdin), in order; empty texts are refused."""
    items = list(texts)
    for i, text in enumerate(items, start=1):
        if not text.strip():
            raise UserError(f"predict: --text number {i} is empty; a classifier needs text to classify")
    if file == "-":
        with tempfile.NamedTemporaryFile(suffix=".txt") as spool:  # the reader detects encodings on a file
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.flush()
            items += _file_lines(Path(spool.name), encoding, "stdin")
    elif file:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"predict: --file {file} does not exist" if not path.exists() else f"predict: --file {file} is not a file")
        items += _file_lines(path, encoding, file)
    if not items:
        raise UserError("predict: give --text TEXT (repeatable) or --file FILE")
    return items


def _file_lines(path: Path, encoding: str, name: str) -> list[str]:
    counts = Counts()
    rows = list(read_rows(path, ReadOptions(format="txt", encoding=encoding), counts,
                          decode_hint="fix the file or pass --encoding"))
    if counts.dropped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.dropped.items()))
        first = min(int(where.rsplit(":", 1)[1]) for shown in counts.where.values() for where in shown)  # "file:line"
        raise UserError(f"predict: {name}: {reasons} line(s) (first at line {first}); a classifier needs "
                        "one text a line: remove them")
    if not rows:
        raise UserError(f"predict: {name} has no texts; give one text a line")
    return [row.text for row in rows]


def predict(clf: TextClassifier, texts: list[str], batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """One record per text: the label (binary tasks at the dev-tuned threshold), its probability and all of them."""
    return records(clf, texts, clf.predict(texts, batch_size))


def records(clf: TextClassifier, texts: list[str], probs: np.ndarray) -> Iterator[dict[str, Any]]:
    """The records of `predict` for probabilities already computed (`nlp-pipe serve` batches requests together)."""
    for text, (label, prob), row in zip(texts, clf.decide(probs), probs):
        yield {"text": text, "label": label, "probability": round(prob, 6),
               "probabilities": {n: round(float(p), 6) for n, p in zip(clf.labels, row)}}
