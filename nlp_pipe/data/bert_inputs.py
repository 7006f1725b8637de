"""Labelled texts as token ids for the BERT classifiers (finetune, distill) and their batches.

Texts are tokenised once (the lengths that choose max_len come from the same pass), unpadded
(`input_ids`, `length`, `label` as a class id); a batch is padded to its own longest row (rounded up
to a multiple of 8), and the Trainer groups similar lengths, so little compute goes to padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from ..core.contract import Counts
from ..core.errors import UserError
from .token_stream import plain_backend

UNK_NOTICE = 0.01  # a share of [UNK] tokens above this gets a notice: the vocabulary lacks the text's characters


@dataclass(frozen=True)
class Encoding:
    max_len: int  # tokens per text, [CLS] and [SEP] included
    truncated: int  # texts longer than max_len, cut at its end
    texts: int = 0
    tokens: int = 0  # real tokens after truncation, specials included
    unknown: int = 0  # of which [UNK]

    def coverage(self) -> dict[str, float]:
        """How well the tokenizer covers the text: [UNK] share of tokens, share of texts cut at max_len."""
        return {"unk_share": round(self.unknown / max(self.tokens, 1), 5), "truncated_share": round(self.truncated / max(self.texts, 1), 5)}


def coverage(encodings: dict[str, Encoding], checkpoint: Any, stage: str, counts: Counts) -> dict[str, dict[str, float]]:
    """Per split coverage; a split whose [UNK] share is above 1% gets a notice in `counts` naming the fix."""
    figures = {name: enc.coverage() for name, enc in encodings.items()}
    notices = [f"{stage}: {f['unk_share']:.1%} of the {name} tokens are [UNK] under {checkpoint}'s tokenizer: its vocabulary "
               "lacks characters of this text; grow it with `nlp-pipe expand --checkpoint ... --corpus ...` or start from a "
               "checkpoint with a fuller vocabulary (the 21,128-entry Chinese BERT vocabulary in vocab/)"
               for name, f in figures.items() if f["unk_share"] > UNK_NOTICE]
    for text in notices:
        counts.notice(text)
    return figures


def coverage_line(figures: dict[str, dict[str, float]]) -> str:
    """The report's sentence on vocabulary coverage and truncation per split."""
    return ("Under the checkpoint's tokenizer: " + "; ".join(
        f"{name} {f['unk_share']:.2%} [UNK] tokens, {f['truncated_share']:.1%} texts cut" for name, f in figures.items()) + ".")


def encoding_of(tokenizer: Any, ids: Sequence[Any], truncated: int, max_len: int) -> Encoding:
    """The Encoding of texts already tokenised (id arrays after truncation, how many texts were cut)."""
    unk = tokenizer.unk_token_id
    unknown = sum(int((np.asarray(x) == unk).sum()) for x in ids) if unk is not None else 0
    return Encoding(max_len, truncated, len(ids), sum(len(x) for x in ids), unknown)


