"""Stage `import-vectors`: external pretrained vectors (word2vec text format) into a vectors artifact.

    nlp-pipe import-vectors --vectors sgns.merge.word.bz2 --vocab runs/vocab --out runs/vectors

Reads the word2vec text format -- a `COUNT DIM` header, then `word v1 ... vDIM` a line -- plain,
.bz2 or .gz, which is how public Chinese vectors (Chinese-Word-Vectors, Tencent AI Lab) are
published. The file is streamed: only the vectors kept are held in memory. `--vocab` keeps only
the words of a vocab artifact, which shrinks a multi-GB file to what a model can use. Writes the
same files as `word2vec` (vectors.txt, vectors.kv, eval.json), so later stages cannot tell them
apart. A header that disagrees with the rows or a value that is not a number stops with the line;
repeated words keep their first vector. Manifest rows are vectors: read in, written out, dropped
by reason (duplicate, not_in_vocab, space_in_word, blank_line, undecodable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import EVAL_JSON, VECTORS_KV, VECTORS_TXT, VOCAB_TXT, read_vocab
from ..vectors.store import ReportOptions, finish_artifact
from ..vectors.word2vec_text import read_word2vec_text

NAME = "import-vectors"
VERSION = 1
OUTPUTS = (VECTORS_TXT, VECTORS_KV, EVAL_JSON)

INPUTS = {
    "vectors": Input("word2vec text file (`COUNT DIM` header), plain, .bz2 or .gz; or a word2vec/import-vectors artifact",
                     kind="any", stages=("word2vec", "import-vectors")),
    "vocab": Input("keep only the words of this vocab artifact (its vocab.txt)", kind="artifact", required=False, stages=("vocab",)),
    "analogy": Input("analogy questions: `: section` lines, then `a b c d` a line (e.g. vocab/analogy_zh.txt)", required=False),
    "similarity": Input("word pairs: `word1 word2 score` a line, # comments (e.g. vocab/similarity_zh.txt)", required=False),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config(ReportOptions):
    limit: int = option(0, "read only the first N vectors (public files list frequent words first); 0 = all", min=0)
    on_decode_error: Literal["stop", "skip"] = option(
        "stop", "a line that is not UTF-8 stops the import (stop) or is dropped and counted (skip)")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    source = inputs["vectors"][0]
    source = source / VECTORS_TXT if source.is_dir() else source
    keep = _vocab_words(inputs["vocab"][0]) if inputs["vocab"] else None
    counts = Counts()
    kv = read_word2vec_text(source, keep=keep, counts=counts, limit=config.limit, on_decode_error=config.on_decode_error)
    if not len(kv):
        hint = " none of the vocab's words has a vector" if keep is not None else " the file has no vectors"
        raise UserError(f"import-vectors: nothing to write from {source}:{hint} (dropped: {dict(counts.dropped)})")
    metrics, report = finish_artifact(kv, out, config, inputs["analogy"], inputs["similarity"])
    head = f"## Import\n{counts.rows_in:,} vectors read from `{source}`, {counts.rows_out:,} kept."
    if keep is not None:
        missing = [w for w in keep if w not in kv.key_to_index]
        metrics["vocab_coverage"] = round(1 - len(missing) / len(keep), 6)
        head += (f" The vocab has {len(keep):,} tokens; {len(keep) - len(missing):,} have a vector "
                 f"({metrics['vocab_coverage']:.1%}). Without one: {' '.join(missing[:40])}")
    return Result(counts, metrics, head + "\n\n" + report, {"source": str(source)})


def _vocab_words(vocab_dir: Path) -> dict[str, None]:
    """vocab.txt's tokens, in order (a dict: ordered, fast membership)."""
    path = vocab_dir / VOCAB_TXT
    if not path.is_file():
        raise UserError(f"import-vectors: {vocab_dir} has no {VOCAB_TXT}; pass a vocab artifact (nlp-pipe vocab)")
    return dict.fromkeys(read_vocab(path))
