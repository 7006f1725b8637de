"""Stage `augment`: TinyBERT data augmentation of labelled texts for task distillation.

    nlp-pipe augment --corpus runs/seg_train --mlm runs/bert --vectors runs/word2vec --out runs/aug --copies 4

Each text is cut into jieba words (with the segment artifact's own settings) and gets up to `copies`
distinct copies in which every word is replaced with probability p: single characters by the MLM's
top-K predictions, longer words by their nearest neighbours in the word vectors (nlp_pipe.augmentation.word_substitution).
Writes `dataset/` (text, label, source_row = the row of the input it came from, augmented) that
`distill --augmented` reads; only copies of its training rows are used there, so carving dev/test
out of the same artifact never leaks copies of them into training.
The texts are augmented in fixed chunks of `chunk_rows` (the MLM batches and the neighbour search run
within a chunk; each text draws from its own generator, seeded by the seed and its row): under
`accelerate launch` / torchrun every process takes every R-th chunk into its part (core.shards) and
the main one joins the parts in input order, so the artifact is byte-identical to a one-process run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from ..augmentation.word_substitution import AugmentStats, augment
from ..checkpoints import loading
from ..core import console, distributed, shards
from ..core.config import SEED_MAX, option
from ..core.contract import Counts, Input, Result
from ..core.files import AUGMENT_STATS_JSON, DATASET_DIR, SEGMENTER_JSON
from ..data.labelled import load_dataset
from ..text.segmenter import Segmenter, SegmenterSpec
from ..training.options import resolve_precision
from ..vectors.store import load_keyed_vectors

NAME = "augment"
VERSION = 2  # 2: augmented a chunk of texts at a time (MLM batches within a chunk); no timing in augment_stats.json
SHARDED = True  # the chunks of texts are augmented across the processes of a launch
OUTPUTS = (DATASET_DIR, AUGMENT_STATS_JSON)
_SCHEMA = pa.schema({"text": pa.string(), "label": pa.string(), "source_row": pa.int64(), "augmented": pa.bool_()})

INPUTS = {
    "corpus": Input("labelled texts to augment (segment artifact)", kind="artifact", stages=("segment",)),
    "mlm": Input("a BERT checkpoint with its MLM head (pretrain or expand artifact, or a local HF model)",
                 kind="any", stages=("pretrain", "expand"), hub=True),
    "vectors": Input("word vectors for multi-character words (word2vec or import-vectors artifact)",
                     kind="artifact", stages=("word2vec", "import-vectors")),
}


@dataclasses.dataclass(frozen=True)
class Config:
    copies: int = option(4, "augmented copies per text (TinyBERT used 20 on GLUE); duplicates are dropped", min=1, max=100)
    p: float = option(0.4, "probability that a word is replaced", min=0.0, max=1.0)
    top_k: int = option(15, "candidates per word: the MLM's top K characters, or the K nearest vector neighbours", min=1)
    max_seq_len: int = option(128, "tokens the MLM sees per text; characters beyond stay unchanged", min=8, max=512)
    batch_size: int = option(64, "MLM rows per forward", min=1)
    chunk_rows: int = option(256, "texts augmented together (their MLM rows are batched together); under a launch each "
                                  "process takes every R-th chunk", min=1)
    seed: int = option(42, "seed for the replacements", min=0, max=SEED_MAX)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    source = inputs["corpus"][0]
    ds = load_dataset(source, "augment")
    tokenizer, mlm = _mlm(inputs["mlm"][0])
    segmenter = Segmenter(SegmenterSpec.load(source)) if (source / SEGMENTER_JSON).exists() else None
    texts, labels = list(ds["text"]), list(ds["label"])
    options: dict[str, Any] = dict(
        n_copies=config.copies, p=config.p, teacher_mlm=mlm, tokenizer=tokenizer, vectors=load_keyed_vectors(inputs["vectors"][0]),
        segmenter=segmenter, top_k=config.top_k, seed=config.seed, batch_size=config.batch_size, max_length=config.max_seq_len,
        bf16=resolve_precision("auto") == "bf16")  # bf16 autocast: 1.8x on a CPU with AMX
    t0 = time.perf_counter()
    stats: list[AugmentStats] = []  # of this rank's chunks; on the main rank of a launch, of every rank's
    batches = _augmented(texts, labels, config.chunk_rows, options, stats)
    if distributed.world_size() > 1:
        batches = _sharded(batches, out, stats)
        if not distributed.is_main():
            for _ in batches:  # augments this rank's chunks into its part
                pass
            return Result(Counts.of(len(texts), 0), {})
    table = pa.Table.from_batches(list(batches), schema=_SCHEMA).combine_chunks()
    seconds = time.perf_counter() - t0
    datasets.Dataset(table).save_to_disk(str(out / DATASET_DIR))
    total = sum(stats, AugmentStats())
    counts = {k: v for k, v in dataclasses.asdict(total).items() if k != "seconds"}
    replaced = total.replaced_mlm + total.replaced_vectors
    counts["replaced_fraction"] = round(replaced / total.replaceable, 4) if total.replaceable else 0.0
    # the artifact's files hold no timings (the same rows give the same bytes); the throughput goes to the manifest
    (out / AUGMENT_STATS_JSON).write_text(json.dumps(counts, indent=2), encoding="utf-8")
    metrics = {**counts, "texts_per_s": round(len(texts) / seconds, 1) if seconds else 0.0}
    examples = table.slice(0, 3 * (config.copies + 1)).to_pylist()
    return Result(Counts.of(len(texts), len(table)), metrics,
                  _report(config, metrics, examples))


def _augmented(texts: list[str], labels: list[Any], chunk_rows: int, options: dict[str, Any],
               stats: list[AugmentStats]) -> Iterator[pa.RecordBatch]:
    """The rows of each chunk of texts this rank owns (each original, then its copies), in input order."""
    for k, first in enumerate(console.progress(iterable=range(0, len(texts), chunk_rows), desc="augment", unit=" chunk")):
        if not shards.owns(k):
            continue
        rows, chunk_stats = augment(texts[first:first + chunk_rows], labels[first:first + chunk_rows], first=first, **options)
        stats.append(chunk_stats)
        sources = [r[2] for r in rows]
        copy = [i > 0 and sources[i] == sources[i - 1] for i in range(len(rows))]  # each text's first row is itself
        yield pa.record_batch([pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.string()),
                               pa.array(sources, pa.int64()), pa.array(copy, pa.bool_())], schema=_SCHEMA)


def _sharded(batches: Iterator[pa.RecordBatch], out: Path, stats: list[AugmentStats]) -> Iterator[pa.RecordBatch]:
    """This rank's chunks into its part; then, on the main rank, every rank's chunks in input order and
    every rank's stats in `stats`."""
    with shards.PartWriter(out, NAME) as part:
        for batch in batches:
            part.write(batch)
    gathered = distributed.gather((part.batches, stats))
    if distributed.is_main():
        stats[:] = [s for _, rank_stats in gathered for s in rank_stats]
        yield from shards.merged(out, NAME, [n for n, _ in gathered])


def _mlm(checkpoint: Path) -> tuple[Any, Any]:
    """Tokenizer and MLM of --mlm (a pretraining checkpoint's NSP/SOP head is left out)."""
    from transformers import AutoModelForMaskedLM

    return loading.load_checked(AutoModelForMaskedLM, checkpoint, NAME, "mlm")


def _report(config: Config, m: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["## Augmentation",
             f"{m['texts']} texts -> {m['rows']} rows (originals + distinct copies; {m['duplicates_dropped']} duplicate copies "
             f"dropped); up to {config.copies} copies, p = {config.p}, top-{config.top_k}; {m['texts_per_s']:.1f} texts/s.",
             f"Replaceable words: {m['replaceable']} of {m['words']}; replaced {m['replaced_fraction']:.1%} "
             f"(MLM {m['replaced_mlm']}, vectors {m['replaced_vectors']}); kept because not in the vectors: {m['kept_oov']}.",
             "", "Examples (original, then copies):", ""]
    shown = 0
    for i, row in enumerate(rows):
        if i and not row["augmented"]:
            shown += 1
            if shown == 3:
                break
            lines.append("")
        lines.append(f"- `{row['label']}` {row['text'][:120]}")
    return "\n".join(lines)
