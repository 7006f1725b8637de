"""Build (or reuse) the pretraining data: documents -> one token stream with word starts -> block layouts.

The documents are read once, in runs of _RUN_DOCS, and each run is tokenised, cut into words (a
segment artifact's words, or jieba's) and laid out into blocks (data/blocks.py) by a pool of worker
processes, results joined in run order: every run depends on its own documents and index only, so
the data is the same whatever the number of workers. What is written is compact
(docs/pretraining-cache.md): the token ids once, in the smallest unsigned type the vocabulary fits,
word starts as bits, and each block as its layout (token ranges, segment A, sentence label), so the
`pair_sets` sets of sentence pairs cost a few bytes a block each. Blocks are put together when read.

The folder is `cache_root/<key>/`, where the key hashes everything that decides the data (inputs'
fingerprints, tokenizer vocabulary, block settings, segmenter, DATA_VERSION): a rerun, another
--out or another pipeline with the same inputs loads it in a second. Builders of one key wait for
each other on its lock; a build is written to `.<key>.tmp-*` (artifacts.staging) and renamed into place when
complete, and the leftovers of killed builds are removed under that lock.
Evaluation holds out whole documents, drawn from the first 50 x eval_docs documents (so the build
never needs the document count in advance), so no held-out text leaks into training blocks.
Under `accelerate launch` the main process builds (its workers use the machine's cores) and the
others load what it saved. `distill --mode general` trains on the same data with sentence task none.
"""

from __future__ import annotations

import bisect
import json
import logging
import multiprocessing
import os
import random
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core import artifacts, cache, console, distributed, process
from ..core import manifest as manifests
from ..core.contract import Counts
from ..core.errors import UserError
from ..core.files import segmented_dataset
from ..text.corpus import ReadOptions
from ..text.segmenter import Segmenter, SegmenterSpec, default_workers
from .bert_inputs import Encoding
from .blocks import IGNORE, BlockSpec, Doc, assemble, build_layouts, doc_in_stream
from .documents import Document, Layout, documents
from .token_stream import TokenEncoder, sentence_starts, word_start_flags, word_starts

log = logging.getLogger(__name__)

DATA_VERSION = 5  # bump when the data built from the same inputs changes (5: token stream + block layouts)
CACHE_KIND = cache.PRETRAINING  # its folder in the shared cache
STATS = cache.STATS
META = "meta.json"
_RUN_DOCS = 1000  # documents per run: NSP negatives come from the same run
_EVAL_POOL = 50  # held-out documents are drawn from the first 50 x eval_docs (read ahead, kept in memory)
_CHUNK = 1 << 24  # tokens of the token stream read at a time when counting [UNK]s


@dataclass(frozen=True)
class BuildSpec:
    """Everything besides the inputs that decides the data (hashed into the cache key)."""

    block: BlockSpec
    layout: Layout
    read: ReadOptions
    segmenter: SegmenterSpec  # cuts raw text into the words whole-word masking masks
    eval_docs: int
    pair_sets: int = 1  # sentence tasks: differently drawn pair sets in the training data (dupe_factor)


@dataclass
class Built:
    train: Blocks
    eval: Blocks | None
    stats: dict[str, Any]
    cache_dir: Path
    reused: bool


def cache_key(input_key: str, tokenizer: Any, spec: BuildSpec) -> str:
    return manifests.sha256_json({"version": DATA_VERSION, "inputs": input_key, "vocab": _vocab_hash(tokenizer),
                                  "spec": asdict(spec)})[:16]


