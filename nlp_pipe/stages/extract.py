"""Stage `extract`: feature vectors from a BERT checkpoint for every text of a corpus.

    nlp-pipe extract --checkpoint runs/bert --corpus texts.txt --out runs/feats
    nlp-pipe extract --checkpoint runs/bert --corpus runs/seg --pooling mean --layer -2 --output-format dataset --out runs/feats

Writes features.npy (float32 [texts, hidden] for cls/mean; [tokens, hidden] plus offsets.npy for
tokens pooling, text i = features[offsets[i]:offsets[i+1]]) or a `datasets` dataset under dataset/
(text, label, features), and index.jsonl (row, text, label, source, tokens) in input order.
Texts are batched by token length, so batches carry almost no padding. Under `accelerate launch` /
torchrun every process reads and tokenises all texts, encodes every R-th of the same length-sorted
batches and writes them to its part (core.shards); the main one places them: the same bytes as one
process.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..checkpoints import loading
from ..core import console, distributed, shards
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import DATASET_DIR, FEATURES_NPY, INDEX_JSONL, OFFSETS_NPY
from ..data.bert_inputs import coverage, encoding_of, tokenize
from ..data.token_stream import plain_backend
from ..text.corpus import ReadOptions, read_texts

NAME = "extract"
VERSION = 2  # 2: a tokenizer.json with padding and truncation on (a finetune artifact's) is encoded without them
SHARDED = True  # the forward passes run across the processes of a launch
OUTPUTS = (INDEX_JSONL,)

INPUTS = {
    "checkpoint": Input("a BERT-family HuggingFace directory with its tokenizer (pretrain, expand, finetune or distill "
                        "artifact, or any local BERT dir); its base encoder is used", kind="any",
                        stages=("pretrain", "expand", "finetune", "distill"), hub=True),
    "corpus": Input("texts: txt/jsonl/csv/tsv files or segment artifacts", kind="any", multiple=True, stages=("segment",)),
}


@dataclass(frozen=True)
class Config(ReadOptions):
    pooling: Literal["cls", "mean", "tokens"] = option(
        "cls", "cls: the [CLS] vector; mean: average over the text's real tokens ([CLS] and [SEP] included, padding "
               "excluded); tokens: every token's vector")
    layer: int = option(-1, "hidden layer: -1 = last, 0 = embedding output, k = output of encoder layer k (negative counts back from the "
                        "last)")
    max_seq_len: int = option(128, "tokens per text, [CLS] and [SEP] included; longer texts are cut and counted as truncated", min=2)
    batch_size: int = option(64, "texts per forward pass", min=1)
    output_format: Literal["npy", "dataset"] = option("npy", "features.npy (+ offsets.npy for tokens) or a datasets dataset under dataset/")
    normalize: bool = option(False, "L2-normalise every vector (every token's for tokens pooling)")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    tokenizer, model = _load(inputs["checkpoint"][0])
    layers, positions = model.config.num_hidden_layers, model.config.max_position_embeddings
    if not -layers - 1 <= config.layer <= layers:
        raise UserError(f"extract: layer = {config.layer} is out of range for a {layers}-layer model ({-layers - 1}..{layers})")
    if config.max_seq_len > positions:
        raise UserError(f"extract: max_seq_len = {config.max_seq_len} exceeds the model's {positions} positions")
    counts = Counts()
    rows = read_texts(inputs["corpus"], config, counts, NAME)
    if not rows:
        raise UserError(f"extract: no text to encode; all {counts.rows_in} corpus rows were dropped {dict(counts.dropped)}")
    texts, labels, sources = (list(column) for column in zip(*rows))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    ids, truncated = _tokenize(tokenizer, texts, config.max_seq_len)
    vocabulary = coverage({"corpus": encoding_of(tokenizer, ids, truncated, config.max_seq_len)},
                          inputs["checkpoint"][0], NAME, counts)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shape = (int(offsets[-1]) if config.pooling == "tokens" else len(texts), model.config.hidden_size)
    batches = _batches(lengths, config.batch_size)
    padded = sum(len(b) * int(lengths[b].max()) - int(lengths[b].sum()) for b in batches)
    encoded = _encode(model.to(device), config, ids, lengths, batches, tokenizer.pad_token_id or 0, device)
    if distributed.world_size() > 1:
        encoded = _sharded(encoded, out, config.pooling, lengths)
        if not distributed.is_main():
            for _ in encoded:  # encodes this rank's batches into its part
                pass
            return Result(counts, {"rows": len(texts)})
    features: np.ndarray
    if config.output_format == "npy":  # written in place: a tokens matrix need not fit in memory
        features = _reserved_memmap(out / FEATURES_NPY, shape)
    else:
        features = np.empty(shape, dtype=np.float32)
    for batch_rows, hidden in encoded:
        if config.pooling == "tokens":
            for r, i in enumerate(batch_rows):
                features[offsets[i]:offsets[i + 1]] = hidden[r, :lengths[i]]
        else:
            features[batch_rows] = hidden
    seconds = time.perf_counter() - t0
    if isinstance(features, np.memmap):
        features.flush()
        if config.pooling == "tokens":
            np.save(out / OFFSETS_NPY, offsets)
    else:
        _save_dataset(out / DATASET_DIR, texts, labels, features, offsets if config.pooling == "tokens" else None)
    _write_index(out / INDEX_JSONL, texts, labels, sources, lengths)
    metrics = {"rows": len(texts), "dim": shape[1], "pooling": config.pooling, "layer": config.layer,
               "texts_per_s": round(len(texts) / seconds, 1), "truncated": truncated, "tokens": int(offsets[-1]),
               "padding_fraction": round(padded / (padded + int(offsets[-1])), 5), **vocabulary["corpus"]}
    return Result(counts, metrics, _report(config, metrics, shape), {"device": str(device)})


def _load(checkpoint: Path) -> tuple[Any, Any]:
    from transformers import AutoModel

    return loading.load_checked(AutoModel, checkpoint, NAME)


def _tokenize(tokenizer: Any, texts: list[str], max_len: int) -> tuple[list[np.ndarray], int]:
    """Token ids of every text (no padding) and how many texts were cut to max_len."""
    ids, truncated, backend = [], 0, plain_backend(tokenizer)
    for start in range(0, len(texts), 1000):
        batch_ids, cut = tokenize(tokenizer, texts[start:start + 1000], max_len, backend)
        ids += [np.asarray(x, dtype=np.int64) for x in batch_ids]
        truncated += sum(cut)
    return ids, truncated


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Rows of each forward pass, longest first (an out-of-memory batch fails at once): the same on every rank."""
    order = np.argsort(-lengths, kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def _encode(model: Any, config: Config, ids: list[np.ndarray], lengths: np.ndarray, batches: list[np.ndarray],
            pad_id: int, device: torch.device) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, their pooled vectors: [rows, dim], or [rows, width, dim] for tokens) for the batches this rank owns."""
    for k, rows in enumerate(console.progress(iterable=batches, desc="extract", unit=" batch")):
        if not shards.owns(k):
            continue
        width = int(lengths[rows].max())
        input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        for r, i in enumerate(rows):
            input_ids[r, :lengths[i]] = ids[i]
        mask = torch.from_numpy(np.arange(width) < lengths[rows][:, None]).to(device)
        outputs = model(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=mask.long(),
                        output_hidden_states=config.layer != -1)
        hidden = outputs.last_hidden_state if config.layer == -1 else outputs.hidden_states[config.layer]
        if config.pooling == "cls":
            hidden = hidden[:, 0]
        elif config.pooling == "mean":
            hidden = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        if config.normalize:
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
        yield rows, hidden.float().cpu().numpy()


def _sharded(encoded: Iterator[tuple[np.ndarray, np.ndarray]], out: Path, pooling: str,
             lengths: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This rank's batches into its part; then, on the main rank, every rank's batches in order."""
    import pyarrow as pa

    with shards.PartWriter(out, NAME) as part:
        for rows, hidden in encoded:
            part.write(pa.table({"rows": pa.array([rows.astype(np.int64).tobytes()], pa.binary()),
                                 "hidden": pa.array([np.ascontiguousarray(hidden).tobytes()], pa.binary())}))
    sizes = distributed.gather(part.batches)
    if distributed.is_main():
        for batch in shards.merged(out, NAME, sizes):
            rows = np.frombuffer(batch.column(0)[0].as_py(), dtype=np.int64)
            hidden = np.frombuffer(batch.column(1)[0].as_py(), dtype=np.float32)
            width = int(lengths[rows].max())
            yield rows, hidden.reshape((len(rows), width, -1) if pooling == "tokens" else (len(rows), -1))


