"""Token blocks for pretraining: word-boundary labels, NSP/SOP pairs, packing to full blocks.

Each example is one block of exactly `max_seq_len` tokens, so almost no compute goes to
padding (only the last block of each `datasets.map` batch of documents is short):

- sentence_task none: every document's tokens go into one stream, documents separated by
  [SEP], cut into `[CLS] ... [SEP]` blocks (RoBERTa's FULL-SENTENCES packing).
- nsp / sop: a document long enough for a block yields pairs `[CLS] A [SEP] B [SEP]` that fill
  it: chunks of whole sentences split at a random sentence boundary, cut to the block at random
  ends (Google BERT's create_pretraining_data, without its short chunks). NSP negatives take B
  from another document and put the unused continuation back (as Google BERT does); SOP
  negatives are A and B swapped (ALBERT). What no pair uses (short documents, the tail of long
  ones, the tokens cut off to fit a block) is packed into MLM-only blocks whose sentence label is
  ignored (-100): with sop and none every token of the corpus is in exactly one block.

Word-boundary labels, one per token (ERNIE style, exported with the examples): 0 = a word starts
here, 1 = inside a word, -1 = [CLS] / [SEP] / padding. Words are jieba's, over the tokenizer's
character tokens (all word pieces of a Latin word belong to its jieba word).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any, Literal

from ..text.segmenter import Segmenter, SegmenterSpec
from .masking import NOT_A_WORD, WORD_INSIDE, WORD_START

IGNORE = -100  # sentence label of MLM-only blocks; the loss ignores it
SentenceTask = Literal["nsp", "sop", "none"]

_segmenter: Segmenter | None = None  # one per datasets.map worker process


@dataclass(frozen=True)
class BlockSpec:
    max_seq_len: int
    sentence_task: SentenceTask
    seed: int
    cls_id: int
    sep_id: int


def tokenize_documents(batch: dict[str, list], tokenizer: Any, hmm: bool) -> dict[str, list]:
    """datasets.map function: documents -> token ids and word-boundary labels per sentence."""
    global _segmenter
    flat = [s for sentences in batch["sentences"] for s in sentences]
    encoded = tokenizer(flat, add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False)
    ids_out, labels_out, i = [], [], 0
    for sentences, words in zip(batch["sentences"], batch["words"]):
        doc_ids, doc_labels = [], []
        for j, sentence in enumerate(sentences):
            ids, offsets = encoded["input_ids"][i], encoded["offset_mapping"][i]
            i += 1
            if not ids:
                continue
            if words:
                sentence_words = words[j]
            else:
                _segmenter = _segmenter or Segmenter(SegmenterSpec(hmm=hmm))
                sentence_words = _segmenter.cut(sentence)
            doc_ids.append(ids)
            doc_labels.append(word_labels(sentence, sentence_words, offsets))
        ids_out.append(doc_ids)
        labels_out.append(doc_labels)
    return {"ids": ids_out, "labels": labels_out}


def word_labels(text: str, words: list[str], offsets: list[tuple[int, int]]) -> list[int]:
    """0/1 per token: does the token start a new jieba word (0) or continue the previous one (1)."""
    starts, pos = [], 0
    for word in words:
        found = text.find(word, pos)
        if found >= 0:
            starts.append(found)
            pos = found + len(word)
    labels: list[int] = []
    previous = None
    for begin, _end in offsets:
        index = bisect.bisect_right(starts, begin) - 1
        labels.append(WORD_INSIDE if index == previous and index >= 0 else WORD_START)
        previous = index
    return labels


def build_blocks(batch: dict[str, list], indices: list[int], spec: BlockSpec) -> dict[str, list]:
    """datasets.map function: tokenised documents -> blocks (see the module docstring)."""
    rng = random.Random(spec.seed * 1_000_003 + indices[0])  # same blocks on every rebuild
    docs = [_flatten(ids, labels, spec.max_seq_len - 3) for ids, labels in zip(batch["ids"], batch["labels"])]
    out: dict[str, list] = {"input_ids": [], "token_type_ids": [], "word_labels": [], "sentence_label": []}
    stream_ids: list[int] = []
    stream_labels: list[int] = []
    body = spec.max_seq_len - 2
    for d, (ids, labels, _starts) in enumerate(docs):
        left = _pairs(d, docs, spec, rng, out) if spec.sentence_task != "none" else [(0, len(ids))]
        for start, end in left:  # what no pair used, each run of text after a [SEP]
            if stream_ids:
                stream_ids.append(spec.sep_id)
                stream_labels.append(NOT_A_WORD)
            stream_ids += ids[start:end]
            stream_labels += labels[start:end]
        taken = 0
        while len(stream_ids) - taken >= body:
            _emit_single(stream_ids[taken:taken + body], stream_labels[taken:taken + body], spec, out)
            taken += body
        del stream_ids[:taken], stream_labels[:taken]
    if stream_ids:
        _emit_single(stream_ids, stream_labels, spec, out)
    return out


def _flatten(ids: list[list[int]], labels: list[list[int]], piece: int) -> tuple[list[int], list[int], list[int]]:
    """A document's tokens in one list, with where each sentence starts; a sentence longer than a
    block counts as several (web text has lines of thousands of characters without a 。)."""
    flat_ids: list[int] = []
    flat_labels: list[int] = []
    starts: list[int] = []
    for sentence_ids, sentence_labels in zip(ids, labels):
        starts += range(len(flat_ids), len(flat_ids) + len(sentence_ids), piece)
        flat_ids += sentence_ids
        flat_labels += sentence_labels
    return flat_ids, flat_labels, starts


def _pairs(d: int, docs: list, spec: BlockSpec, rng: random.Random, out: dict[str, list]) -> list[tuple[int, int]]:
    """Emit the pairs document `d` fills; returns the token ranges no pair used (the tokens cut off
    to fit, the tail), which go to MLM-only blocks: every token is trained on.

    As Google BERT: a chunk of whole sentences at least a block long, split at a random sentence
    boundary into A and B, the pair then cut to the block by dropping tokens from a random end of
    the longer segment. Both segments thus start and end mid-sentence equally often, so which one
    ends with a 。 says nothing about their order (windows cut at fixed offsets would: SOP then
    learns punctuation, not discourse)."""
    ids, labels, starts = docs[d]
    bounds = [*starts, len(ids)]  # sentence i spans bounds[i]:bounds[i + 1]
    room = spec.max_seq_len - 3
    first = 0
    cut: list[tuple[int, int]] = []
    while True:
        last = first
        while last < len(starts) and bounds[last] - bounds[first] < room:
            last += 1
        if bounds[last] - bounds[first] < room:  # too little left for a pair
            return _merged([*cut, (bounds[first], len(ids))])
        if last - first > 1:
            a_end = rng.randint(first + 1, last - 1)
            split = bounds[a_end]
        else:  # one sentence fills the block: its two parts
            a_end, split = last, bounds[first] + rng.randint(room // 4, 3 * room // 4)
        a = (ids, labels, bounds[first], split)
        b = (ids, labels, split, bounds[last])
        negative = rng.random() < 0.5
        if negative and spec.sentence_task == "nsp" and len(docs) > 1:
            pair = _emit_pair(a, _random_span(d, docs, room - (a[3] - a[2]), rng), 1, spec, rng, out)
            first = a_end  # the unused continuation goes back into the document, as in Google BERT
        elif negative and spec.sentence_task == "sop":
            pair, first = _emit_pair(b, a, 1, spec, rng, out), last
        else:
            pair, first = _emit_pair(a, b, 0, spec, rng, out), last
        cut += [(start, end) for source, start, end in pair if source is ids]  # not another document's text


def _random_span(d: int, docs: list, need: int, rng: random.Random) -> tuple[list[int], list[int], int, int]:
    """Whole sentences of another document, from a random sentence on, at least `need` tokens long
    where a few draws find a document that long (so negatives fill their block too)."""
    for _ in range(10):
        other = rng.randrange(len(docs) - 1)
        other += other >= d
        if len(docs[other][0]) >= need:
            break
    ids, labels, starts = docs[other]
    fitting = [i for i, s in enumerate(starts) if len(ids) - s >= need] or [0]
    i = rng.choice(fitting)
    end = next((s for s in starts[i + 1:] if s - starts[i] >= need), len(ids)) if starts else len(ids)
    return ids, labels, (starts[i] if starts else 0), end


def _emit_pair(a: tuple, b: tuple, label: int, spec: BlockSpec, rng: random.Random,
               out: dict[str, list]) -> list[tuple[list[int], int, int]]:
    """`[CLS] A [SEP] B [SEP]`, the longer segment losing tokens at a random end until the pair fits;
    returns the ranges cut off, as (token list, start, end)."""
    sa, sb = list(a), list(b)  # [ids, labels, start, end], shrunk below
    while (sa[3] - sa[2]) + (sb[3] - sb[2]) > spec.max_seq_len - 3:
        longer = sa if sa[3] - sa[2] > sb[3] - sb[2] else sb
        if rng.random() < 0.5:
            longer[2] += 1
        else:
            longer[3] -= 1
    a_ids, a_labels = sa[0][sa[2]:sa[3]], sa[1][sa[2]:sa[3]]
    b_ids, b_labels = sb[0][sb[2]:sb[3]], sb[1][sb[2]:sb[3]]
    out["input_ids"].append([spec.cls_id, *a_ids, spec.sep_id, *b_ids, spec.sep_id])
    out["token_type_ids"].append([0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1))
    out["word_labels"].append([NOT_A_WORD, *_starting(a_labels), NOT_A_WORD, *_starting(b_labels), NOT_A_WORD])
    out["sentence_label"].append(label)
    return [(seg[0], start, end) for seg, old in zip((sa, sb), (a, b))
            for start, end in ((old[2], seg[2]), (seg[3], old[3])) if end > start]


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching ones joined (fewer [SEP]s between runs of the same text)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _emit_single(ids: list[int], labels: list[int], spec: BlockSpec, out: dict[str, list]) -> None:
    out["input_ids"].append([spec.cls_id, *ids, spec.sep_id])
    out["token_type_ids"].append([0] * (len(ids) + 2))
    out["word_labels"].append([NOT_A_WORD, *_starting(labels), NOT_A_WORD])
    out["sentence_label"].append(IGNORE)


def _starting(labels: list[int]) -> list[int]:
    """A segment cut inside a word starts with that word's remaining characters: make it a word start."""
    if labels and labels[0] == WORD_INSIDE:
        return [WORD_START, *labels[1:]]
    return labels