def build(paths: list[Path], input_key: str, tokenizer: Any, spec: BuildSpec, cache_root: Path,
          num_proc: int, stage: str = "pretrain") -> Built:
    """The train/eval blocks for `paths`, from the cache when an identical build exists. Every process of a
    launch calls it; the main one builds (under the key's lock, waiting for another builder of it). `stage`
    names the caller in errors."""
    key = cache_key(input_key, tokenizer, spec)
    folder = cache_root / key
    reused = True
    if distributed.is_main() and not (folder / STATS).exists():
        with artifacts.locked(folder, wait=True):
            if not (folder / STATS).exists():  # not built meanwhile by the builder we waited for
                with artifacts.staging(folder) as tmp:  # it also removes what a SIGKILLed build left
                    stats = _build_into(tmp, paths, tokenizer, spec, num_proc, stage)
                    stats["built_for"] = {"inputs": [str(p) for p in paths], "built_at": artifacts.now()}
                    (tmp / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
                    os.rename(tmp, folder)  # complete or absent: a killed build is rebuilt, never half-used
                reused = False
    distributed.barrier()  # the others load what the main process saved
    log.info("pretraining blocks: %s %s", "reusing" if reused else "built", folder)
    return load(folder, spec.block, reused=reused)


def build_for(paths: list[Path], fingerprints: Any, tokenizer: Any, spec: BuildSpec, out: Path, cache_dir: str = "",
              num_proc: int = 0, stage: str = "pretrain") -> Built:
    """`build` as a stage calls it: keyed by its corpus inputs' fingerprints (as run_identity records them), in the
    shared cache (`cache_dir`, else $NLP_PIPE_CACHE, else beside `out`: artifacts.cache_dir), tokenised by
    `num_proc` worker processes (0: one per core)."""
    return build(paths, manifests.sha256_json(fingerprints), tokenizer, spec, artifacts.cache_dir(out, cache_dir) / CACHE_KIND,
                 num_proc or default_workers(), stage)


def read_options(config: Any) -> ReadOptions:
    """The ReadOptions of a stage Config that inherits them (pretrain's, distill's)."""
    return ReadOptions(**{f.name: getattr(config, f.name) for f in fields(ReadOptions)})


def plain_spec(read: ReadOptions, tokenizer: Any, max_len: int, seed: int, eval_docs: int) -> BuildSpec:
    """Blocks of the whole text without sentence pairs, documents separated by [SEP]: the data of
    `pretrain --sentence-task none` with the same corpus, tokenizer, max_seq_len, seed and eval_docs (one cache entry)."""
    return BuildSpec(BlockSpec(max_len, "none", seed, tokenizer.cls_token_id, tokenizer.sep_token_id), "auto", read,
                     SegmenterSpec(), eval_docs)


def stream_encoding(built: Built, tokenizer: Any, max_len: int) -> Encoding:
    """The corpus's [UNK] count, read from the token stream a chunk at a time (it stays on disk); no text is cut."""
    ids, unk = built.train.stream.ids, tokenizer.unk_token_id
    unknown = 0 if unk is None else sum(int(np.count_nonzero(ids[i:i + _CHUNK] == unk)) for i in range(0, len(ids), _CHUNK))
    return Encoding(max_len, 0, built.stats["documents"], int(built.stats["tokens"]), unknown)


def usage(built: Built, blocks_trained: int) -> dict[str, Any]:
    """How much of the corpus training saw: documents, blocks and tokens, and the share of the blocks
    `blocks_trained` (steps x batch x accumulation x processes) covered."""
    stats, train = built.stats, built.stats["train"]
    return {"documents": stats["documents"] - stats["eval_documents"], "eval_documents": stats["eval_documents"],
            "text_tokens": stats["tokens"], "blocks": train["blocks"], "block_tokens": train["tokens"],
            "eval_blocks": stats.get("eval", {}).get("blocks", 0), "padding_fraction": train["padding_fraction"],
            "blocks_trained": blocks_trained, "passes": round(blocks_trained / max(train["blocks"], 1), 4),
            "data_cache_reused": built.reused}


def usage_line(used: dict[str, Any], max_len: int) -> str:
    """The report's sentence on `usage`."""
    documents = used["documents"] + used["eval_documents"]
    return (f"Data: {documents:,} documents, {used['text_tokens']:,} tokens, every one of them in a block (none cut off): "
            f"{used['blocks']:,} training blocks of {max_len} tokens ([SEP] between documents, {used['padding_fraction']:.2%} "
            f"padding) and {used['eval_blocks']:,} evaluation blocks from {used['eval_documents']:,} held-out documents; "
            f"the steps trained on {used['blocks_trained']:,} blocks, {used['passes']:.4g} passes over the training blocks.")


def load(folder: Path, spec: BlockSpec, reused: bool) -> Built:
    stats = json.loads((folder / STATS).read_text(encoding="utf-8"))
    train, held_out = _blocks(folder, json.loads((folder / META).read_text(encoding="utf-8")), spec)
    return Built(train, held_out, stats, folder, reused)


def _blocks(folder: Path, meta: dict[str, Any], spec: BlockSpec) -> tuple[Blocks, Blocks | None]:
    stream = _Stream(folder, meta)
    train = Blocks(stream, [_layout(folder, name, meta) for name in meta["train"]], spec)
    return train, (Blocks(stream, [_layout(folder, "eval", meta)], spec) if meta["eval_blocks"] else None)


# ---------------------------------------------------------------- reading: blocks put together on access

class _Stream:
    """The token ids (memory-mapped) and word-start bits of the whole corpus."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        n = meta["tokens"]
        self.ids = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(n,)) if n else np.zeros(0, meta["dtype"])
        bits = folder / "word_starts.bin"
        self.bits = np.memmap(bits, dtype=np.uint8, mode="r") if bits.stat().st_size else np.zeros(0, np.uint8)

    def __getitem__(self, span: slice) -> np.ndarray:
        """Word-start flags of tokens span.start:span.stop."""
        start, stop = span.start, span.stop
        unpacked = np.unpackbits(self.bits[start // 8:(stop + 7) // 8], bitorder="little")
        return unpacked[start % 8:start % 8 + stop - start].astype(bool)


@dataclass
class _Layout:
    ranges: np.ndarray  # (n, 2) token ranges
    ends: np.ndarray  # block i's ranges end at ends[i]
    a_counts: np.ndarray
    labels: np.ndarray


def _layout(folder: Path, name: str, meta: dict[str, Any]) -> _Layout:
    def read(suffix: str, dtype: Any) -> np.ndarray:
        """Memory-mapped: a corpus of many GB has layouts of many hundred MB, which stay on disk."""
        path = folder / f"{name}.{suffix}"
        return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)

    return _Layout(read("ranges", np.int64).reshape(-1, 2), read("ends", np.int64), read("a_counts", np.uint16),
                   read("labels", np.int8))


class Blocks:
    """Sized, indexable blocks: row i is a dict of input_ids, token_type_ids, word_labels, sentence_label
    (a slice or a list of indices gives a list of rows)."""

    def __init__(self, stream: _Stream, parts: list[_Layout], spec: BlockSpec) -> None:
        self.stream, self.parts, self.spec = stream, parts, spec
        self._bounds = np.cumsum([0, *(len(p.labels) for p in parts)]).tolist()

    def __len__(self) -> int:
        return self._bounds[-1]

    def __getitem__(self, index: int | slice | list[int]) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not isinstance(index, int | np.integer):
            return [self[int(i)] for i in index]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index = int(index) % len(self)
        k = bisect.bisect_right(self._bounds, index) - 1
        part, i = self.parts[k], index - self._bounds[k]
        first = int(part.ends[i - 1]) if i else 0
        ids, types, words = assemble(part.ranges[first:int(part.ends[i])], int(part.a_counts[i]), self.stream.ids,
                                     self.stream, self.spec)
        return {"input_ids": ids, "token_type_ids": types, "word_labels": words, "sentence_label": int(part.labels[i])}

    def lengths_and_labels(self, size: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(tokens of each block, [CLS] and [SEP]s included; sentence labels) of up to `size` blocks at a time,
        so statistics over a corpus of any size take flat memory."""
        for part in self.parts:
            for lo in range(0, len(part.labels), size):
                hi = min(lo + size, len(part.labels))
                first = int(part.ends[lo - 1]) if lo else 0
                ends = np.asarray(part.ends[lo:hi]) - first
                ranges = np.asarray(part.ranges[first:int(part.ends[hi - 1])])
                totals = np.concatenate(([0], np.cumsum(ranges[:, 1] - ranges[:, 0] + 1)))  # a range and its [SEP]
                yield totals[ends] - totals[np.concatenate(([0], ends[:-1]))] + 1, np.asarray(part.labels[lo:hi], np.int64)

    def rows(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            row = self[i]
            yield {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()}

    def to_dataset(self) -> Any:
        """The blocks as a datasets.Dataset (for export)."""
        import datasets

        return datasets.Dataset.from_generator(self.rows, features=datasets.Features({
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "token_type_ids": datasets.Sequence(datasets.Value("int8")),
            "word_labels": datasets.Sequence(datasets.Value("int8")),
            "sentence_label": datasets.Value("int16"),
        }))


def block_stats(blocks: Blocks, max_seq_len: int) -> dict[str, Any]:
    """Block count, real tokens, padding a full-length batch would carry, sentence-label mix."""
    n = tokens = pairs = negatives = 0
    for lengths, labels in blocks.lengths_and_labels():
        n, tokens = n + len(lengths), tokens + int(lengths.sum())
        pairs, negatives = pairs + int((labels != IGNORE).sum()), negatives + int((labels == 1).sum())
    slots = n * max_seq_len
    return {"blocks": n, "tokens": tokens, "padding_fraction": round(1 - tokens / slots, 5) if slots else 0.0,
            "pair_blocks": pairs, "negative_pairs": negatives}


# ---------------------------------------------------------------- building

@dataclass
class _Run:
    index: int
    docs: list[Document]
    held_out: list[bool]


@dataclass
class _RunResult:
    ids: np.ndarray
    word_start: np.ndarray
    layouts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # name -> ranges, ends, a_counts, labels
    documents: int
    eval_documents: int


def _build_into(tmp: Path, paths: list[Path], tokenizer: Any, spec: BuildSpec, num_proc: int, stage: str) -> dict[str, Any]:
    """Write the token stream and the layouts into `tmp`; returns the statistics."""
    counts = Counts()
    sets = spec.pair_sets if spec.block.sentence_task != "none" else 1
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    names = [f"train-{k}" for k in range(sets)] + ["eval"]
    writer = _Writer(tmp, dtype, names)
    total = sum(p.stat().st_size for p in paths) if all(p.is_file() for p in paths) else None  # else documents
    bar = console.progress(total=total, unit="B", unit_scale=True, desc="pretraining data") if total else \
        console.progress(total=_rows(paths, stage), unit=" docs", desc="pretraining data")
    documents_seen = eval_seen = 0
    runs = _runs(documents(paths, spec.read, spec.layout, counts, stage), spec)
    with bar:
        for result, size in _parallel(runs, (TokenEncoder(tokenizer), spec, sets), num_proc):
            writer.add(result)
            documents_seen += result.documents
            eval_seen += result.eval_documents
            bar.update(size if total else result.documents)
    meta = writer.finish(names)
    if not meta["tokens"]:
        raise UserError(f"{stage}: no text in {', '.join(map(str, paths))} (dropped: {dict(counts.dropped)})")
    built = _blocks(tmp, meta, spec.block)
    stats: dict[str, Any] = {"counts": counts.as_dict(), "documents": documents_seen, "eval_documents": eval_seen,
                             "tokens": meta["tokens"], "train": block_stats(built[0], spec.block.max_seq_len)}
    if built[1] is not None:
        stats["eval"] = block_stats(built[1], spec.block.max_seq_len)
    if counts.notices:  # how a file was read (a detected layout): pretraining.json and the report say it
        stats["notices"] = counts.notices
    return stats


def _rows(paths: list[Path], stage: str) -> int | None:
    """Rows of the segment artifacts, the bar's total when every input is one (its empty rows are never counted
    as documents: the bar may stop short of it); None with a text file among them."""
    if not all(p.is_dir() for p in paths):
        return None
    return sum(len(segmented_dataset(p, stage)) for p in paths)


def _runs(docs: Iterable[Document], spec: BuildSpec) -> Iterator[_Run]:
    """Runs of _RUN_DOCS documents with the ones held out for evaluation marked.
    The held-out documents are drawn from the first _EVAL_POOL x eval_docs (fewer when the corpus is
    shorter: a fifth of it at most)."""
    it = iter(docs)
    pool_size = _EVAL_POOL * spec.eval_docs
    head = [d for _, d in zip(range(pool_size), it)]
    n_eval = min(spec.eval_docs, len(head) // 5)
    held = set(random.Random(spec.block.seed).sample(range(len(head)), n_eval))

    def chained() -> Iterator[Document]:
        yield from head
        yield from it

    index, batch = 0, []
    for doc in chained():
        batch.append(doc)
        if len(batch) == _RUN_DOCS:
            yield _run(index, batch, held)
            index, batch = index + 1, []
    if batch:
        yield _run(index, batch, held)


def _run(index: int, batch: list[Document], held: set[int]) -> _Run:
    first = index * _RUN_DOCS
    return _Run(index, batch, [first + i in held for i in range(len(batch))])


_worker: dict[str, Any] = {}  # per worker process: the encoder, the build spec, a segmenter once needed


def _init_worker(state: tuple[TokenEncoder, BuildSpec, int]) -> None:
    _worker["encoder"], _worker["spec"], _worker["sets"] = state
    _worker["segmenter"] = None


def _process(run: _Run) -> tuple[_RunResult, int]:
    encoder: TokenEncoder = _worker["encoder"]
    spec: BuildSpec = _worker["spec"]
    texts = [d.text for d in run.docs]
    text = "\n".join(texts)  # one text: the encoder's numpy work runs once per run, not per document
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    bases = np.cumsum(lengths + 1) - (lengths + 1)
    encoded = encoder.encode(text)
    sentence_chars, word_chars = [bases], [bases]
    for doc, base in zip(run.docs, bases.tolist()):
        sentence_chars.append(np.asarray(doc.sentences if doc.sentences is not None else sentence_starts(doc.text)) + base)
        word_chars.append(word_starts(doc.text, doc.words if doc.words is not None else _cut(doc.text, spec)) + base)
    flags = word_start_flags(encoded.chars, np.concatenate(word_chars + sentence_chars), len(text))
    starts = np.searchsorted(encoded.chars, bases)
    ends = np.searchsorted(encoded.chars, bases + lengths)
    sentences = np.searchsorted(encoded.chars, np.unique(np.concatenate(sentence_chars)))
    piece = spec.block.max_seq_len - 3
    train: list[Doc] = []
    held: list[Doc] = []
    for start, end, is_eval in zip(starts.tolist(), ends.tolist(), run.held_out):
        if end > start:
            lo, hi = np.searchsorted(sentences, [start, end])
            (held if is_eval else train).append(doc_in_stream(start, end, sentences[lo:hi], piece))
    layouts = {}
    for k in range(_worker["sets"]):
        block = replace(spec.block, seed=spec.block.seed + k)
        layouts[f"train-{k}"] = _arrays(build_layouts(train, block, _seed(block.seed, run.index, 0)))
    layouts["eval"] = _arrays(build_layouts(held, spec.block, _seed(spec.block.seed, run.index, 1)))
    size = len(text.encode("utf-8"))
    return _RunResult(encoded.ids.astype(np.uint32), flags, layouts, len(train) + len(held), len(held)), size


def _seed(seed: int, run: int, split: int) -> int:
    return seed * 1_000_003 + 2 * run + split  # the same blocks on every rebuild, other draws in every run


def _cut(text: str, spec: BuildSpec) -> list[str]:
    if _worker["segmenter"] is None:
        _worker["segmenter"] = Segmenter(spec.segmenter)
    return _worker["segmenter"].engine.words(text)  # whitespace included: the words then cover the text


def _arrays(layouts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(layouts.ranges, dtype=np.int64).reshape(-1, 2), np.asarray(layouts.offsets[1:], dtype=np.int64),
            np.asarray(layouts.a_counts, dtype=np.uint16), np.asarray(layouts.labels, dtype=np.int8))


def _parallel(runs: Iterator[_Run], state: tuple[TokenEncoder, BuildSpec, int],
              workers: int) -> Iterator[tuple[_RunResult, int]]:
    """`_process` of every run in `workers` processes (this one reads and writes), results in run order;
    a bounded number of runs in flight, so memory stays flat."""
    workers = min(workers, 4 * (os.cpu_count() or 1))  # a mistyped --num-proc does not start thousands of processes
    if workers <= 1:
        _init_worker(state)
        for run in runs:
            yield _process(run)
        return
    context = multiprocessing.get_context()
    # the tokenizer's own thread pool would fight the workers for the cores (and warns after a fork)
    with process.environment(TOKENIZERS_PARALLELISM="false"), \
            ProcessPoolExecutor(workers, mp_context=context, **process.pool_initializer(_init_worker, state)) as pool:
        pending: deque[Future] = deque()
        for run in runs:
            pending.append(pool.submit(_process, run))
            while len(pending) > 2 * workers or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Writer:
    """Appends each run's tokens, bits and layouts to flat binary files (no scratch copies)."""

    def __init__(self, folder: Path, dtype: Any, names: list[str]) -> None:
        self.folder, self.dtype = folder, np.dtype(dtype)
        self.tokens = 0
        self.pending_bits = np.zeros(0, dtype=bool)
        self.files = {"tokens": open(folder / "tokens.bin", "wb"), "bits": open(folder / "word_starts.bin", "wb")}
        self.ranges = dict.fromkeys(names, 0)
        self.blocks = dict.fromkeys(names, 0)
        for name in names:
            for suffix in ("ranges", "ends", "a_counts", "labels"):
                self.files[f"{name}.{suffix}"] = open(folder / f"{name}.{suffix}", "wb")

    def add(self, result: _RunResult) -> None:
        self.files["tokens"].write(result.ids.astype(self.dtype).tobytes())
        bits = np.concatenate((self.pending_bits, result.word_start))
        whole = len(bits) // 8 * 8
        self.files["bits"].write(np.packbits(bits[:whole], bitorder="little").tobytes())
        self.pending_bits = bits[whole:]
        for name, (ranges, ends, a_counts, labels) in result.layouts.items():
            self.files[f"{name}.ranges"].write((ranges + self.tokens).tobytes())
            self.files[f"{name}.ends"].write((ends + self.ranges[name]).tobytes())
            self.files[f"{name}.a_counts"].write(a_counts.tobytes())
            self.files[f"{name}.labels"].write(labels.tobytes())
            self.ranges[name] += len(ranges)
            self.blocks[name] += len(labels)
        self.tokens += len(result.ids)

    def finish(self, names: list[str]) -> dict[str, Any]:
        self.files["bits"].write(np.packbits(self.pending_bits, bitorder="little").tobytes())
        for fh in self.files.values():
            fh.close()
        meta = {"dtype": self.dtype.name, "tokens": self.tokens, "train": [n for n in names if n != "eval"],
                "eval_blocks": self.blocks["eval"], "blocks": self.blocks}
        (self.folder / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return meta


def _vocab_hash(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return manifests.sha256_json([vocab, type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None)])