def _save_dataset(folder: Path, texts: list[str], labels: list[str | None], features: np.ndarray,
                  offsets: np.ndarray | None) -> None:
    import datasets
    import pyarrow as pa

    vectors = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
    if offsets is not None:  # one list of token vectors per text
        vectors = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), vectors)
    columns = {"text": pa.array(texts, pa.string())}
    if any(label is not None for label in labels):
        columns["label"] = pa.array(labels, pa.string())
    columns["features"] = vectors
    datasets.Dataset(pa.table(columns)).save_to_disk(str(folder))


def _write_index(path: Path, texts: list[str], labels: list[str | None], sources: list[str], lengths: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i, (text, label, source) in enumerate(zip(texts, labels, sources)):
            record = {"row": i, "text": text, **({"label": label} if label is not None else {}),
                      "source": source, "tokens": int(lengths[i])}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _report(config: Config, m: dict[str, Any], shape: tuple[int, int]) -> str:
    layer = "last layer" if config.layer == -1 else f"hidden_states[{config.layer}]"
    lines = ["## Features",
             f"{m['rows']:,} texts -> {config.pooling} vectors of {m['dim']} from the {layer}"
             f"{', L2-normalised' if config.normalize else ''}; {m['tokens']:,} tokens, {m['truncated']} texts cut to "
             f"{config.max_seq_len} tokens; {m['texts_per_s']:,.1f} texts/s, padding {m['padding_fraction']:.2%}.", ""]
    if config.output_format == "npy":
        lines.append(f"`features.npy`: float32 {list(shape)}, `np.load('features.npy')`"
                     + ("; text i is `features[offsets[i]:offsets[i+1]]` with `offsets = np.load('offsets.npy')`."
                        if config.pooling == "tokens" else "; row i is text i."))
    else:
        lines.append("`dataset/`: `datasets.load_from_disk('dataset')`, columns text, label (when present), features.")
    lines.append("`index.jsonl`: one line per text in input order (row, text, label, source file, tokens).")
    return "\n".join(lines)


def _reserved_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A float32 .npy written in place, its blocks reserved on disk first: open_memmap makes a sparse file, whose
    pages get their blocks only when written, and a full disk then killed the process with SIGBUS (exit 135, no
    message); posix_fallocate says ENOSPC up front, which the runner reports in one line."""
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it: written as before
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        os.close(fd)
    return features
