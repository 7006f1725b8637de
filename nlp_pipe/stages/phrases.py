"""Stage `phrases`: n-gram collocations (gensim Phrases) over a segmented corpus.

    nlp-pipe phrases --corpus runs/seg --out runs/phrases --scoring npmi --threshold 0.5

Writes `phrases.tsv` (phrase, score, count, parts), `corpus.txt` with every detected
phrase merged into one token, and `jieba_userdict.txt` (`phrase count` a line) so the
phrases can feed `vocab` and a re-segmentation. Under `accelerate launch` / torchrun every process
counts the pairs of its byte range of the corpus and merges the phrases into its range; the main one
adds the counts up (in input order) and joins the parts: the same files as one process (while the
vocabulary stays under gensim's max_vocab_size, 40M entries, below which gensim never prunes).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gensim.models.phrases import Phrases

from ..core import console, distributed, shards
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.files import CORPUS_TXT, PHRASES_TSV, USERDICT_TXT, corpus_txt
from ..text.userdict import write_userdict

NAME = "phrases"
VERSION = 1
SHARDED = True  # pair counting and merging run across the processes of a launch
OUTPUTS = (PHRASES_TSV, CORPUS_TXT, USERDICT_TXT)
_JOIN = "\x1f"  # gensim's internal delimiter: a character no corpus token contains
# Joins the parts of phrases merged by an earlier pass in the intermediate corpus file. It must
# not be whitespace to str.split (as \x1f is: the next pass would read the parts back as words)
# and must differ from _JOIN (gensim splits its vocabulary keys on _JOIN).
_PART = "\U000f0000"  # a private-use character no corpus token contains
_MAX_SENTENCE = 10_000  # gensim's LineSentence max_sentence_length: longer lines are counted in pieces

INPUTS = {"corpus": Input("a segmented corpus (segment or phrases artifact)", kind="artifact", stages=("segment", "phrases"))}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    min_count: int = option(5, "ignore word pairs seen fewer times", min=1)
    scoring: Literal["default", "npmi"] = option("default", "gensim scorer: default (Mikolov et al.) or npmi (threshold in -1..1)")
    threshold: float = option(10.0, "minimum score for a pair to become a phrase (npmi: -1..1; try 0.5)")
    passes: int = option(1, "passes of phrase detection: 2 also finds 3- and 4-grams", min=1, max=4)
    delimiter: str = option("", "what joins the parts of a phrase in the merged corpus ('' suits Chinese)")
    max_phrases: int = option(0, "keep only the best-scored N phrases (0 = all)", min=0)

    def __post_init__(self) -> None:
        if self.scoring == "npmi" and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold = {self.threshold} is outside -1..1, the range of npmi scores")
        if self.scoring == "default" and self.threshold <= 0:
            raise ValueError(f"threshold = {self.threshold} must be positive with default scoring")
        if any(ch.isspace() for ch in self.delimiter):
            raise ValueError("delimiter must not contain whitespace (corpus tokens are space-separated)")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    source = corpus_txt(inputs["corpus"][0], NAME)
    current, found = source, {}
    sharded = distributed.world_size() > 1
    for n in range(config.passes):
        model = _sharded_model(current, config) if sharded else Phrases(
            _sentences(console.file_lines([current], f"phrases pass {n + 1}: counting")), min_count=config.min_count,
            threshold=config.threshold, scoring=config.scoring,
            delimiter=_JOIN)
        phrases, frozen = _select(model, config) if model is not None else ({}, None)
        if sharded:  # the main rank's choice, for every rank's part of the merge
            phrases, frozen, scored = distributed.broadcast((phrases, frozen, {p: model.vocab.get(p, 0) for p in phrases})
                                                            if model is not None else None)
        else:
            scored = {p: model.vocab.get(p, 0) for p in phrases} if model is not None else {}
        for phrase, score in phrases.items():
            found[phrase] = (score, scored[phrase])
        target = out / (CORPUS_TXT if n == config.passes - 1 else f".pass{n}.txt")
        delimiter = config.delimiter if target.name == CORPUS_TXT else _PART
        counts = _merge_sharded(current, target, frozen, delimiter, out) if sharded else _merge(current, target, frozen, delimiter)
        if current != source and distributed.is_main():
            current.unlink()
        current = target
        log.info("pass %d: %d phrases", n + 1, len(phrases))
    if not distributed.is_main():
        return Result(counts, {"phrases": len(found)})
    rows = sorted(((_join(p, config.delimiter), s, c, _join(p, " ")) for p, (s, c) in found.items()),
                  key=lambda r: -r[1])
    with open(out / PHRASES_TSV, "w", encoding="utf-8") as fh:
        fh.write("phrase\tscore\tcount\tparts\n")
        fh.writelines(f"{p}\t{s:.4f}\t{c}\t{parts}\n" for p, s, c, parts in rows)
    write_userdict(out / USERDICT_TXT, [(p, c) for p, _, c, _ in rows])
    table = "\n".join(f"| {p} | {s:.3f} | {c} |" for p, s, c, _ in rows[:40])
    report = (f"## Phrases\n{len(rows)} phrases ({config.scoring} scoring, threshold {config.threshold}).\n\n"
              f"| phrase | score | count |\n| --- | --- | --- |\n{table}")
    return Result(counts, {"phrases": len(rows), "merged_tokens": counts.merged}, report)


def _select(model: Phrases, config: Config) -> tuple[dict[str, float], Any]:
    """The pass's phrases (score by phrase) and the frozen model that merges exactly those."""
    # a "phrase" with a punctuation or symbol part ("《杜") is an artefact of the scorer, not a word
    phrases = {p: s for p, s in model.export_phrases().items() if all(any(ch.isalnum() for ch in part) for part in p.split(_JOIN))}
    if config.max_phrases:
        phrases = dict(sorted(phrases.items(), key=lambda kv: -kv[1])[: config.max_phrases])
    frozen = model.freeze()
    frozen.phrasegrams = {p: s for p, s in frozen.phrasegrams.items() if p in phrases}
    return phrases, frozen


