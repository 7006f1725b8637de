"""Token blocks for pretraining: NSP/SOP pairs and packing to full blocks, as layouts over one token stream.

Each example is one block of exactly `max_seq_len` tokens, so almost no compute goes to
padding (only the last block of each run of documents is short):

- sentence_task none: every document's tokens go into one stream, documents separated by
  [SEP], cut into `[CLS] ... [SEP]` blocks (RoBERTa's FULL-SENTENCES packing).
- nsp / sop: a document long enough for a block yields pairs `[CLS] A [SEP] B [SEP]` that fill
  it: chunks of whole sentences split at a random sentence boundary, cut to the block at random
  ends (Google BERT's create_pretraining_data, without its short chunks). NSP negatives take B
  from another document and put the unused continuation back (as Google BERT does); SOP
  negatives are A and B swapped (ALBERT). What no pair uses (short documents, the tail of long
  ones, the tokens cut off to fit a block) is packed into MLM-only blocks whose sentence label is
  ignored (-100): with sop and none every token of the corpus is in exactly one block.

A block is stored as its layout, not its tokens: the token ranges it takes from the corpus's one
token stream, how many of them form segment A, and its sentence label. `[CLS] r1 [SEP] r2 [SEP] ...`
is put together when the block is read (`Layouts.block`), so several pair sets cost a few bytes a
block each instead of a copy of the text (docs/pretraining-cache.md).

Word-boundary labels, one per token (ERNIE style): 0 = a word starts here, 1 = inside a word,
-1 = [CLS] / [SEP] / padding. A segment cut inside a word starts with a word start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .masking import NOT_A_WORD, WORD_INSIDE, WORD_START

IGNORE = -100  # sentence label of MLM-only blocks; the loss ignores it
SentenceTask = Literal["nsp", "sop", "none"]


@dataclass(frozen=True)
class BlockSpec:
    max_seq_len: int
    sentence_task: SentenceTask
    seed: int
    cls_id: int
    sep_id: int


@dataclass(frozen=True)
class Doc:
    """A document in the token stream: tokens start:end, and where its sentences (or the block-sized
    pieces of longer ones) start."""

    start: int
    end: int
    starts: list[int]


def doc_in_stream(start: int, end: int, sentences: np.ndarray, piece: int) -> Doc:
    """A document's Doc; a sentence longer than `piece` tokens counts as several (web text has lines of
    thousands of characters without a 。)."""
    bounds = [*sorted(set(int(s) for s in sentences if start <= s < end) | {start}), end]
    starts: list[int] = []
    for a, b in zip(bounds, bounds[1:]):
        starts += range(a, b, piece)
    return Doc(start, end, starts)


@dataclass
class Layouts:
    """Blocks as layouts: ranges[offsets[i]:offsets[i + 1]] are block i's token ranges, the first
    `a_counts[i]` of them segment A (token type 0), `labels[i]` its sentence label."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    a_counts: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add(self, ranges: list[tuple[int, int]], a_count: int, label: int) -> None:
        self.ranges += ranges
        self.offsets.append(len(self.ranges))
        self.a_counts.append(a_count)
        self.labels.append(label)

    def __len__(self) -> int:
        return len(self.labels)


def build_layouts(docs: list[Doc], spec: BlockSpec, seed: int) -> Layouts:
    """The blocks of one run of documents (pairs draw their NSP negatives from within it)."""
    rng = random.Random(seed)
    out = Layouts()
    body = spec.max_seq_len - 2  # [CLS] and the final [SEP] aside
    current: list[tuple[int, int]] = []
    used = 0  # tokens of `current` plus the [SEP]s between its ranges
    for d, doc in enumerate(docs):
        left = _pairs(d, docs, spec, rng, out) if spec.sentence_task != "none" else [(doc.start, doc.end)]
        for start, end in left:  # what no pair used, each run of text after a [SEP]
            while start < end:
                space = body - used - (1 if current else 0)
                if space <= 0:
                    if used < body:  # room for a [SEP] but not for a token after it: "... [SEP] [SEP]" keeps the block full
                        current.append((start, start))
                    out.add(current, len(current), IGNORE)
                    current, used = [], 0
                    continue
                take = min(space, end - start)
                used += take + (1 if current else 0)
                current.append((start, start + take))
                start += take
    if current:
        out.add(current, len(current), IGNORE)
    return out


