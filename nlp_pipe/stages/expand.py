"""Stage `expand`: grow a pretrained BERT's vocabulary with domain words that come out as single tokens.

    nlp-pipe expand --checkpoint runs/bert --words domain_words.txt --out runs/bert_expanded
    nlp-pipe expand --checkpoint ~/bert-base-chinese --corpus runs/seg --phrases runs/phrases \
        --min-freq 20 --max-words 3000 --out runs/bert_expanded

Words come from word files (always added) and from a domain corpus (frequent jieba words and
phrases the vocabulary lacks, most frequent first). Writes a HuggingFace directory (same model
class as the checkpoint, NSP head kept; tokenizer.json, vocab.txt with the new words after the old
tokens), words.tsv (word, id, count, source, the pieces it replaces) and jieba_userdict.txt so
whole-word masking in `pretrain` keeps the new words whole. How the tokenizer is changed, and why,
is explained in nlp_pipe/tokenization.py; the embedding rows in nlp_pipe/expansion.py.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import option
from ..corpus import Counts, ReadOptions, read_rows
from ..errors import UserError
from ..expansion import check_saved, grow, initial_rows, load_model, snapshot
from ..segmenter import SegmenterSpec, cut_parallel, default_workers
from ..tokenization import NewWord, WordPlanner, compare_tokenization, load_tokenizer, write_expanded
from . import Input, Result

NAME = "expand"
VERSION = 1
WORDS_TSV = "words.tsv"
USERDICT = "jieba_userdict.txt"
CORPUS_TXT = "corpus.txt"
PHRASES_TSV = "phrases.tsv"
_PARALLEL_MIN_BYTES = 1 << 20  # below this, starting jieba workers costs more than it saves

INPUTS = {
    "checkpoint": Input("a BERT checkpoint: a HuggingFace model directory with its tokenizer (pretrain artifact or "
                        "any local BERT dir)", kind="any", stages=("pretrain", "expand", "distill")),
    "words": Input("word list files: one word a line, optional count after a space; added whatever their count",
                   kind="file", multiple=True, required=False),
    "corpus": Input("domain corpus for frequent words the vocabulary lacks: segment/phrases artifacts or text files",
                    kind="any", multiple=True, required=False, stages=("segment", "phrases")),
    "phrases": Input("phrases artifacts: their phrases are candidates like corpus words", kind="artifact",
                     multiple=True, required=False, stages=("phrases",)),
    "stoplist": Input("files of words never taken from the corpus (one a line)", kind="file", multiple=True, required=False),
    "vectors": Input("word vectors for --init vectors (word2vec/import-vectors artifact or word2vec text file)",
                     kind="any", required=False, stages=("word2vec", "import-vectors")),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config(ReadOptions):
    init: Literal["mean-chars", "random", "vectors"] = option(
        "mean-chars", "new rows: mean of the word's character rows, random N(0, initializer_range), or word2vec vectors "
        "mapped into the embedding space (needs --vectors)")
    bias_shift: float = option(1.0, "mean-chars/vectors: a new word's decoder bias is its pieces' mean bias minus this per "
                                    "extra piece (keeps new words from taking the characters' probability; 0 = plain mean)", min=0.0)
    min_freq: int = option(10, "corpus words and phrases seen fewer times are not added", min=1)
    max_words: int = option(5000, "at most this many corpus words, most frequent first (0 = no cap; word files are not capped)", min=0)
    min_len: int = option(2, "shortest corpus word in characters", min=1)
    max_len: int = option(8, "longest corpus word in characters", min=1)
    cjk_only: bool = option(True, "corpus words must contain a Chinese character (Latin words already have WordPiece pieces)")
    hmm: bool = option(True, "jieba HMM when segmenting raw text corpora")
    workers: int = option(0, "jieba processes for raw text corpora; 0 = one per core for inputs over 1 MB", min=0)
    measure_rows: int = option(2000, "corpus texts on which tokens per text are measured before and after (0 = none)", min=0)
    seed: int = option(0, "seed for --init random")

    def __post_init__(self) -> None:
        if self.min_len > self.max_len:
            raise ValueError(f"min_len = {self.min_len} is above max_len = {self.max_len}")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    if not (inputs["words"] or inputs["corpus"] or inputs["phrases"]):
        raise UserError("expand: no words to add; give --words FILE, --corpus (segment artifact or text) or --phrases")
    if config.init == "vectors" and not inputs["vectors"]:
        raise UserError("expand: --init vectors needs --vectors (a word2vec artifact or word2vec text file)")
    checkpoint = inputs["checkpoint"][0]
    tokenizer = load_tokenizer(checkpoint)
    planner = WordPlanner(tokenizer)
    found = _gather_words(config, inputs, planner)
    log.info("%d new words; %d already single tokens, %d in the vocab but never emitted, %d invalid",
             len(planner.new), len(planner.existing), len(planner.activated), len(planner.invalid))
    model = load_model(checkpoint)  # after the words: a bad word file fails before the slow load
    before, old_size = snapshot(model), len(tokenizer)
    expanded = write_expanded(tokenizer, planner, out, checkpoint / "vocab.txt")
    init_stats = _grow(model, planner.new, config, inputs, tokenizer)
    model.save_pretrained(str(out))
    reload_check = check_saved(type(model), out, before, old_size, len(expanded))
    measured = compare_tokenization(tokenizer, expanded, found.sample, planner.new)
    _write_words(out, planner.new, found, old_size)
    _write_userdict(out, planner.new, found.counts)
    metrics = {"vocab_size_before": old_size, "vocab_size_after": len(expanded), "new_words": len(planner.new),
               "from_word_files": sum(s == "words" for s in found.sources.values()),
               "from_corpus": sum(s != "words" for s in found.sources.values()),
               "added_tokens": sum(w.kind == "added" for w in planner.new),
               "wordpiece_entries": sum(w.kind == "piece" for w in planner.new),
               "skipped_existing": len(planner.existing), "activated": len(planner.activated),
               "invalid": len(planner.invalid), "init": config.init, **init_stats, **measured,
               "reload_check": reload_check}
    extra = {"architecture": type(model).__name__,
             "skipped_existing": [{"word": w, "id": i} for w, i in planner.existing.items()],
             "activated": [{"word": w, "id": i} for w, i in planner.activated.items()],
             "invalid_words": planner.invalid,
             "tokenizer_mechanism": "Chinese/mixed words: added tokens (normalized=False, leftmost-longest match in raw "
                                    "text); one-piece words: WordPiece vocab entries; all listed in vocab.txt"}
    counts = found.rows.as_dict() if found.rows.rows_in else None
    return Result(counts, metrics, _report(metrics, planner, found, old_size), extra)


@dataclass
class _Found:
    counts: dict[str, int]  # new word -> its count (corpus, phrases or word file)
    sources: dict[str, str]  # new word -> words | corpus | phrases
    rows: Counts  # corpus rows read
    sample: list[str]  # the first measure_rows corpus texts


def _gather_words(config: Config, inputs: dict[str, list[Path]], planner: WordPlanner) -> _Found:
    """Word files first (in file order, whatever their count), then corpus words and phrases by count."""
    found = _Found({}, {}, Counts(), [])
    for word, n in _read_word_files(inputs["words"]).items():
        if planner.consider(word) == "new":
            found.counts[word], found.sources[word] = n, "words"
    corpus_counts = _corpus_words(config, inputs["corpus"], found.rows, found.sample)
    stop = _read_stoplist(inputs["stoplist"])
    for word, (n, source) in _discover(config, planner, corpus_counts, _read_phrases(inputs["phrases"]), stop).items():
        found.counts[word], found.sources[word] = n, source
    return found


def _grow(model, new: list[NewWord], config: Config, inputs: dict[str, list[Path]], tokenizer) -> dict:
    vectors = None
    if config.init == "vectors":
        from ..vectors import load_keyed_vectors

        vectors = (load_keyed_vectors(inputs["vectors"][0]), tokenizer.get_vocab(), [w.word for w in new])
    rows, biases, stats = initial_rows(model, [w.pieces for w in new], config.init, seed=config.seed,
                                       bias_shift=config.bias_shift, vectors=vectors)
    grow(model, len(tokenizer), rows, biases)
    return stats


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: word lists must be UTF-8 (byte {exc.start} is not)") from None


def _read_word_files(paths: list[Path]) -> dict[str, int]:
    """`word [count]` a line, in file order; a repeated word keeps its largest count."""
    words: dict[str, int] = {}
    for path in paths:
        for line in _read_lines(path):
            parts = line.split()
            if parts:
                count = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                words[parts[0]] = max(words.get(parts[0], 0), count)
    return words


def _read_stoplist(paths: list[Path]) -> set[str]:
    return {line.split()[0] for path in paths for line in _read_lines(path) if line.split()}


def _read_phrases(dirs: list[Path]) -> Counter:
    phrases: Counter = Counter()
    for directory in dirs:
        for line in _read_lines(directory / PHRASES_TSV)[1:]:  # phrase, score, count, parts
            cells = line.split("\t")
            if len(cells) >= 3 and cells[0] and cells[2].isdigit():
                phrases[cells[0]] = max(phrases[cells[0]], int(cells[2]))
    return phrases


def _corpus_words(config: Config, paths: list[Path], counts: Counts, sample: list[str]) -> Counter:
    """Word counts over every corpus input; rows are counted in `counts`, the first measure_rows texts kept."""
    words: Counter = Counter()
    files = [p for p in paths if not p.is_dir()]
    for directory in (p for p in paths if p.is_dir()):
        if not (directory / CORPUS_TXT).exists():
            raise UserError(f"expand: corpus {directory} has no {CORPUS_TXT}; pass a segment or phrases artifact, or text files")
        with open(directory / CORPUS_TXT, encoding="utf-8") as fh:
            for line in fh:
                counts.rows_in += 1
                tokens = line.split()
                if not tokens:
                    counts.drop("empty")
                    continue
                counts.rows_out += 1
                words.update(tokens)
                if len(sample) < config.measure_rows:
                    sample.append(_join(tokens))
    for tokens in _segment_files(config, files, counts, sample):
        words.update(tokens)
    return words


def _segment_files(config: Config, files: list[Path], counts: Counts, sample: list[str]) -> Iterator[list[str]]:
    if not files:
        return
    rows = itertools.chain.from_iterable(read_rows(path, config, counts) for path in files)
    big = sum(f.stat().st_size for f in files) >= _PARALLEL_MIN_BYTES
    workers = config.workers or (default_workers() if big else 1)

    def chunks() -> Iterator[list[str]]:
        while chunk := [row.text for row in itertools.islice(rows, 500)]:
            sample.extend(chunk[: max(0, config.measure_rows - len(sample))])
            yield chunk

    for words in cut_parallel(SegmenterSpec(hmm=config.hmm), chunks(), workers):
        yield from words


def _join(words: list[str]) -> str:
    """A text back from its jieba words: no spaces, except between two Latin/digit runs."""
    out = words[0]
    for word in words[1:]:
        out += (" " if out[-1].isascii() and out[-1].isalnum() and word[0].isascii() and word[0].isalnum() else "") + word
    return out


def _discover(config: Config, planner: WordPlanner, words: Counter, phrases: Counter,
              stop: set[str]) -> dict[str, tuple[int, str]]:
    """Frequent corpus words and phrases the vocabulary lacks, most frequent first, up to max_words."""
    candidates = {w: (n, "corpus") for w, n in words.items()}
    candidates.update({p: (max(n, words.get(p, 0)), "phrases") for p, n in phrases.items()})
    ranked = sorted(((w, n, s) for w, (n, s) in candidates.items() if _eligible(config, w, n, stop)),
                    key=lambda t: (-t[1], t[0]))
    chosen: dict[str, tuple[int, str]] = {}
    for word, n, source in ranked:
        if config.max_words and len(chosen) >= config.max_words:
            break
        if planner.consider(word) == "new":
            chosen[word] = (n, source)
    return chosen


def _eligible(config: Config, word: str, n: int, stop: set[str]) -> bool:
    if n < config.min_freq or not config.min_len <= len(word) <= config.max_len or word in stop:
        return False
    if config.cjk_only and not any(_is_cjk(ch) for ch in word):
        return False
    return any(ch.isalpha() for ch in word)  # never bare numbers or punctuation runs


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF


def _write_words(out: Path, new: list[NewWord], found: _Found, old_size: int) -> None:
    with open(out / WORDS_TSV, "w", encoding="utf-8") as fh:
        fh.write("word\ttoken\tid\tcount\tsource\tkind\tpieces\n")
        for i, w in enumerate(new):
            fh.write(f"{w.word}\t{w.token}\t{old_size + i}\t{found.counts.get(w.word, 0)}\t{found.sources.get(w.word, '')}\t"
                     f"{w.kind}\t{' '.join(map(str, w.pieces))}\n")


def _write_userdict(out: Path, new: list[NewWord], counts: dict) -> None:
    """`word freq` a line, shorter words first, each at least the frequency jieba needs to keep it whole
    (suggest_freq), so plain `jieba.load_userdict` and every nlp_pipe.segmenter policy keep it one word."""
    import jieba

    if not new:
        (out / USERDICT).write_text("", encoding="utf-8")
        return
    segmenter = jieba.Tokenizer()
    segmenter.initialize()
    lines = []
    for w in sorted(new, key=lambda w: len(w.word)):  # shorter first: a word's frequency accounts for its sub-words
        lines.append(f"{w.word} {max(counts.get(w.word, 0), segmenter.suggest_freq(w.word, tune=True), 1)}\n")
    (out / USERDICT).write_text("".join(lines), encoding="utf-8")


def _report(metrics: dict, planner: WordPlanner, found: _Found, old_size: int) -> str:
    m = metrics
    activated = f", {m['activated']} in the vocab but never emitted (now emitted)" if m["activated"] else ""
    lines = ["## Vocabulary expansion",
             f"{m['vocab_size_before']:,} -> {m['vocab_size_after']:,} tokens: {m['new_words']} new words "
             f"({m['from_word_files']} from word files, {m['from_corpus']} from the corpus), rows initialised with "
             f"`{m['init']}`. {m['added_tokens']} are added tokens matched in the raw text before BERT splits Chinese "
             f"characters (longest match first), {m['wordpiece_entries']} WordPiece entries.",
             f"Skipped: {m['skipped_existing']} already single tokens, {m['invalid']} invalid{activated}."]
    if "tokens_per_text_before" in m:
        lines.append(f"On {m['texts_measured']} corpus texts: {m['tokens_per_text_before']} -> {m['tokens_per_text_after']} "
                     f"tokens per text ({m['token_reduction']:.1%} fewer); the {m['texts_without_new_words_unchanged']} "
                     "texts without a new word tokenise exactly as before.")
    for word, reason in itertools.islice(planner.invalid.items(), 10):
        lines.append(f"- invalid: `{word}`: {reason}")
    lines += ["", "| word | id | count | source | replaces |", "| --- | --- | --- | --- | --- |"]
    for i, w in enumerate(planner.new[:50]):
        pieces = " ".join(planner.tokenizer.convert_ids_to_tokens(list(w.pieces)))
        lines.append(f"| {w.word} | {old_size + i} | {found.counts.get(w.word, 0)} | {found.sources.get(w.word, '')} | {pieces} |")
    lines += ["", f"All new words: {WORDS_TSV}; jieba user dictionary for whole-word masking: {USERDICT}."]
    return "\n".join(lines)