def _sentences(lines: Iterator[str]) -> Iterator[list[str]]:
    """What gensim's LineSentence yields for these lines: the words, in pieces of at most 10,000."""
    for line in lines:
        words = line.split()
        for i in range(0, len(words), _MAX_SENTENCE):
            yield words[i:i + _MAX_SENTENCE]


def _sharded_model(corpus: Path, config: Config) -> Phrases | None:
    """Each rank counts its byte range; the main rank gets the Phrases model of the whole corpus (None elsewhere).
    The ranges are contiguous and merged in rank order, so the vocabulary's order is a single pass's too."""
    model = Phrases(None, min_count=config.min_count, threshold=config.threshold, scoring=config.scoring, delimiter=_JOIN)
    part = Phrases._learn_vocab(_sentences(shards.lines([corpus])), max_vocab_size=model.max_vocab_size, delimiter=_JOIN,
                                connector_words=model.connector_words, progress_per=10**9)
    parts = distributed.gather(part, to_main=True)
    if not distributed.is_main():
        return None
    for min_reduce, vocab, words in parts:
        model.corpus_word_count += words
        model.min_reduce = max(model.min_reduce, min_reduce)
        for word, count in vocab.items():
            model.vocab[word] = model.vocab.get(word, 0) + count
    return model


def _merge_sharded(source: Path, target: Path, frozen: Any, delimiter: str, out: Path) -> _MergeCounts:
    """Every rank merges the phrases into its byte range of `source`; the main rank joins the parts into `target`."""
    def part_of(rank: int) -> Path:
        return shards.part_path(out, f"phrases-{target.name}", rank).with_suffix(".txt")

    part = part_of(distributed.rank())
    part.parent.mkdir(parents=True, exist_ok=True)
    counts = _MergeCounts()
    with open(part, "w", encoding="utf-8") as dst:
        _merge_lines(shards.lines([source]), dst, frozen, delimiter, counts)
    totals = distributed.gather((counts.rows_in, counts.rows_out, counts.merged))
    if distributed.is_main():
        with open(target, "wb") as joined:
            for rank in range(distributed.world_size()):
                piece = part_of(rank)
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, joined, 1 << 20)
                piece.unlink()
    distributed.barrier()  # the next pass reads `target`
    counts.rows_in, counts.rows_out, counts.merged = (sum(t[i] for t in totals) for i in range(3))
    return counts


class _MergeCounts(Counts):
    merged = 0


def _merge(source: Path, target: Path, frozen, delimiter: str) -> _MergeCounts:
    """Rewrite the corpus with each phrase joined; a line stays a line so row alignment holds."""
    counts = _MergeCounts()
    with open(target, "w", encoding="utf-8") as dst:
        _merge_lines(console.file_lines([source], "phrases: merging"), dst, frozen, delimiter, counts)
    return counts


def _merge_lines(lines, dst, frozen, delimiter: str, counts: _MergeCounts) -> None:
    for line in lines:
        counts.rows_in += 1
        words = line.split()
        merged = frozen[words]
        counts.merged += len(words) - len(merged)
        dst.write(_join(" ".join(merged), delimiter) + "\n")
        counts.rows_out += 1


def _join(text: str, delimiter: str) -> str:
    """Replace the internal joiners of this pass and of earlier passes by `delimiter`."""
    return text.replace(_JOIN, delimiter).replace(_PART, delimiter)
