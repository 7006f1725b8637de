"""TinyBERT data augmentation for Chinese task distillation (Jiao et al. 2020, data_augmentation.py).

    rows, stats = augment(texts, labels, n_copies=4, p=0.4, teacher_mlm=mlm, tokenizer=tokenizer,
                          vectors=load_keyed_vectors("runs/demo/word2vec"), top_k=15, seed=42)
    # rows: [(text, label, source_index)]; per text the original first, then its distinct copies

Each text is cut into jieba words; every copy replaces each replaceable word independently with
probability p:
- a single Chinese character by one of the teacher MLM's top-K predictions at its position (other
  single Chinese characters only, never the character itself);
- any other word with a letter in it by one of its K nearest neighbours in the word vectors
  (gensim `most_similar`, computed once per distinct word);
- words with no letter (punctuation, digits) and words without neighbours (OOV) stay as they are.
Differences from TinyBERT's script: it predicts each character with only that character masked;
here one MLM row per copy masks all the characters chosen for that copy at once (context is the
original text otherwise), which needs n_copies rows per text instead of one per character. Copies
identical to the original or to an earlier copy are dropped, as TinyBERT does. Labels are kept.
Deterministic: each text draws from its own generator seeded by (seed, index), so its choices do not
depend on which other texts are augmented with it; `first` gives the index of texts[0] when a corpus
is augmented a chunk at a time (stages.augment).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from gensim.models import KeyedVectors
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.errors import UserError
from ..models.bert_pretraining import heads
from ..text.segmenter import Segmenter, SegmenterSpec

_HANZI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class AugmentStats:
    """Counts over the generated copies (word slots), before duplicates are dropped."""

    texts: int = 0
    rows: int = 0  # returned: originals + distinct copies
    duplicates_dropped: int = 0
    words: int = 0
    replaceable: int = 0  # single characters the MLM sees + words with neighbours
    replaced_mlm: int = 0
    replaced_vectors: int = 0
    kept_oov: int = 0  # words with a letter but no neighbours in the vectors
    kept_truncated: int = 0  # single characters past the MLM's max_length tokens
    seconds: float = 0.0

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    def __add__(self, other: AugmentStats) -> AugmentStats:
        """Field by field: the stats of two chunks (seconds add up to compute time, not wall time)."""
        return AugmentStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass
class _Text:
    words: list[str]
    gaps: list[str]  # gaps[i] precedes words[i]; gaps[-1] ends the text (whitespace jieba dropped)
    ids: list[int]  # the MLM's token ids of the original text
    token_at: list[int]  # token index of each single Chinese character word; -1 other words, -2 truncated away


@dataclass
class _MaskedCopy:
    """One MLM row: copy `copy` of text `text` with the characters `words` (at tokens `tokens`) masked."""

    text: int
    copy: int
    words: list[int]
    tokens: list[int]
    draws: list[int]  # which of the top-K predictions each character gets


def augment(texts: Sequence[str], labels: Sequence[Any], *, n_copies: int, p: float, teacher_mlm: PreTrainedModel,
            tokenizer: PreTrainedTokenizerBase, vectors: KeyedVectors, segmenter: Segmenter | None = None,
            top_k: int = 15, seed: int = 0, batch_size: int = 64, max_length: int = 128,
            restrict_vocab: int | None = 100_000, bf16: bool = False,
            first: int = 0) -> tuple[list[tuple[str, Any, int]], AugmentStats]:
    """Each text with its label and index (first + its position), followed by up to n_copies distinct
    augmented copies.

    p: probability that a replaceable word is replaced in a copy; top_k: MLM predictions and vector
    neighbours to draw from (uniformly); batch_size: MLM rows (copies) per forward; max_length: MLM
    input tokens (single characters past it are kept and counted in stats.kept_truncated);
    restrict_vocab: neighbours come from the first (most frequent) words of the vectors only, as in
    gensim's most_similar(restrict_vocab=...): searching all of a multi-million-word import would cost
    minutes per thousand words (None = all); bf16: run the MLM under bf16 autocast (3x faster on CPUs
    with AMX, e.g. when training.resolve_precision("auto") == "bf16"; fp32 results differ slightly)."""
    if len(texts) != len(labels):
        raise UserError(f"augment: {len(texts)} texts but {len(labels)} labels")
    if not tokenizer.is_fast:
        raise UserError("augment needs a fast tokenizer (offset mappings); load it with AutoTokenizer.from_pretrained")
    mlm_head = heads(teacher_mlm)[0]  # a one-line error for a model without one
    if n_copies < 0 or not 0 <= p <= 1 or top_k < 1:
        raise UserError(f"augment: need n_copies >= 0, 0 <= p <= 1 and top_k >= 1 (got {n_copies}, {p}, {top_k})")
    start = time.perf_counter()
    stats = AugmentStats(texts=len(texts))
    segmenter = segmenter or Segmenter(SegmenterSpec())
    parsed = [_parse(text, segmenter.cut(text)) for text in texts]
    _tokenize(parsed, texts, tokenizer, max_length)
    candidates = {w for t in parsed for w, at in zip(t.words, t.token_at) if at < 0}
    neighbours = _neighbours(candidates, vectors, top_k, restrict_vocab)

    # Draw every choice up front, text by text, so batching the MLM cannot change the results.
    copies: list[list[list[str]]] = []
    mlm_rows: list[_MaskedCopy] = []
    for i, t in enumerate(parsed):
        rng = np.random.default_rng([seed, first + i])
        kinds = [_kind(w, at, neighbours) for w, at in zip(t.words, t.token_at)]
        text_copies = []
        for c in range(n_copies):
            chosen = rng.random(len(t.words)) < p
            draws = rng.integers(0, top_k, len(t.words))
            words, masked = list(t.words), []
            for j, (word, kind) in enumerate(zip(t.words, kinds)):
                stats.words += 1
                stats.kept_oov += kind == "oov"
                stats.kept_truncated += kind == "truncated"
                if kind in ("vectors", "mlm"):
                    stats.replaceable += 1
                    if chosen[j] and kind == "vectors":
                        words[j] = neighbours[word][draws[j] % len(neighbours[word])]
                        stats.replaced_vectors += 1
                    elif chosen[j]:
                        masked.append(j)
            if masked:
                mlm_rows.append(_MaskedCopy(i, c, masked, [t.token_at[j] for j in masked], [int(draws[j]) for j in masked]))
                stats.replaced_mlm += len(masked)
            text_copies.append(words)
        copies.append(text_copies)

    predicted = _predict(mlm_rows, parsed, teacher_mlm, mlm_head, tokenizer, top_k, batch_size, bf16)
    for row, chars in zip(mlm_rows, predicted):
        for j, char in zip(row.words, chars):
            copies[row.text][row.copy][j] = char

    rows: list[tuple[str, Any, int]] = []
    for i, (text, label, t) in enumerate(zip(texts, labels, parsed)):
        seen = {text}
        rows.append((text, label, first + i))
        for words in copies[i]:
            new = "".join(g + w for g, w in zip(t.gaps, words)) + t.gaps[-1]
            if new in seen:
                stats.duplicates_dropped += 1
            else:
                seen.add(new)
                rows.append((new, label, first + i))
    stats.rows, stats.seconds = len(rows), time.perf_counter() - start
    return rows, stats


def _parse(text: str, words: list[str]) -> _Text:
    gaps, cursor = [], 0
    for word in words:
        at = text.index(word, cursor)  # jieba's words are the text's own substrings, in order
        gaps.append(text[cursor:at])
        cursor = at + len(word)
    gaps.append(text[cursor:])
    return _Text(words, gaps, [], [])


def _tokenize(parsed: list[_Text], texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)
    for t, ids, offsets in zip(parsed, encoded["input_ids"], encoded["offset_mapping"]):
        token_of_char = {a: k for k, (a, b) in enumerate(offsets) if b == a + 1}
        t.ids, t.token_at, cursor = ids, [], 0
        for gap, word in zip(t.gaps, t.words):
            cursor += len(gap)
            single = len(word) == 1 and _HANZI.match(word)
            t.token_at.append(token_of_char.get(cursor, -2) if single else -1)  # -2: truncated away
            cursor += len(word)


def _kind(word: str, token_at: int, neighbours: dict[str, list[str]]) -> str:
    if token_at >= 0:
        return "mlm"
    if token_at == -2:
        return "truncated"
    if word in neighbours:
        return "vectors"
    return "oov" if any(ch.isalpha() for ch in word) else "other"


def _neighbours(words: set[str], vectors: KeyedVectors, top_k: int, restrict_vocab: int | None) -> dict[str, list[str]]:
    """Up to top_k nearest neighbours, with a letter in them, of each word found in the vectors.

    The same cosine ranking as gensim's `most_similar(word, topn=top_k, restrict_vocab=...)` (the word
    itself excluded), but many words per matrix product: one most_similar call reads the whole matrix
    for one word."""
    known = sorted(w for w in words if any(ch.isalpha() for ch in w) and w in vectors.key_to_index)
    if not known:
        return {}
    vectors.fill_norms()
    searched = min(len(vectors), restrict_vocab or len(vectors))
    matrix, norms = vectors.vectors, vectors.norms  # no normalised copy: the matrix may be a large mmap
    k = min(top_k, searched - 1)
    if k < 1:
        return {}
    rows = max(1, 2**24 // searched)  # similarity block of at most 64 MB
    found, inverse_norms = {}, torch.from_numpy(1 / norms[:searched])
    for first in range(0, len(known), rows):
        chunk = known[first:first + rows]
        index = np.array([vectors.key_to_index[w] for w in chunk])
        sims = torch.from_numpy((matrix[index] / norms[index, None]) @ matrix[:searched].T)  # numpy: may be read-only
        sims *= inverse_norms
        inside = index < searched
        sims[torch.arange(len(chunk))[inside], torch.from_numpy(index[inside])] = float("-inf")
        for word, best in zip(chunk, sims.topk(k, dim=1).indices.tolist()):
            usable = [vectors.index_to_key[i] for i in best]
            usable = [w for w in usable if any(ch.isalpha() for ch in w) and not any(ch.isspace() for ch in w)]
            if usable:
                found[word] = usable
    return found


def _predict(mlm_rows: list[_MaskedCopy], parsed: list[_Text], model: Any, mlm_head: Any, tokenizer: PreTrainedTokenizerBase,
             top_k: int, batch_size: int, bf16: bool) -> list[list[str]]:
    """For each row (one copy of a text), the replacement of each masked character: the draw-th of the
    MLM's top-K single Chinese characters at that position, excluding the original character."""
    if not mlm_rows:
        return []
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    banned = torch.tensor([not (len(tok) == 1 and _HANZI.match(tok)) for tok in vocab])
    k = min(top_k, int((~banned).sum()) - 1)
    if k < 1:
        raise UserError("augment: the MLM tokenizer has fewer than two single Chinese characters to predict")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[str]] = [[] for _ in mlm_rows]
    order = sorted(range(len(mlm_rows)), key=lambda r: len(parsed[mlm_rows[r].text].ids))  # less padding
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            width = max(len(parsed[mlm_rows[r].text].ids) for r in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, r in enumerate(batch):
                row = parsed[mlm_rows[r].text].ids
                ids[b, :len(row)], mask[b, :len(row)] = torch.tensor(row), 1
            rows_at = torch.tensor([b for b, r in enumerate(batch) for _ in mlm_rows[r].tokens])
            cols_at = torch.tensor([col for r in batch for col in mlm_rows[r].tokens])
            original = ids[rows_at, cols_at]
            ids[rows_at, cols_at] = tokenizer.mask_token_id
            hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))[0]
            logits = mlm_head(hidden[rows_at.to(device), cols_at.to(device)]).float().cpu()
            logits[:, banned] = float("-inf")
            logits[torch.arange(len(original)), original] = float("-inf")
            top = logits.topk(k, dim=-1).indices
            draws = torch.tensor([d % k for r in batch for d in mlm_rows[r].draws])
            chosen = top[torch.arange(len(draws)), draws].tolist()
            position = 0
            for r in batch:
                n = len(mlm_rows[r].tokens)
                out[r] = [vocab[i] for i in chosen[position:position + n]]
                position += n
    model.train(was_training)
    return out
