"""Dynamic MLM masking over our word-boundary labels: whole-word (jieba words) or token-level, 80/10/10.

`DataCollatorForLanguageModeling(whole_word_mask=True)` takes a run of Chinese characters for one
word (docs/library-notes.md), so whole-word masking is ours: per block, round(15%) of its real tokens are
chosen as whole words in random order (a word that would overshoot is skipped, as in Google
BERT's create_pretraining_data), and each chosen word gets ONE decision for all its characters:
80% all [MASK], 10% all random tokens, 10% all unchanged (BERT-wwm / ERNIE style).

The mask is drawn afresh each time a block is seen (dynamic masking): `collate` pads, `mask`
masks with a numpy Generator the training loop seeds per step, so a resumed run masks exactly as
the uninterrupted one would. `__call__` does both with the collator's own generator, so it also
works as a plain DataLoader collate_fn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100
# word-boundary labels, one per token (data/blocks.py writes them): kept here so masking needs no segmenter
WORD_START, WORD_INSIDE, NOT_A_WORD = 0, 1, -1


@dataclass
class MaskingCollator:
    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    mlm_probability: float = 0.15
    mask_ratio: float = 0.8  # of the chosen words: all [MASK]
    random_ratio: float = 0.1  # all random tokens; the rest stay unchanged
    whole_word: bool = True
    pad_to_multiple_of: int = 8  # tensor-core friendly shapes on GPU; full blocks are already aligned
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _candidates: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._candidates = np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids))

    def __call__(self, examples: Sequence[Mapping[str, Any]] | Mapping[str, Sequence]) -> dict[str, torch.Tensor]:
        return self.mask(self.collate(examples), self._rng)

    def collate(self, examples: Sequence[Mapping[str, Any]] | Mapping[str, Sequence]) -> dict[str, torch.Tensor]:
        """Pad a list of examples (or a datasets batch, a dict of columns) into tensors."""
        columns = examples if isinstance(examples, Mapping) else {k: [e[k] for e in examples] for k in examples[0]}
        rows = columns["input_ids"]
        width = max(len(r) for r in rows)
        width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": _pad(rows, width, self.pad_id),
            "attention_mask": _pad([[1] * len(r) for r in rows], width, 0),
            "token_type_ids": _pad(columns.get("token_type_ids") or [[0] * len(r) for r in rows], width, 0),
            "word_labels": _pad(columns["word_labels"], width, NOT_A_WORD),
        }
        if "sentence_label" in columns:
            batch["sentence_label"] = torch.as_tensor(np.asarray(columns["sentence_label"], dtype=np.int64))
        return batch

    def mask(self, batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Replace the chosen words' tokens (80/10/10) and set `labels` (-100 where nothing is predicted)."""
        ids = batch["input_ids"].numpy()
        word_labels = batch["word_labels"].numpy()
        masked = ids.copy()
        labels = np.full_like(ids, IGNORE_INDEX)
        for row in range(ids.shape[0]):
            self._mask_row(ids[row], word_labels[row], masked[row], labels[row], rng)
        return {**batch, "input_ids": torch.from_numpy(masked), "labels": torch.from_numpy(labels)}

    def _mask_row(self, ids: np.ndarray, word_labels: np.ndarray, masked: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator) -> None:
        maskable = word_labels != NOT_A_WORD
        n_tokens = int(maskable.sum())
        if n_tokens == 0:
            return
        after_gap = np.concatenate([[True], ~maskable[:-1]])  # a word never continues across [SEP]
        starts = maskable & ((word_labels == WORD_START) | after_gap) if self.whole_word else maskable
        word_of = np.cumsum(starts) - 1  # word index of every token (meaningful where maskable)
        lengths = np.bincount(word_of[maskable], minlength=int(starts.sum()))
        chosen = np.zeros(len(lengths), dtype=bool)
        chosen[_choose_words(lengths, max(1, round(n_tokens * self.mlm_probability)), rng)] = True
        action = rng.random(len(lengths))  # one draw per word: all its tokens share the decision
        token_chosen = maskable & chosen[word_of]
        token_action = action[word_of]
        labels[token_chosen] = ids[token_chosen]
        to_mask = token_chosen & (token_action < self.mask_ratio)
        to_random = token_chosen & (token_action >= self.mask_ratio) & (token_action < self.mask_ratio + self.random_ratio)
        masked[to_mask] = self.mask_id
        masked[to_random] = rng.choice(self._candidates, size=int(to_random.sum()))


def _choose_words(lengths: np.ndarray, target: int, rng: np.random.Generator) -> list[int]:
    """Words in random order until `target` tokens; a word that would overshoot is skipped."""
    chosen, total = [], 0
    for word in rng.permutation(len(lengths)):
        if total + lengths[word] > target:
            continue
        chosen.append(int(word))
        total += int(lengths[word])
        if total == target:
            break
    return chosen


def _pad(rows: Sequence[Sequence[int]], width: int, value: int) -> torch.Tensor:
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return torch.from_numpy(out)