def _pairs(d: int, docs: list[Doc], spec: BlockSpec, rng: random.Random, out: Layouts) -> list[tuple[int, int]]:
    """Add the pairs document `d` fills; returns the token ranges no pair used (the tokens cut off
    to fit, the tail), which go to MLM-only blocks: every token is trained on.

    As Google BERT: a chunk of whole sentences at least a block long, split at a random sentence
    boundary into A and B, the pair then cut to the block by dropping tokens from a random end of
    the longer segment. Both segments thus start and end mid-sentence equally often, so which one
    ends with a 。 says nothing about their order (windows cut at fixed offsets would: SOP then
    learns punctuation, not discourse)."""
    doc = docs[d]
    starts = doc.starts
    bounds = [*starts, doc.end]  # sentence i spans bounds[i]:bounds[i + 1]
    room = spec.max_seq_len - 3
    first = 0
    cut: list[tuple[int, int]] = []
    while True:
        last = first
        while last < len(starts) and bounds[last] - bounds[first] < room:
            last += 1
        if bounds[last] - bounds[first] < room:  # too little left for a pair
            return _merged([*cut, (bounds[first], doc.end)])
        if last - first > 1:
            a_end = rng.randint(first + 1, last - 1)
            split = bounds[a_end]
        else:  # one sentence fills the block: its two parts
            a_end, split = last, bounds[first] + rng.randint(room // 4, 3 * room // 4)
        a, b = (bounds[first], split), (split, bounds[last])
        negative = rng.random() < 0.5
        if negative and spec.sentence_task == "nsp" and len(docs) > 1:
            other = _random_span(d, docs, room - (a[1] - a[0]), rng)
            kept_a, kept_b = _fit(a, other, room, rng)
            out.add([kept_a, kept_b], 1, 1)
            cut += _outside(a, kept_a)  # not the other document's text: that stays where it is
            first = a_end  # the unused continuation goes back into the document, as in Google BERT
            continue
        swap = negative and spec.sentence_task == "sop"
        kept_a, kept_b = _fit(a, b, room, rng)
        out.add([kept_b, kept_a] if swap else [kept_a, kept_b], 1, 1 if swap else 0)
        cut += _outside(a, kept_a) + _outside(b, kept_b)
        first = last


def _random_span(d: int, docs: list[Doc], need: int, rng: random.Random) -> tuple[int, int]:
    """Whole sentences of another document, from a random sentence on, at least `need` tokens long
    where a few draws find a document that long (so negatives fill their block too)."""
    for _ in range(10):
        other = rng.randrange(len(docs) - 1)
        other += other >= d
        if docs[other].end - docs[other].start >= need:
            break
    doc = docs[other]
    fitting = [i for i, s in enumerate(doc.starts) if doc.end - s >= need] or [0]
    i = rng.choice(fitting)
    end = next((s for s in doc.starts[i + 1:] if s - doc.starts[i] >= need), doc.end)
    return doc.starts[i], end


def _fit(a: tuple[int, int], b: tuple[int, int], room: int, rng: random.Random) -> tuple[tuple[int, int], tuple[int, int]]:
    """The pair cut to `room` tokens: the longer segment loses tokens until they are as long (then both,
    B first), each token from a random end."""
    la, lb = a[1] - a[0], b[1] - b[0]
    excess = max(0, la + lb - room)
    first = min(excess, abs(la - lb))
    rest = excess - first
    trim_a = (first if la > lb else 0) + rest // 2
    trim_b = (first if la <= lb else 0) + (rest - rest // 2)
    return _trim(a, trim_a, rng), _trim(b, trim_b, rng)


def _trim(span: tuple[int, int], n: int, rng: random.Random) -> tuple[int, int]:
    front = bin(rng.getrandbits(n)).count("1") if n else 0  # each dropped token from either end, a coin each
    return span[0] + front, span[1] - (n - front)


def _outside(span: tuple[int, int], kept: tuple[int, int]) -> list[tuple[int, int]]:
    return [r for r in ((span[0], kept[0]), (kept[1], span[1])) if r[1] > r[0]]


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching ones joined (fewer [SEP]s between runs of the same text)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def assemble(ranges: np.ndarray, a_count: int, tokens: np.ndarray, word_start: Any,
             spec: BlockSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] r1 [SEP] r2 [SEP] ...`: input ids, token types (1 after segment A) and word labels of one block;
    `word_start[start:end]` are the word-start flags of tokens start:end."""
    lengths = (ranges[:, 1] - ranges[:, 0]).astype(np.int64)
    total = int(lengths.sum()) + len(lengths) + 1
    ids = np.empty(total, dtype=np.int64)
    types = np.zeros(total, dtype=np.int64)
    words = np.full(total, NOT_A_WORD, dtype=np.int64)
    ids[0] = spec.cls_id
    pos = 1
    for k, ((start, end), n) in enumerate(zip(ranges.tolist(), lengths.tolist())):
        if n:
            ids[pos:pos + n] = tokens[start:end]
            words[pos:pos + n] = np.where(word_start[start:end], WORD_START, WORD_INSIDE)
            words[pos] = WORD_START  # a segment cut inside a word starts with that word's remaining characters
        ids[pos + n] = spec.sep_id
        if k >= a_count:
            types[pos:pos + n + 1] = 1
        pos += n + 1
    return ids, types, words
