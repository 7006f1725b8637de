"""Build (or reuse) the pretraining dataset: documents -> tokens + word labels -> blocks, train/eval.

Tokenisation and jieba segmentation run through `datasets.map` (batched, `num_proc` workers) and
the finished splits are saved under `cache_root/<key>/`, where the key hashes everything that
decides the blocks (inputs' content fingerprints, tokenizer vocabulary, block settings). A rerun
with other training settings, or the rerun that resumes a killed run, loads them in a second.
Evaluation holds out whole documents, so no held-out text leaks into training blocks.
Under `accelerate launch` / torchrun the main process reads the documents, every process tokenises
its contiguous share of them (a document's tokens depend on that document only) into the staging
directory, and the main process joins the shares in order, builds the blocks and saves the splits:
the same cache as one process builds, which the others then load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from ..core import distributed
from ..core import manifest as manifests
from ..core.errors import UserError
from ..text.corpus import Counts, ReadOptions
from .blocks import IGNORE, BlockSpec, build_blocks, tokenize_documents
from .documents import FEATURES, Layout, documents

log = logging.getLogger(__name__)

DATA_VERSION = 4  # bump when the blocks built from the same inputs change (4: the same whatever num_proc)
STATS = "stats.json"
_MAP_BATCH = 1000  # documents per run of blocks: NSP negatives come from the same run


@dataclass(frozen=True)
class BuildSpec:
    """Everything besides the inputs that decides the blocks (hashed into the cache key)."""

    block: BlockSpec
    layout: Layout
    read: ReadOptions
    hmm: bool
    eval_docs: int
    pair_sets: int = 1  # sentence tasks: differently drawn pair sets in the training data (dupe_factor)


@dataclass
class Built:
    train: datasets.Dataset
    eval: datasets.Dataset | None
    stats: dict[str, Any]
    cache_dir: Path
    reused: bool


def build(paths: list[Path], input_key: str, tokenizer: Any, spec: BuildSpec, cache_root: Path,
          num_proc: int) -> Built:
    """The train/eval blocks for `paths`, from the cache when an identical build exists. Every process of a
    launch calls it (it tokenises a share); the main one writes the cache. `cache_root` belongs to one
    artifact and is used under its lock (the runner's), so the temporaries of killed builds found there
    are removed before a new build."""
    key = manifests.sha256_json({"version": DATA_VERSION, "inputs": input_key, "vocab": _vocab_hash(tokenizer),
                                 "spec": asdict(spec)})[:16]
    folder = cache_root / key
    if distributed.broadcast((folder / STATS).exists()):  # the main process decides: all build, or none
        log.info("pretraining blocks: reusing %s", folder)
        return _load(folder, reused=True)
    tmp = Path(distributed.broadcast(str(cache_root / f".{key}.tmp-{os.getpid()}")))
    main = distributed.is_main()
    if main:
        for stale in cache_root.glob(".*.tmp-*"):  # a SIGKILLed build skips the finally below
            shutil.rmtree(stale, ignore_errors=True)
    try:
        stats = _build_into(tmp, paths, tokenizer, spec, num_proc)
        if main:
            (tmp / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
            shutil.rmtree(tmp / "build", ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp, folder)  # complete or absent: a killed build is rebuilt, never half-used
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    distributed.barrier()  # the others load what the main process saved
    log.info("pretraining blocks: built %s", folder)
    return _load(folder, reused=False)


def _load(folder: Path, reused: bool) -> Built:
    stats = json.loads((folder / STATS).read_text(encoding="utf-8"))
    train = datasets.load_from_disk(str(folder / "train"))
    held_out = datasets.load_from_disk(str(folder / "eval")) if (folder / "eval").exists() else None
    return Built(train, held_out, stats, folder, reused)


def _build_into(tmp: Path, paths: list[Path], tokenizer: Any, spec: BuildSpec, num_proc: int) -> dict[str, Any]:
    """The splits' blocks saved under `tmp` and their statistics (by the main process; the others tokenise)."""
    docs, counts = _documents(tmp, paths, spec)
    n_eval = min(spec.eval_docs, len(docs) // 5)
    splits = {"train": docs, "eval": None}
    if n_eval:  # every process draws the same split; each writes its indices to a file of its own
        indices = {f"{split}_indices_cache_file_name": str(tmp / "build" / f"{split}-indices-{distributed.rank():05d}.arrow")
                   for split in ("train", "test")}
        parts = docs.train_test_split(test_size=n_eval, shuffle=True, seed=spec.block.seed, **indices)
        splits = {"train": parts["train"], "eval": parts["test"]}
    stats: dict[str, Any] = {"counts": counts.as_dict(), "documents": len(docs), "eval_documents": n_eval}
    for name, split in splits.items():
        if split is None:
            continue
        tokens = _tokenized(split, tokenizer, spec.hmm, tmp / "build" / f"tokens-{name}", num_proc)
        if tokens is None:  # not the main process
            continue
        sets = spec.pair_sets if name == "train" and spec.block.sentence_task != "none" else 1
        blocks = _blocks(tokens, spec, num_proc, sets, tmp / "build" / f"blocks-{name}")
        blocks.save_to_disk(str(tmp / name))
        stats[name] = block_stats(blocks, spec.block.max_seq_len)
    return stats


def _documents(tmp: Path, paths: list[Path], spec: BuildSpec) -> tuple[datasets.Dataset, Counts]:
    """The documents, read once by the main process into `tmp`; the others map its files. The counts are
    the main process's."""
    counts = Counts()

    def generate() -> Iterator[dict]:
        yield from documents(paths, spec.read, spec.layout, counts)

    files: list[str] | str = []
    if distributed.is_main():
        docs = datasets.Dataset.from_generator(generate, features=FEATURES, cache_dir=str(tmp / "build"),
                                               fingerprint=f"pretrain-docs-{tmp.name}")
        files = [f["filename"] for f in docs.cache_files] if len(docs) else \
            f"pretrain: no text in {', '.join(map(str, paths))} (dropped: {dict(counts.dropped)})"
    files = distributed.broadcast(files)
    if isinstance(files, str):  # every process stops with the same line
        raise UserError(files)
    if not distributed.is_main():
        docs = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
    return docs, counts


def _tokenized(docs: datasets.Dataset, tokenizer: Any, hmm: bool, prefix: Path, num_proc: int) -> datasets.Dataset | None:
    """Token ids and word labels of every document: each process tokenises its contiguous share of them into
    `PREFIX-RANK.arrow`; the main process gets the shares joined in document order, the others None."""
    share = docs.shard(num_shards=distributed.world_size(), index=distributed.rank(), contiguous=True)
    workers = max(1, num_proc // distributed.local_world_size())  # the processes of a machine share its cores
    workers = workers if len(share) >= 2 * _MAP_BATCH else 1
    if workers > 1:
        # the fast tokenizer's thread pool is disabled in forked workers anyway; saying so up front
        # avoids its fork warning and gives 1.7x with 2 workers (docs/performance.md)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    files: list[str] = []
    if len(share):
        prefix.parent.mkdir(parents=True, exist_ok=True)
        tokens = share.map(tokenize_documents, batched=True, batch_size=200, num_proc=workers if workers > 1 else None,
                           fn_kwargs={"tokenizer": tokenizer, "hmm": hmm}, remove_columns=share.column_names,
                           cache_file_name=f"{prefix}-{distributed.rank():05d}.arrow", desc="tokenise + jieba")
        files = [f["filename"] for f in tokens.cache_files]
    shares = distributed.gather(files)
    if not distributed.is_main():
        return None
    return datasets.concatenate_datasets([datasets.Dataset.from_file(f) for rank_files in shares for f in rank_files])


def _blocks(tokens: datasets.Dataset, spec: BuildSpec, num_proc: int, sets: int, prefix: Path) -> datasets.Dataset:
    """`sets` sets of blocks drawn with different seeds from the tokenised documents: pairs are fixed once
    built, so over several epochs a single set lets the model memorise each pair's order (training SOP
    accuracy rose to 65% while held-out stayed at 53%); Google BERT draws dupe_factor sets for this.

    Each run of _MAP_BATCH documents (its NSP/SOP negatives come from within it) is one row of a map over
    run starts, so the blocks are the same whatever `num_proc`: datasets.map's own shards of the documents
    start wherever len / num_proc falls, which cut the runs differently on machines with other core counts."""
    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "token_type_ids": datasets.Sequence(datasets.Value("int8")),
        "word_labels": datasets.Sequence(datasets.Value("int8")),
        "sentence_label": datasets.Value("int16"),
    })
    runs = datasets.Dataset.from_dict({"start": list(range(0, len(tokens), _MAP_BATCH))})
    parts = [runs.map(_run_blocks, batched=True, batch_size=1, num_proc=num_proc if len(runs) > 1 else None,
                      fn_kwargs={"tokens": tokens, "spec": replace(spec.block, seed=spec.block.seed + k)},
                      remove_columns=["start"], features=features, desc=f"blocks {k + 1}/{sets}",
                      cache_file_name=f"{prefix}-{k}.arrow", load_from_cache_file=False,
                      new_fingerprint=f"{prefix.name}-{k}")  # a fingerprint of its own: no hashing of `tokens`
             for k in range(sets)]
    return datasets.concatenate_datasets(parts) if sets > 1 else parts[0]


def _run_blocks(batch: dict[str, list], tokens: datasets.Dataset, spec: BlockSpec) -> dict[str, list]:
    start = batch["start"][0]
    end = min(start + _MAP_BATCH, len(tokens))
    return build_blocks(tokens[start:end], list(range(start, end)), spec)


def block_stats(blocks: datasets.Dataset, max_seq_len: int) -> dict[str, Any]:
    """Block count, real tokens, padding a full-length batch would carry, sentence-label mix."""
    lengths = pc.list_value_length(blocks.data.column("input_ids")).to_numpy()
    labels = np.asarray(blocks.data.column("sentence_label").to_numpy())
    tokens = int(lengths.sum())
    slots = len(lengths) * max_seq_len
    return {
        "blocks": len(lengths), "tokens": tokens,
        "padding_fraction": round(1 - tokens / slots, 5) if slots else 0.0,
        "pair_blocks": int((labels != IGNORE).sum()), "negative_pairs": int((labels == 1).sum()),
    }


def _vocab_hash(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return manifests.sha256_json([vocab, type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None)])
