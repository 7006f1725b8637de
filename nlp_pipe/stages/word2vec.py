"""Stage `word2vec`: word vectors (gensim Word2Vec or FastText) from a segmented corpus.

    nlp-pipe word2vec --corpus runs/seg --out runs/w2v --query 小说,电影
    nlp-pipe word2vec --corpus runs/seg --out runs/w2v --analogy vocab/analogy_zh.txt --similarity vocab/similarity_zh.txt

Trains in gensim's corpus_file mode (the C reader splits corpus.txt between threads; the
fastest way gensim has) on all cores by default, and reads the corpus nowhere else: the
vocabulary scan and training are gensim's own passes. Writes vectors.txt (word2vec text
format), vectors.kv (gensim KeyedVectors, FastTextKeyedVectors for fasttext: unseen words
get vectors from their character n-grams) and eval.json (analogy accuracy, similarity
correlation); report.md lists the nearest neighbours of frequent words and of --query words.
Manifest rows are words: rows_in = distinct words in the corpus, rows_out = words with a vector.
One process (gensim's threads train one model): under `accelerate launch` / torchrun every process
refuses with one line and exit 2 (runner.execute).
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gensim.models import FastText, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from ..core import console
from ..core.artifacts import read_manifest
from ..core.config import SEED_MAX, option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import EVAL_JSON, VECTORS_KV, VECTORS_TXT, corpus_txt
from ..text.encoding import detect_encoding
from ..text.segmenter import default_workers
from ..vectors.store import ReportOptions, finish_artifact

NAME = "word2vec"
VERSION = 1
OUTPUTS = (VECTORS_TXT, VECTORS_KV, EVAL_JSON)
_SNIFF_BYTES = 1 << 16

INPUTS = {
    "corpus": Input("segmented corpus: a segment or phrases artifact, or a text file of space-separated words, one text a line",
                    kind="any", stages=("segment", "phrases")),
    "analogy": Input("analogy questions: `: section` lines, then `a b c d` a line (e.g. vocab/analogy_zh.txt)", required=False),
    "similarity": Input("word pairs: `word1 word2 score` a line, # comments (e.g. vocab/similarity_zh.txt)", required=False),
    "compare": Input("other vectors artifacts whose evaluation figures the report sets beside this one's (e.g. plain vs n-gram)",
                     kind="artifact", multiple=True, required=False, stages=("word2vec", "import-vectors")),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config(ReportOptions):
    algorithm: Literal["word2vec", "fasttext"] = option(
        "word2vec", "gensim Word2Vec, or FastText (character n-grams: vectors for unseen words too)")
    sg: bool = option(True, "skip-gram (true) or CBOW (false); skip-gram suits small corpora and rare words "
                            "(gensim's own default is CBOW)")
    hs: bool = option(False, "hierarchical softmax (with negative = 0 it replaces negative sampling)")
    negative: int = option(5, "negative samples per word; 0 = no negative sampling (then hs must be true)", min=0, max=64)
    vector_size: int = option(100, "dimensions of a word vector", min=1, max=4096)
    window: int = option(5, "largest distance between a word and a context word", min=1, max=100)
    min_count: int = option(5, "ignore words seen fewer times", min=1)
    epochs: int = option(5, "passes of training over the corpus", min=1, max=1000)
    sample: float = option(1e-3, "down-sampling threshold for frequent words; 0 = off", min=0.0, max=1.0)
    alpha: float = option(0.025, "initial learning rate, decaying linearly to 0.0001", min=1e-6, max=1.0)
    seed: int = option(1, "random seed (a run repeats exactly only with workers = 1 and a fixed PYTHONHASHSEED)", min=0, max=SEED_MAX)
    workers: int = option(0, "training threads; 0 = one per core", min=0)
    min_n: int = option(1, "fasttext: shortest character n-gram (Chinese words are short: 1-3; gensim's 3-6 suits English)", min=1)
    max_n: int = option(3, "fasttext: longest character n-gram; 0 = no n-grams", min=0)
    # Chinese 1-3 character n-grams are far fewer than English 3-6 grams: gensim's 2,000,000
    # buckets would make an 800 MB vectors.kv at dim 100 for no gain
    bucket: int = option(200_000, "fasttext: n-gram hash buckets; vectors.kv holds bucket x vector_size floats", min=1, max=50_000_000)

    def __post_init__(self) -> None:
        if not self.hs and self.negative == 0:
            raise ValueError("negative = 0 and hs = false leave nothing to train: set --negative 5 or --hs")
        if self.algorithm == "fasttext" and self.max_n and self.max_n < self.min_n:
            raise ValueError(f"max_n = {self.max_n} is below min_n = {self.min_n}")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    corpus = corpus_file(inputs["corpus"][0])
    workers = config.workers or default_workers()
    model = new_model(config, workers)
    t0 = time.perf_counter()
    with _gensim_progress(_SCANNED, lambda m: int(m.group(1)), total=_lines(inputs["corpus"][0]), desc="word2vec vocabulary",
                          unit=" lines"):
        model.build_vocab(corpus_file=str(corpus), keep_raw_vocab=True)
    vocab_s = time.perf_counter() - t0
    counts, vocab_metrics = _vocabulary_counts(model)
    if not len(model.wv):
        raise UserError(f"word2vec: no word of {corpus} occurs {config.min_count} times; lower --min-count or use a larger corpus")
    t0 = time.perf_counter()
    with _gensim_progress(_TRAINED, lambda m: 100 * int(m.group(1)) + float(m.group(2)), total=100 * config.epochs,
                          desc="word2vec", unit="%", bar_format=_BAR):
        _, raw_words = model.train(corpus_file=str(corpus), total_examples=model.corpus_count,
                                   total_words=model.corpus_total_words, epochs=config.epochs, callbacks=[_EpochLog(config.epochs)])
    train_s = time.perf_counter() - t0
    metrics, report = finish_artifact(model.wv, out, config, inputs["analogy"], inputs["similarity"])
    metrics = {**vocab_metrics, **metrics, "workers": workers, "build_vocab_s": round(vocab_s, 3), "train_s": round(train_s, 3),
               "words_per_s": round(raw_words / train_s) if train_s > 0 else None}
    objective = " + ".join([*(["hierarchical softmax"] if config.hs else []),
                            *([f"{config.negative} negative samples"] if config.negative else [])])
    threads = f"{workers} thread{'s' if workers > 1 else ''}"
    head = (f"## Training\ngensim {config.algorithm} ({'skip-gram' if config.sg else 'CBOW'}, {objective}), "
            f"{config.epochs} epochs over {metrics['corpus_words']:,} words in {train_s:.1f} s on {threads} "
            f"({metrics['words_per_s'] or 0:,} words/s).")
    return Result(counts, metrics, head + "\n\n" + report + _comparison(out.name, metrics, inputs["compare"]))


def _comparison(name: str, metrics: dict, others: list[Path]) -> str:
    """A table of the headline evaluation figures of this run beside other vectors artifacts'."""
    if not others:
        return ""
    keys = ("vocab_size", "analogy_accuracy", "analogy_accuracy_3cosmul", "analogy_oov_skipped",
            "similarity_spearman", "similarity_oov_skipped")
    columns = [("this run", metrics)] + [(p.name, (read_manifest(p) or {}).get("metrics", {})) for p in others]
    lines = ["", "", "## Comparison", "", "| figure | " + " | ".join(c for c, _ in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    lines += [f"| {k} | " + " | ".join(str(m.get(k, "-")) for _, m in columns) + " |" for k in keys]
    return "\n".join(lines)


def corpus_file(path: Path) -> Path:
    """corpus.txt of an artifact, or a plain segmented text file (what gensim's corpus_file mode reads)."""
    file = corpus_txt(path, NAME) if path.is_dir() else path
    if file.suffix.lower() in (".gz", ".bz2", ".xz", ".zip"):
        raise UserError(f"word2vec: {file} is compressed; gensim's corpus_file mode reads plain text: decompress it first")
    if not path.is_dir():
        encoding = detect_encoding(file)
        if encoding not in ("utf-8", "utf-8-sig"):  # gensim's C reader takes bytes and decodes words as UTF-8
            raise UserError(f"word2vec: {file} is {encoding} text; gensim's corpus_file mode reads UTF-8: segment it "
                            f"(nlp-pipe segment --corpus {file} --out SEG, then --corpus SEG) or convert it "
                            f"(iconv -f {encoding} -t UTF-8)")
        with open(file, "rb") as fh:  # a first look (64 KB) at a user's file: is it segmented at all?
            words = fh.read(_SNIFF_BYTES).decode("utf-8", errors="replace").split()
        if words and sum(map(len, words)) / len(words) > 12:
            raise UserError(f"word2vec: {file} does not look segmented (words average {sum(map(len, words)) / len(words):.0f} "
                            f"characters); run: nlp-pipe segment --corpus {file} --out SEG, then pass --corpus SEG")
    return file


def new_model(config: Config, workers: int) -> Word2Vec:
    """An untrained gensim model with the config's parameters (what the benchmark compares against)."""
    common = dict(vector_size=config.vector_size, window=config.window, min_count=config.min_count, sample=config.sample,
                  sg=int(config.sg), hs=int(config.hs), negative=config.negative, alpha=config.alpha, seed=config.seed,
                  workers=workers, epochs=config.epochs)
    if config.algorithm == "fasttext":
        return FastText(min_n=config.min_n, max_n=config.max_n, bucket=config.bucket, **common)
    return Word2Vec(**common)


def _vocabulary_counts(model: Word2Vec) -> tuple[Counts, dict]:
    """Rows = words: distinct corpus words in, words with a vector out, the rest below min_count."""
    distinct = len(model.raw_vocab)
    kept_tokens = int(model.wv.expandos["count"].sum()) if len(model.wv) else 0
    model.raw_vocab = defaultdict(int)  # what gensim does without keep_raw_vocab: free it before training
    counts = Counts.of(distinct, len(model.wv), {"below_min_count": distinct - len(model.wv)})
    metrics = {"corpus_sentences": model.corpus_count,  # lines; gensim cuts lines over 10,000 words
               "corpus_words": model.corpus_total_words,
               "tokens_below_min_count": model.corpus_total_words - kept_tokens}
    return counts, metrics


# gensim tells its progress only in its log: "PROGRESS: at sentence #10000, ..." while it counts the vocabulary,
# "EPOCH 1 - PROGRESS: at 41.20% examples, ..." every second while it trains
_SCANNED = re.compile(r"PROGRESS: at sentence #(\d+)")
_TRAINED = re.compile(r"EPOCH (\d+) - PROGRESS: at ([\d.]+)%")


class _ProgressLines(logging.Filter):
    """On gensim's word2vec logger: its lines that match `pattern` move the bar; its warnings pass on (terminal,
    stage.log); its other lines, let through the logger only so that it emits the progress ones, go nowhere."""

    def __init__(self, bar, pattern: re.Pattern, done: Callable[[re.Match], float]) -> None:
        super().__init__()
        self.bar, self.pattern, self.done = bar, pattern, done

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        match = self.pattern.match(record.getMessage())
        if match:
            self.bar.update(max(0.0, self.done(match) - self.bar.n))
        return False


@contextmanager
def _gensim_progress(pattern: re.Pattern, done: Callable[[re.Match], float], **bar: Any) -> Iterator[None]:
    """A bar (with an ETA where the total is known) moved by gensim's log lines that match `pattern`; those lines
    stay off the terminal and stage.log as before, gensim's warnings still reach them. The bar ends full when
    the step does."""
    gensim_log = logging.getLogger("gensim.models.word2vec")
    level = gensim_log.level
    with console.progress(**bar) as shown:
        lines = _ProgressLines(shown, pattern, done)
        gensim_log.addFilter(lines)
        gensim_log.setLevel(logging.INFO)
        try:
            yield
            if shown.total:
                shown.update(max(0.0, shown.total - shown.n))
        finally:
            gensim_log.removeFilter(lines)
            gensim_log.setLevel(level)


def _lines(corpus: Path) -> int | None:
    """The lines of an artifact's corpus.txt (its manifest's rows out), the vocabulary bar's total; None for a file."""
    return ((read_manifest(corpus) or {}).get("counts") or {}).get("rows_out") if corpus.is_dir() else None


_BAR = "{desc}: {percentage:3.0f}%|{bar}| epoch-% {n:.0f}/{total:.0f} [{elapsed}<{remaining}]"


class _EpochLog(CallbackAny2Vec):
    """One log line per epoch (gensim's own progress logging is silenced by the CLI)."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.epoch, self.t0 = epochs, 0, time.perf_counter()

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.epoch += 1
        log.info("epoch %d/%d done, %.1f s", self.epoch, self.epochs, time.perf_counter() - self.t0)
