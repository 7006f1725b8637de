"""Stage `vocab`: vocabularies from a segmented corpus, word-level or BERT (character) style.

    nlp-pipe vocab --corpus runs/seg --out runs/vocab --kind word --min-freq 2
    nlp-pipe vocab --corpus runs/seg --out runs/bert_vocab --kind bert

Writes vocab.txt (one token a line, index = line number), vocab.freq.tsv (token, count),
w2i.json and jieba_userdict.txt (`word count` for multi-character words: a user dictionary
for `segment`). `--kind bert` also saves tokenizer files so `AutoTokenizer.from_pretrained`
loads the directory; `--wordpiece` trains a WordPiece vocabulary with `tokenizers` instead.
Under `accelerate launch` / torchrun each process counts its byte range of the corpus (core.shards)
and the main one adds the counts up and writes the same files as one process would (WordPiece
training stays on the main process).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core import console, distributed, shards
from ..core.config import option
from ..core.contract import Input, Result
from ..core.errors import UserError
from ..core.files import FREQ_TSV, USERDICT_TXT, VOCAB_TXT, W2I_JSON, corpus_txt, write_vocab
from ..text.userdict import read_userdict, userdict_file, write_userdict

NAME = "vocab"
VERSION = 2  # 2: BERT pieces from tokenizers' BERT normalizer + pre-tokenizer (format characters dropped)
SHARDED = True  # the word count runs across the processes of a launch
OUTPUTS = (VOCAB_TXT, FREQ_TSV, W2I_JSON, USERDICT_TXT)
WORD_SPECIALS = ("[PAD]", "[UNK]")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

INPUTS = {
    "corpus": Input("segmented corpora (segment or phrases artifacts)", kind="artifact", multiple=True, stages=("segment", "phrases")),
    "phrases": Input("phrases artifacts whose phrases join the vocabulary whatever their count", kind="artifact",
                     multiple=True, required=False, stages=("phrases",)),
    "words": Input("word list files (one word a line, optional count after a space) added whatever their count",
                   kind="file", multiple=True, required=False),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    kind: Literal["word", "bert"] = option("word", "word: jieba words; bert: characters (+ ## pieces) for a Chinese BERT tokenizer")
    min_freq: int = option(2, "drop tokens seen fewer times", min=1)
    max_size: int = option(0, "cap the vocabulary at this many entries, specials included (0 = no cap)", min=0)
    specials: tuple[str, ...] = option((), "special tokens first in the vocab; empty = [PAD] [UNK] (word) or [PAD] [UNK] [CLS] [SEP] "
                                       "[MASK] (bert)")
    lowercase: bool = option(True, "lower-case tokens (bert kind; matches do_lower_case of Chinese BERT)")
    wordpiece: bool = option(False, "bert kind: train a WordPiece vocabulary with tokenizers instead of characters")
    wordpiece_size: int = option(21128, "vocabulary size for --wordpiece", min=100)

    def __post_init__(self) -> None:
        if self.wordpiece and self.kind != "bert":
            raise ValueError("wordpiece applies to kind=bert only")
        if self.max_size and self.max_size <= len(self.special_tokens):
            raise ValueError(f"max_size = {self.max_size} leaves no room beside {len(self.special_tokens)} special tokens")

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return self.specials or (BERT_SPECIALS if self.kind == "bert" else WORD_SPECIALS)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    if config.kind == "bert" and (inputs["phrases"] or inputs["words"]):
        raise UserError("vocab: the phrases and words inputs apply to --kind word; a BERT vocabulary is characters "
                        "(to give BERT whole-word tokens, use the expand stage)")
    files = [corpus_txt(p, NAME) for p in inputs["corpus"]]
    counts = _count_words(files)
    if not distributed.is_main():
        return Result(None, {"corpus_tokens": sum(counts.values())})
    forced = _forced_words(inputs["phrases"], inputs["words"])
    freq: Counter
    if config.kind == "bert" and config.wordpiece:
        tokens, freq = _train_wordpiece(config, files, out), counts
    elif config.kind == "bert":
        freq = _char_counts(counts, config.lowercase)
        tokens = _select(freq, {}, config)
    else:
        tokens = _select(counts, forced, config)
        freq = counts.copy()
        for word, n in forced.items():  # a forced word keeps the count its list gave (not 0 -> 1 in the userdict)
            freq[word] = max(freq[word], n)
    _write(out, tokens, freq, config)
    collided = sorted(set(config.special_tokens) & set(counts))
    metrics = {"size": len(tokens), "corpus_tokens": sum(counts.values()), "corpus_types": len(counts),
               "coverage": round(_coverage(tokens, counts, config), 4), "forced_words": len(forced),
               "specials_seen_in_corpus": collided}
    if config.kind == "bert":
        metrics["tokenizer_check"] = _check_tokenizer(out, len(tokens), config.lowercase)
    report = (f"## Vocabulary\n{config.kind} vocabulary of {len(tokens)} tokens ({len(config.special_tokens)} special), "
              f"covering {metrics['coverage']:.1%} of the corpus' tokens.\n\n"
              f"First tokens after the specials: {' '.join(tokens[len(config.special_tokens):][:60])}")
    return Result(None, metrics, report)


def _count_words(files: list[Path]) -> Counter:
    """Word counts of the files; under a launch, this rank's share added to the others' on the main rank
    (shares in rank order, so the Counter's first-seen order is the one-process order too)."""
    counts: Counter = Counter()
    if distributed.world_size() == 1:
        for line in console.file_lines(files, "vocab: counting"):
            counts.update(line.split())
        return counts
    for line in shards.lines(files):
        counts.update(line.split())
    parts = distributed.gather(counts, to_main=True)
    if not distributed.is_main():
        return counts
    total: Counter = Counter()
    for part in parts:
        total.update(part)
    return total


def _forced_words(phrase_dirs: list[Path], word_files: list[Path]) -> dict[str, int]:
    """Words that join the vocabulary whatever their corpus count, with the largest count given."""
    forced: dict[str, int] = {}
    for path in [userdict_file(p, NAME) for p in phrase_dirs] + list(word_files):
        for word, count in read_userdict(path):  # same `word [count] [tag]` grammar as jieba user dictionaries
            forced[word] = max(forced.get(word, 0), count or 1)
    return forced


def _char_counts(words: Counter, lowercase: bool) -> Counter:
    """Characters as BertTokenizer will see them: its own normalizer and pre-tokenizer (tokenizers' BERT ones:
    CJK characters and punctuation stand alone, "卡拉OK" -> 卡 拉 ok), then each piece's first character and a
    `##` continuation for the rest, so Latin words and numbers split into characters, not [UNK]."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    chars: Counter = Counter()
    for word, n in words.items():
        for piece, _ in splitter.pre_tokenize_str(normalizer.normalize_str(word)):
            chars[piece[0]] += n
            for ch in piece[1:]:
                chars["##" + ch] += n
    return chars


def _select(freq: Counter, forced: dict[str, int], config: Config) -> list[str]:
    specials = list(config.special_tokens)
    taken = set(specials)
    ranked = sorted(((w, n) for w, n in freq.items() if n >= config.min_freq and w not in taken),
                    key=lambda kv: (-kv[1], kv[0]))
    tokens = specials + [w for w, _ in ranked]
    seen = set(tokens)
    tokens += [w for w in sorted(forced, key=lambda w: (-forced[w], w)) if w not in seen and w not in taken]
    if config.max_size:
        tokens = tokens[: config.max_size]
    return tokens


def _train_wordpiece(config: Config, files: list[Path], out: Path) -> list[str]:
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, lowercase=config.lowercase)
    # limit_alphabet defaults to 1000, which turns most hanzi into [UNK] (docs/library-notes.md); tokenizers draws
    # its own progress bar (with an ETA) unless -q
    tokenizer.train([str(f) for f in files], vocab_size=config.wordpiece_size, min_frequency=config.min_freq,
                    special_tokens=list(config.special_tokens), limit_alphabet=100_000, show_progress=not console.quiet())
    vocab = tokenizer.get_vocab()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def _write(out: Path, tokens: list[str], freq: Counter, config: Config) -> None:
    write_vocab(out / VOCAB_TXT, tokens)  # reads it back and compares
    (out / FREQ_TSV).write_text("".join(f"{t}\t{freq.get(t, 0)}\n" for t in tokens), encoding="utf-8")
    (out / W2I_JSON).write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    specials = set(config.special_tokens)
    words = [t for t in tokens if t not in specials and len(t) > 1 and not t.startswith("##")]
    write_userdict(out / USERDICT_TXT, [(w, freq.get(w, 0)) for w in words])


def _check_tokenizer(out: Path, size: int, lowercase: bool) -> str:
    """Save tokenizer files beside vocab.txt and check the reloaded tokenizer has every token."""
    from transformers import AutoTokenizer, BertTokenizer

    # BertTokenizerFast(vocab_file=...) silently ignores the vocab in transformers 5 (docs/library-notes.md)
    BertTokenizer(vocab=str(out / VOCAB_TXT), do_lower_case=lowercase).save_pretrained(str(out))
    reloaded = AutoTokenizer.from_pretrained(str(out))
    if len(reloaded) != size:
        raise RuntimeError(f"tokenizer has {len(reloaded)} tokens, vocab.txt {size}")
    return f"AutoTokenizer loads {len(reloaded)} tokens"


def _coverage(tokens: list[str], counts: Counter, config: Config) -> float:
    if config.kind == "bert":
        vocab = set(tokens)
        chars = _char_counts(counts, config.lowercase)
        total = sum(chars.values()) or 1
        return sum(n for t, n in chars.items() if t in vocab) / total
    vocab = set(tokens)
    total = sum(counts.values()) or 1
    return sum(n for w, n in counts.items() if w in vocab) / total