def auto_max_len(lengths: np.ndarray, percentile: float, limit: int) -> int:
    """The `percentile` of training lengths, rounded up to a multiple of 8, at most `limit`."""
    wanted = int(np.ceil(np.percentile(lengths, percentile))) if len(lengths) else limit
    return max(8, min(limit, -(-wanted // 8) * 8))


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int, backend: Any = None) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text cut at max_len (specials included), and whether it was cut. `backend`: the
    tokenizer's `plain_backend`, made once by a caller that tokenizes in chunks (a copy costs about 9 ms)."""
    backend = backend or plain_backend(tokenizer)
    return _cut(tokenizer, backend, _pieces(backend, texts), max_len)


def _pieces(backend: Any, texts: Sequence[str]) -> list[Any]:
    """The tokenizers backend's encodings before special tokens and truncation: one pass gives the lengths that
    choose max_len and, cut, the ids (what tokenizer(texts, truncation=True) does in two). `backend` is the
    tokenizer's `plain_backend`: post_process would otherwise truncate and pad again as the saved file says."""
    return backend.encode_batch(list(texts), add_special_tokens=False)


def _cut(tokenizer: Any, backend: Any, pieces: list[Any], max_len: int) -> tuple[list[list[int]], list[bool]]:
    """Cut each encoding to leave room for the special tokens, then add them with the tokenizer's own template
    (post_process), as its truncation does."""
    room = max(max_len - tokenizer.num_special_tokens_to_add(), 0)
    ids, cut = [], []
    for piece in pieces:
        cut.append(len(piece) > room)
        piece.truncate(room)
        ids.append(backend.post_process(piece).ids)
    return ids, cut


def encode(ds: datasets.Dataset, tokenizer: Any, labels: list[str], max_len: int | None,
           percentile: float = 95.0, limit: int = 512) -> tuple[datasets.Dataset, Encoding]:
    """`text` (+ `label` names) -> input_ids, length, label (class id); other columns dropped. max_len None:
    the `percentile` of these texts' token lengths (auto_max_len, at most `limit`), read from the same pass;
    the Encoding says which max_len was used."""
    index = {name: i for i, name in enumerate(labels)}
    if "label" in ds.column_names:
        unseen = sorted(set(ds["label"]) - set(index))
        if unseen:
            raise UserError(f"label '{unseen[0]}' is not among the model's labels ({', '.join(labels)})")
    backend = plain_backend(tokenizer)
    pieces = _pieces(backend, ds["text"])
    if max_len is None:
        max_len = auto_max_len(np.array([len(p) for p in pieces]) + tokenizer.num_special_tokens_to_add(), percentile, limit)
    ids, cut = _cut(tokenizer, backend, pieces, max_len)
    columns: dict[str, list] = {"input_ids": ids, "length": [len(x) for x in ids]}
    if "label" in ds.column_names:
        columns["label"] = [index[v] for v in ds["label"]]
    found = encoding_of(tokenizer, ids, int(sum(cut)), max_len)
    return datasets.Dataset.from_dict(columns), found


@dataclass(frozen=True)
class Encoded:
    """Named datasets as token ids at one max_len: {name: (rows, Encoding)}, "train" first."""

    max_len: int
    parts: dict[str, tuple[datasets.Dataset, Encoding]]

    def __getitem__(self, name: str) -> datasets.Dataset:
        return self.parts[name][0]

    @property
    def encodings(self) -> dict[str, Encoding]:
        return {name: enc for name, (_, enc) in self.parts.items()}

    @property
    def rows(self) -> int:
        return sum(len(ds) for ds, _ in self.parts.values())

    def coverage(self, checkpoint: Any, stage: str, counts: Counts) -> dict[str, dict[str, float]]:
        return coverage(self.encodings, checkpoint, stage, counts)


def encode_all(named: dict[str, datasets.Dataset | None], tokenizer: Any, labels: list[str], max_len: int | None,
               percentile: float = 95.0, limit: int = 512) -> Encoded:
    """`encode` each dataset given (None: left out) at one max_len: `max_len`, or (None) the `percentile` of the
    first one's (the training texts') token lengths, from the same pass. The tokenizer keeps it as its
    model_max_length: saved with the model, pipeline(..., truncation=True) then cuts as training did."""
    parts: dict[str, tuple[datasets.Dataset, Encoding]] = {}
    for name, ds in named.items():
        if ds is not None:
            parts[name] = encode(ds, tokenizer, labels, max_len, percentile, limit)
            max_len = parts[name][1].max_len
            tokenizer.model_max_length = max_len
    if max_len is None:
        raise ValueError("encode_all needs a dataset or a max_len")
    return Encoded(max_len, parts)


class Collator:
    """Rows -> padded tensors input_ids, attention_mask, labels: transformers' DataCollatorWithPadding, to the
    batch's longest row rounded up to a multiple of 8 (tensor-core friendly shapes on GPU, as the MLM collator
    pads). Rows come as a dict of columns (a datasets.Dataset) or as a list of rows (pretraining's blocks, whose
    input_ids alone are used: distillation needs no labels, and their token types are all 0)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8, return_tensors="pt")

    def __call__(self, rows: dict[str, list] | list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if isinstance(rows, list):
            return dict(self.pad([{"input_ids": np.asarray(row["input_ids"]).tolist()} for row in rows]))
        keys = [k for k in ("input_ids", "label") if k in rows]
        return dict(self.pad([dict(zip(keys, values)) for values in zip(*(rows[k] for k in keys))]))
