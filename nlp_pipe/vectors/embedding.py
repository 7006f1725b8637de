"""Word vectors as the rows of an embedding layer (TextCNN, expand --init vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gensim.models import KeyedVectors

from ..core.errors import UserError
from .store import has_ngrams, load_keyed_vectors, zero_rows


def embedding_matrix(vectors: str | Path | KeyedVectors, tokens: list[str], seed: int = 0, *, pad_token: str = "[PAD]",
                     scale: float | None = None, use_ngrams: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """A float32 [len(tokens), dim] matrix whose row i is the vector of tokens[i], for an embedding layer.

    Out-of-vocabulary rows are drawn from U(-scale, scale); scale defaults to sqrt(3) x the standard
    deviation of the found vectors, so they have the same variance (Kim 2014's choice, U[-0.25, 0.25]
    for word2vec). The `pad_token` row is zeros. With fastText vectors an unseen token gets its n-gram
    vector (`use_ngrams`). stats counts found / ngram / oov / pad rows.
    """
    kv = vectors if isinstance(vectors, KeyedVectors) else load_keyed_vectors(vectors)
    matrix = np.zeros((len(tokens), kv.vector_size), dtype=np.float32)
    found = [(i, kv.key_to_index[t]) for i, t in enumerate(tokens) if t != pad_token and t in kv.key_to_index]
    if found:
        rows, index = zip(*found)
        order = np.argsort(index)  # ascending reads are kind to a memory-mapped matrix
        matrix[np.array(rows)[order]] = kv.vectors[np.array(index)[order]]
    missing = [i for i, t in enumerate(tokens) if t != pad_token and t not in kv.key_to_index]
    ngram = [i for i in missing if use_ngrams and has_ngrams(kv)]
    for i in ngram:
        matrix[i] = kv.get_vector(tokens[i])
    oov = [i for i in missing if not ngram]  # with n-grams every missing token has a vector
    sample = matrix[[r for r, _ in found]] if found else np.asarray(kv.vectors[:10_000])
    scale = float(np.sqrt(3.0) * sample.std()) if scale is None else scale
    matrix[oov] = np.random.default_rng(seed).uniform(-scale, scale, (len(oov), kv.vector_size)).astype(np.float32)
    zero = zero_rows(matrix[[r for r, _ in found]]) if found else 0
    if found and zero == len(found):
        raise UserError(f"every one of the {len(found)} vectors found for the vocabulary is all zeros; rebuild the vectors")
    stats = {"tokens": len(tokens), "dim": kv.vector_size, "found": len(found), "zero_vectors": zero, "ngram": len(ngram),
             "oov": len(oov),
             "pad": sum(t == pad_token for t in tokens), "oov_rate": round(len(oov) / max(len(tokens), 1), 6),
             "init_scale": round(scale, 6), "oov_examples": [tokens[i] for i in oov[:20]]}
    return matrix, stats
