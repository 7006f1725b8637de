"""Stage `augment`: TinyBERT data augmentation of labelled texts for task distillation.

    nlp-pipe augment --corpus runs/seg_train --mlm runs/bert --vectors runs/word2vec --out runs/aug --copies 4

Each text is cut into jieba words (with the segment artifact's own settings) and gets up to `copies`
distinct copies in which every word is replaced with probability p: single characters by the MLM's
top-K predictions, longer words by their nearest neighbours in the word vectors (nlp_pipe.augment).
Writes `dataset/` (text, label, source_row = the row of the input it came from, augmented) that
`distill --augmented` reads; only copies of its training rows are used there, so carving dev/test
out of the same artifact never leaks copies of them into training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import datasets

from ..augmentation.word_substitution import augment
from ..checkpoints import families, loading
from ..core.config import SEED_MAX, option
from ..core.contract import Input, Result
from ..core.files import AUGMENT_STATS_JSON, DATASET_DIR, SEGMENTER_JSON
from ..data.labelled import load_dataset
from ..text.segmenter import Segmenter, SegmenterSpec
from ..training.options import resolve_precision
from ..vectors.store import load_keyed_vectors

NAME = "augment"
VERSION = 1
OUTPUTS = (DATASET_DIR, AUGMENT_STATS_JSON)

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
    seed: int = option(42, "seed for the replacements", min=0, max=SEED_MAX)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    source = inputs["corpus"][0]
    ds = load_dataset(source, "augment")
    tokenizer, mlm = _mlm(inputs["mlm"][0])
    segmenter = Segmenter(SegmenterSpec.load(source)) if (source / SEGMENTER_JSON).exists() else None
    texts, labels = list(ds["text"]), list(ds["label"])
    rows, stats = augment(texts, labels, n_copies=config.copies, p=config.p, teacher_mlm=mlm, tokenizer=tokenizer,
                          vectors=load_keyed_vectors(inputs["vectors"][0]), segmenter=segmenter, top_k=config.top_k,
                          seed=config.seed, batch_size=config.batch_size, max_length=config.max_seq_len,
                          bf16=resolve_precision("auto") == "bf16")  # bf16 autocast: 1.8x on a CPU with AMX
    originals = [True] + [rows[i][2] != rows[i - 1][2] for i in range(1, len(rows))]  # each text's first row is itself
    table = datasets.Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows],
                                        "source_row": [r[2] for r in rows], "augmented": [not o for o in originals]})
    table.save_to_disk(str(out / DATASET_DIR))
    counts = {k: v for k, v in dataclasses.asdict(stats).items() if k != "seconds"}
    replaced = stats.replaced_mlm + stats.replaced_vectors
    metrics = {**counts, "texts_per_s": round(stats.texts_per_s, 1),
               "replaced_fraction": round(replaced / stats.replaceable, 4) if stats.replaceable else 0.0}
    (out / AUGMENT_STATS_JSON).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return Result({"rows_in": len(texts), "rows_out": len(rows), "dropped": {}}, metrics, _report(config, metrics, rows))


def _mlm(checkpoint: Path) -> tuple[Any, Any]:
    """Tokenizer and MLM of --mlm (a pretraining checkpoint's NSP/SOP head is left out)."""
    from transformers import AutoModelForMaskedLM

    loading.require(checkpoint, NAME)
    families.require(checkpoint, NAME, "mlm")
    return loading.load_tokenizer(checkpoint), loading.load_model(AutoModelForMaskedLM, checkpoint).eval()


def _report(config: Config, m: dict[str, Any], rows: list[tuple[str, Any, int]]) -> str:
    lines = ["## Augmentation",
             f"{m['texts']} texts -> {m['rows']} rows (originals + distinct copies; {m['duplicates_dropped']} duplicate copies "
             f"dropped); up to {config.copies} copies, p = {config.p}, top-{config.top_k}; {m['texts_per_s']:.1f} texts/s.",
             f"Replaceable words: {m['replaceable']} of {m['words']}; replaced {m['replaced_fraction']:.1%} "
             f"(MLM {m['replaced_mlm']}, vectors {m['replaced_vectors']}); kept because not in the vectors: {m['kept_oov']}.",
             "", "Examples (original, then copies):", ""]
    shown = 0
    for i, (text, label, src) in enumerate(rows):
        if i and src != rows[i - 1][2]:
            shown += 1
            if shown == 3:
                break
            lines.append("")
        lines.append(f"- `{label}` {text[:120]}")
    return "\n".join(lines)
