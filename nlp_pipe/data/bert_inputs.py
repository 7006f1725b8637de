"""Labelled texts as token ids for the BERT classifiers (finetune, distill) and their batches.

Texts are tokenised once, unpadded (`input_ids`, `length`, `label` as a class id); a batch is padded
to its own longest row only, and the Trainer groups similar lengths, so little compute goes to padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from ..core.errors import UserError


@dataclass(frozen=True)
class Encoding:
    max_len: int  # tokens per text, [CLS] and [SEP] included
    truncated: int  # texts longer than max_len, cut at its end


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Untruncated token counts ([CLS] and [SEP] included), for choosing max_len."""
    return np.array([len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]], dtype=np.int64)


def auto_max_len(lengths: np.ndarray, percentile: float, limit: int) -> int:
    """The `percentile` of training lengths, rounded up to a multiple of 8, at most `limit`."""
    wanted = int(np.ceil(np.percentile(lengths, percentile))) if len(lengths) else limit
    return max(8, min(limit, -(-wanted // 8) * 8))


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text cut at max_len, and whether it was cut: one pass of the fast tokenizer (its
    encodings keep what truncation removed)."""
    batch = tokenizer(list(texts), truncation=True, max_length=max_len, return_attention_mask=False,
                      return_token_type_ids=False)
    return [e.ids for e in batch.encodings], [bool(e.overflowing) for e in batch.encodings]


def encode(ds: datasets.Dataset, tokenizer: Any, labels: list[str], max_len: int) -> tuple[datasets.Dataset, Encoding]:
    """`text` (+ `label` names) -> input_ids, length, label (class id); other columns dropped."""
    index = {name: i for i, name in enumerate(labels)}

    def tokenize_batch(batch: dict[str, list]) -> dict[str, list]:
        ids, cut = tokenize(tokenizer, batch["text"], max_len)
        out: dict[str, list] = {"input_ids": ids, "length": [len(x) for x in ids], "cut": cut}
        if "label" in batch:
            out["label"] = [index[v] for v in batch["label"]]
        return out

    if "label" in ds.column_names:
        unseen = sorted(set(ds["label"]) - set(index))
        if unseen:
            raise UserError(f"label '{unseen[0]}' is not among the model's labels ({', '.join(labels)})")
    # kept in memory: the datasets cache would key on the tokenizer's pickle, which is not stable
    encoded = ds.map(tokenize_batch, batched=True, batch_size=1000, remove_columns=ds.column_names, keep_in_memory=True)
    truncated = int(np.sum(encoded["cut"]))
    return encoded.remove_columns("cut"), Encoding(max_len, truncated)


class Collator:
    """Rows (a dict of columns from datasets) -> padded tensors: input_ids, attention_mask, labels."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: dict[str, list]) -> dict[str, torch.Tensor]:
        ids = rows["input_ids"]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if "label" in rows:
            batch["labels"] = torch.as_tensor(rows["label"], dtype=torch.long)
        return batch
