"""A vectors artifact (word2vec, import-vectors): saving it, loading it, and its report.

    kv = load_keyed_vectors("runs/demo/word2vec")            # artifact dir, vectors.txt or .txt.bz2

A vectors artifact holds `vectors.txt` (word2vec text format: `COUNT DIM`, then `word v1 v2 ...`),
`vectors.kv` (gensim `KeyedVectors.save`; big arrays beside it as `vectors.kv.*.npy`) and `eval.json`.
`vectors.kv` is a pickle: it is only loaded from an artifact whose manifest says a vector stage made
it and whose recorded sha256 it still matches; any other file is read as text.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gensim.models import KeyedVectors

from ..core import manifest as manifests
from ..core.config import option
from ..core.contract import Counts
from ..core.errors import UserError
from ..core.files import EVAL_JSON, VECTORS_KV, VECTORS_TXT
from .evaluation import RESTRICT_VOCAB, eval_metrics, eval_tables, evaluate
from .word2vec_text import read_word2vec_text, write_word2vec_text

log = logging.getLogger(__name__)

VECTOR_STAGES = ("word2vec", "import-vectors")
_ARRAYS = ("vectors", "vectors_vocab", "vectors_ngrams")  # stored as .npy beside vectors.kv, so they mmap


def save_vectors(kv: KeyedVectors, out: Path) -> None:
    """Write vectors.txt and vectors.kv into an artifact directory, then read both back to check them."""
    write_word2vec_text(kv, out / VECTORS_TXT)
    _save_kv_and_check(kv, out)


def _save_kv_and_check(kv: KeyedVectors, out: Path) -> None:
    # kv.save detaches the big arrays from kv while it pickles the rest: nothing may read kv meanwhile
    kv.save(str(out / VECTORS_KV), separately=[a for a in _ARRAYS if getattr(kv, a, None) is not None])
    with open(out / VECTORS_TXT, encoding="utf-8") as fh:  # header, row count, first and last rows
        header = fh.readline()
        first = last = fh.readline()
        rows = int(bool(first))
        for line in fh:
            rows, last = rows + 1, line
    if header != f"{len(kv)} {kv.vector_size}\n" or rows != len(kv):
        raise OSError(f"{VECTORS_TXT} does not read back: header {header.strip()!r}, {rows} rows for {len(kv)} vectors")
    for line, i in ((first, 0), (last, len(kv) - 1)) if len(kv) else ():
        word, *values = line.rstrip("\n").split(" ")
        if word != kv.index_to_key[i] or not np.array_equal(np.array(values, np.float32), kv.vectors[i]):
            raise OSError(f"{VECTORS_TXT}: the row of {word!r} does not read back as written")
    reloaded = KeyedVectors.load(str(out / VECTORS_KV), mmap="r")
    if reloaded.vectors.shape != kv.vectors.shape or reloaded.index_to_key[:10] != kv.index_to_key[:10]:
        raise OSError(f"{VECTORS_KV} does not reload as written")


def load_keyed_vectors(path: str | Path, *, mmap: bool = True) -> KeyedVectors:
    """Vectors from a word2vec/import-vectors artifact dir, or a word2vec text file (.txt, .bz2, .gz)."""
    path = Path(path)
    if path.is_dir():
        manifest = manifests.require_manifest(path, "Pass a word2vec or import-vectors artifact, or a word2vec text file.")
        if manifest.get("stage") not in VECTOR_STAGES:
            raise UserError(f"{path} is a '{manifest.get('stage')}' artifact, not word vectors (word2vec or import-vectors)")
        changed = manifests.check_files(path, manifest)  # vectors.kv is a pickle: only our own, unchanged
        if changed or VECTORS_KV not in {f["name"] for f in manifest["files"]}:
            raise UserError(f"{path} changed on disk since it was written ({'; '.join(changed[:3]) or 'no ' + VECTORS_KV}); "
                            f"`nlp-pipe inspect {path}` shows what; rebuild it with --force")
        return KeyedVectors.load(str(path / VECTORS_KV), mmap="r" if mmap else None)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a vectors artifact dir or a word2vec text file")
    counts = Counts()
    kv = read_word2vec_text(path, counts=counts)
    if counts.dropped:
        log.warning("%s: rows dropped while reading: %s", path, dict(counts.dropped))
    return kv


def neighbours_table(kv: KeyedVectors, words: list[str], topn: int) -> str:
    """Markdown table of each word's nearest neighbours (fastText vectors also answer unseen words)."""
    rows = ["| word | neighbours (cosine) |", "| --- | --- |"]
    for word in words:
        known = word in kv.key_to_index
        if not known and not has_ngrams(kv):
            rows.append(f"| {word} | not in the vocabulary |")
            continue
        near = ", ".join(f"{w} ({s:.2f})" for w, s in kv.most_similar(word, topn=topn))
        rows.append(f"| {word}{'' if known else ' (unseen: from n-grams)'} | {near} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class ReportOptions:
    """Evaluation and report fields shared by the configs of the vector stages."""

    query: tuple[str, ...] = option((), "words whose nearest neighbours go into report.md, beside a few frequent ones")
    neighbours: int = option(10, "neighbours listed per word in report.md", min=1, max=100)
    restrict_vocab: int = option(RESTRICT_VOCAB, "evaluation: only the N most frequent words ask and answer (gensim's default)", min=1)
    case_insensitive: bool = option(True, "evaluation: compare words upper-cased (gensim's default)")


def finish_artifact(kv: KeyedVectors, out: Path, options: ReportOptions, analogy: list[Path],
                    similarity: list[Path]) -> tuple[dict[str, Any], str]:
    """Save vectors.txt, vectors.kv and eval.json into `out`; returns (metrics, report.md body)."""
    zero = zero_rows(kv.vectors)
    if len(kv) and zero == len(kv):
        raise UserError(f"every one of the {len(kv)} vectors is all zeros: nothing to learn from; check the source")
    # Writing text holds the GIL, evaluation is mostly numpy that releases it: overlap the two, which
    # only read kv. kv.save comes after (it detaches arrays while pickling), neighbours_table last
    # (most_similar caches norms in kv, which kv.save would pickle).
    with ThreadPoolExecutor(1) as pool:
        text = pool.submit(write_word2vec_text, kv, out / VECTORS_TXT)
        result = evaluate(kv, analogy[0] if analogy else None, similarity[0] if similarity else None,
                          restrict_vocab=options.restrict_vocab, case_insensitive=options.case_insensitive)
        text.result()
    _save_kv_and_check(kv, out)
    (out / EVAL_JSON).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    frequent = _spread_words(kv)
    parts = [f"## Vectors\n{len(kv):,} words x {kv.vector_size} dimensions: `{VECTORS_TXT}` (word2vec text format) "
             f"and `{VECTORS_KV}` (gensim KeyedVectors)."]
    for header, rows in eval_tables(result):
        parts.append("\n".join([f"| {' | '.join(header)} |", "|" + " --- |" * len(header),
                                *(f"| {' | '.join(map(str, r))} |" for r in rows)]))
    if not analogy and not similarity:
        parts.append("No evaluation files given (inputs analogy / similarity; shipped: vocab/analogy_zh.txt, vocab/similarity_zh.txt).")
    parts.append("## Nearest neighbours\n" + neighbours_table(kv, [*frequent, *options.query], options.neighbours))
    return {"vocab_size": len(kv), "vector_size": kv.vector_size, "zero_vectors": zero, **eval_metrics(result)}, "\n\n".join(parts)


def _spread_words(kv: KeyedVectors, ranks: tuple[int, ...] = (20, 50, 100, 200, 500, 1000, 2000, 5000)) -> list[str]:
    """A word near each frequency rank (the very top is function words): the report samples every band."""
    words: list[str] = []
    for rank in ranks:
        word = next((w for w in kv.index_to_key[rank:rank + 200] if len(w) > 1 and w.isalpha() and w not in words), None)
        if word:
            words.append(word)
    return words


def zero_rows(matrix: np.ndarray) -> int:
    """Rows that are all zeros (a word without information), counted in blocks so a memory map stays flat."""
    return sum(int((~np.any(matrix[i:i + 65536], axis=1)).sum()) for i in range(0, len(matrix), 65536))


def has_ngrams(kv: KeyedVectors) -> bool:
    return getattr(kv, "bucket", 0) > 0 and getattr(kv, "vectors_ngrams", None) is not None
