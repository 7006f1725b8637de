"""Stage `expand`: grow a pretrained BERT's vocabulary with domain words that come out as single tokens.

    nlp-pipe expand --checkpoint runs/bert --words domain_words.txt --out runs/bert_expanded
    nlp-pipe expand --checkpoint ~/bert-base-chinese --corpus runs/seg --phrases runs/phrases \
        --min-freq 20 --max-words 3000 --out runs/bert_expanded

Words come from word files (always added) and from a domain corpus (frequent jieba words and
phrases the vocabulary lacks, most frequent first). Writes a HuggingFace directory (same model
class as the checkpoint, NSP head kept; tokenizer.json, vocab.txt with the new words after the old
tokens), words.tsv (word, id, count, source, the pieces it replaces) and jieba_userdict.txt so
whole-word masking in `pretrain` keeps the new words whole. How the tokenizer is changed, and why,
is explained in nlp_pipe/expansion/tokenizer_growth.py; the embedding rows in nlp_pipe/expansion/embedding_growth.py.
One process: under `accelerate launch` / torchrun every process refuses with one line and exit 2.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..checkpoints import families, loading
from ..core.config import SEED_MAX, option
from ..core.contract import Input, Result
from ..core.errors import UserError
from ..core.files import USERDICT_TXT, VOCAB_TXT, WORDS_TSV
from ..expansion.embedding_growth import check_saved, grow, initial_rows, load_model, snapshot
from ..expansion.tokenizer_growth import NewWord, WordPlanner, compare_tokenization, load_tokenizer, write_expanded
from ..expansion.word_discovery import DiscoveryOptions, Found, gather_words
from ..text.userdict import write_userdict

NAME = "expand"
VERSION = 2  # 2: added words matched in the normalised (lower-cased) text, stored normalised ("T恤" -> t恤)
OUTPUTS = (WORDS_TSV, USERDICT_TXT, VOCAB_TXT)

INPUTS = {
    "checkpoint": Input("a BERT checkpoint: a HuggingFace model directory with its tokenizer (pretrain artifact or "
                        "any local BERT dir) or a Hub id", kind="any", stages=("pretrain", "expand", "distill"), hub=True),
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
class Config(DiscoveryOptions):
    init: Literal["mean-chars", "random", "vectors"] = option(
        "mean-chars", "new rows: mean of the word's character rows, random N(0, initializer_range), or word2vec vectors "
        "mapped into the embedding space (needs --vectors)")
    bias_shift: float = option(1.0, "mean-chars/vectors: a new word's decoder bias is its pieces' mean bias minus this per "
                                    "extra piece (keeps new words from taking the characters' probability; 0 = plain mean)", min=0.0)
    seed: int = option(0, "seed for --init random", min=0, max=SEED_MAX)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    if not (inputs["words"] or inputs["corpus"] or inputs["phrases"]):
        raise UserError("expand: no words to add; give --words FILE, --corpus (segment artifact or text) or --phrases")
    if config.init == "vectors" and not inputs["vectors"]:
        raise UserError("expand: --init vectors needs --vectors (a word2vec artifact or word2vec text file)")
    checkpoint = inputs["checkpoint"][0]
    families.require(checkpoint, NAME)
    tokenizer = load_tokenizer(checkpoint)
    planner = WordPlanner(tokenizer)
    found = gather_words(config, inputs, planner)
    if not (planner.new or planner.existing or planner.activated or planner.invalid):  # empty files, or nothing over min_freq
        raise UserError("expand: no words to add: the --words files, corpus and phrases given hold no word "
                        f"(corpus words need min_freq {config.min_freq}, {config.min_len}-{config.max_len} characters)")
    log.info("%d new words; %d already single tokens, %d in the vocab but never emitted, %d invalid",
             len(planner.new), len(planner.existing), len(planner.activated), len(planner.invalid))
    model = load_model(checkpoint)  # after the words: a bad word file fails before the slow load
    loading.check_vocabulary(tokenizer, model, NAME, checkpoint)  # rows for the old ids first, then the new words
    before, old_size = snapshot(model), len(tokenizer)
    expanded = write_expanded(tokenizer, planner, out, checkpoint / VOCAB_TXT)
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
             "tokenizer_mechanism": "Chinese/mixed words: added tokens (normalized=True: leftmost-longest match in the "
                                    "normalised text, CJK characters split off by the pre-tokenizer); one-piece words: "
                                    "WordPiece vocab entries; all listed in vocab.txt"}
    counts = found.rows if found.rows.rows_in or found.rows.dropped else None
    return Result(counts, metrics, _report(metrics, planner, found, old_size), extra)


def _grow(model, new: list[NewWord], config: Config, inputs: dict[str, list[Path]], tokenizer) -> dict:
    vectors = None
    if config.init == "vectors":
        from ..vectors.store import load_keyed_vectors

        vectors = (load_keyed_vectors(inputs["vectors"][0]), tokenizer.get_vocab(), [w.word for w in new])
    rows, biases, stats = initial_rows(model, [w.pieces for w in new], config.init, seed=config.seed,
                                       bias_shift=config.bias_shift, vectors=vectors)
    grow(model, len(tokenizer), rows, biases)
    return stats


def _write_words(out: Path, new: list[NewWord], found: Found, old_size: int) -> None:
    with open(out / WORDS_TSV, "w", encoding="utf-8") as fh:
        fh.write("word\ttoken\tid\tcount\tsource\tkind\tpieces\n")
        for i, w in enumerate(new):
            fh.write(f"{w.word}\t{w.token}\t{old_size + i}\t{found.counts.get(w.word, 0)}\t{found.sources.get(w.word, '')}\t"
                     f"{w.kind}\t{' '.join(map(str, w.pieces))}\n")


def _write_userdict(out: Path, new: list[NewWord], counts: dict) -> None:
    """Shorter words first, each at least the frequency jieba needs to keep it whole (suggest_freq), so plain
    `jieba.load_userdict` and every segmenter frequency policy keep it one word."""
    import jieba

    segmenter = jieba.Tokenizer()
    if new:
        segmenter.initialize()
    # shorter first: a word's frequency accounts for its sub-words
    write_userdict(out / USERDICT_TXT, [(w.word, max(counts.get(w.word, 0), segmenter.suggest_freq(w.word, tune=True), 1))
                                        for w in sorted(new, key=lambda w: len(w.word))])


def _report(metrics: dict, planner: WordPlanner, found: Found, old_size: int) -> str:
    m = metrics
    activated = f", {m['activated']} in the vocab but never emitted (now emitted)" if m["activated"] else ""
    lines = ["## Vocabulary expansion",
             f"{m['vocab_size_before']:,} -> {m['vocab_size_after']:,} tokens: {m['new_words']} new words "
             f"({m['from_word_files']} from word files, {m['from_corpus']} from the corpus), rows initialised with "
             f"`{m['init']}`. {m['added_tokens']} are added tokens matched in the normalised "
             f"text (lower-cased as the tokenizer does) before Chinese characters are split (longest match first), "
             f"{m['wordpiece_entries']} WordPiece entries.",
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
    lines += ["", f"All new words: {WORDS_TSV}; jieba user dictionary for whole-word masking: {USERDICT_TXT}."]
    return "\n".join(lines)
