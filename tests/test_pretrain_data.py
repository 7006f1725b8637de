"""Pretraining data: sentence splitting, word-boundary labels, NSP/SOP pairs, packing, whole-word masking."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import datasets
import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from conftest import FIXTURES
from nlp_pipe.data import documents as docs_mod
from nlp_pipe.data import pretraining
from nlp_pipe.data.blocks import IGNORE, NOT_A_WORD, WORD_INSIDE, WORD_START, BlockSpec, build_blocks, word_labels
from nlp_pipe.data.masking import MaskingCollator
from nlp_pipe.text.corpus import Counts, ReadOptions


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt"))


def test_sentences_split_on_chinese_end_punctuation_and_keep_closing_quotes():
    text = "今天天气很好。你去吗？“走吧！”他说，我们出发了"
    assert docs_mod.split_sentences(text) == ["今天天气很好。", "你去吗？", "“走吧！”", "他说，我们出发了"]
    assert docs_mod.split_sentences("没有句号的一段话") == ["没有句号的一段话"]


def test_words_follow_their_sentences():
    sentences, words = docs_mod.split_words("我爱北京。天安门很大！", ["我", "爱", "北京", "。", "天安门", "很", "大", "！"])
    assert sentences == ["我爱北京。", "天安门很大！"]
    assert words == [["我", "爱", "北京", "。"], ["天安门", "很", "大", "！"]]


def test_layout_detection_and_document_boundaries(tmp_path):
    assert docs_mod.detect_layout(FIXTURES / "news.txt", ReadOptions()) == "blank"
    one_per_line = tmp_path / "docs.txt"
    one_per_line.write_text("第一篇。有两句！\n第二篇只有一句。\n", encoding="utf-8")
    assert docs_mod.detect_layout(one_per_line, ReadOptions()) == "line"
    counts = Counts()
    news = list(docs_mod.file_documents(FIXTURES / "news.txt", ReadOptions(), "auto", counts))
    blank_lines = sum(1 for line in (FIXTURES / "news.txt").read_text(encoding="utf-8").splitlines() if not line.strip())
    assert len(news) == blank_lines + 1
    assert counts.dropped.get("document_separator") == blank_lines and "empty" not in counts.dropped
    lines = list(docs_mod.file_documents(one_per_line, ReadOptions(), "auto", Counts()))
    assert [d["sentences"] for d in lines] == [["第一篇。", "有两句！"], ["第二篇只有一句。"]]


def test_word_labels_mark_jieba_word_starts_over_characters(tokenizer):
    text = "北京大学hello世界"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = word_labels(text, ["北京大学", "hello", "世界"], enc["offset_mapping"])
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    starts = [t for t, lab in zip(tokens, labels) if lab == WORD_START]
    assert tokens[:4] == ["北", "京", "大", "学"] and labels[:4] == [0, 1, 1, 1]
    assert starts[0] == "北" and starts[-1] == "世" and labels[-1] == WORD_INSIDE
    assert len(starts) == 3  # every word piece of "hello" belongs to its one jieba word


def _docs(n_docs: int, rng: np.random.Generator) -> tuple[dict[str, list], set[int]]:
    """Tokenised documents whose token ids say where they come from: doc d, position p -> 10000 + 1000 d + p;
    also the ids that end a sentence."""
    ids, labels, ends = [], [], set()
    for d in range(n_docs):
        doc_ids, doc_labels, pos = [], [], 0
        for _ in range(rng.integers(1, 9)):
            n = int(rng.integers(3, 12))
            doc_ids.append(list(range(10000 + 1000 * d + pos, 10000 + 1000 * d + pos + n)))
            doc_labels.append([WORD_START if i % 2 == 0 else WORD_INSIDE for i in range(n)])
            pos += n
            ends.add(doc_ids[-1][-1])
        ids.append(doc_ids)
        labels.append(doc_labels)
    return {"ids": ids, "labels": labels}, ends


@pytest.mark.parametrize("task", ["sop", "nsp", "none"])
def test_blocks_are_full_and_pairs_follow_their_task(task):
    batch, sentence_ends = _docs(200, np.random.default_rng(0))
    spec = BlockSpec(max_seq_len=32, sentence_task=task, seed=1, cls_id=2, sep_id=3)
    out = build_blocks(batch, list(range(200)), spec)
    lengths = [len(x) for x in out["input_ids"]]
    assert all(n == 32 for n in lengths[:-1]), "only the last block of a map batch may be short"
    labels = Counter(out["sentence_label"])
    if task != "nsp":  # every token in exactly one block (NSP negatives borrow text from other documents)
        real = [t for row in out["input_ids"] for t in row if t >= 10000]
        assert sorted(real) == sorted(t for doc in batch["ids"] for s in doc for t in s)
    if task == "none":
        assert set(labels) == {IGNORE}
        return
    assert labels[0] > 50 and labels[1] > 50
    first_ends_sentence = {0: [], 1: []}
    for ids, types, label, word in zip(out["input_ids"], out["token_type_ids"], out["sentence_label"], out["word_labels"]):
        assert word[0] == NOT_A_WORD and word[-1] == NOT_A_WORD and ids[0] == 2 and ids[-1] == 3
        if label == IGNORE:
            continue
        first_sep = ids.index(3)
        a, b = ids[1:first_sep], ids[first_sep + 1:-1]
        assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert word[1] == WORD_START and word[first_sep + 1] == WORD_START  # segments start with a word
        same_doc = a[0] // 1000 == b[0] // 1000
        if label == 0:  # the true continuation: B's text follows A's
            assert same_doc and b[0] > a[-1]
        elif task == "sop":  # swapped: B's text comes before A's
            assert same_doc and a[0] > b[-1]
        else:  # NSP negative: B from another document
            assert not same_doc
        first_ends_sentence[label].append(a[-1] in sentence_ends)
    if task == "sop":  # no shortcut: whether the first segment ends a sentence says nothing about the order
        rates = [sum(v) / len(v) for v in first_ends_sentence.values()]
        assert abs(rates[0] - rates[1]) < 0.2, rates  # fixed-offset windows gave 0.0 vs 1.0


def test_padding_below_two_percent_through_the_dataset_build(tmp_path, tokenizer):
    spec = pretraining.BuildSpec(BlockSpec(32, "sop", 0, tokenizer.cls_token_id, tokenizer.sep_token_id),
                                 "auto", ReadOptions(), True, eval_docs=2)
    corpus = [FIXTURES / "news.txt", FIXTURES / "reviews.tsv"]  # long documents and short reviews
    killed = tmp_path / "cache" / ".0123456789abcdef.tmp-4242"  # what a SIGKILLed build leaves
    (killed / "build").mkdir(parents=True)
    (killed / "build" / "tokens-train-00000.arrow").write_bytes(b"half")
    built = pretraining.build(corpus, "news+reviews", tokenizer, spec, tmp_path / "cache", num_proc=1)
    assert not killed.exists() and [p.name for p in (tmp_path / "cache").iterdir()] == [built.cache_dir.name]
    stats = built.stats["train"]
    assert stats["padding_fraction"] < 0.02 and stats["blocks"] > 100
    assert 0 < stats["pair_blocks"] < stats["blocks"]  # long documents give pairs, reviews packed MLM-only blocks
    assert built.stats["documents"] == 9 + 160 and built.stats["eval_documents"] == 2
    again = pretraining.build(corpus, "news+reviews", tokenizer, spec, tmp_path / "cache", num_proc=1)
    assert again.reused and again.train["input_ids"] == built.train["input_ids"]
    three = pretraining.build(corpus, "news+reviews", tokenizer, replace(spec, pair_sets=3), tmp_path / "cache", num_proc=1)
    n = stats["blocks"]
    assert not three.reused and three.stats["train"]["blocks"] == pytest.approx(3 * n, abs=6)
    assert three.train[:n]["input_ids"] == built.train["input_ids"]  # the first set is the single-set build
    assert three.train[n:2 * n]["input_ids"] != built.train["input_ids"]  # the others split and cut elsewhere
    assert len(three.eval) == len(built.eval)  # evaluation keeps one fixed set


def test_blocks_are_the_same_whatever_the_worker_count(tmp_path):
    rng = np.random.default_rng(5)
    docs = [[rng.integers(10, 500, size=rng.integers(3, 30)).tolist() for _ in range(rng.integers(1, 6))] for _ in range(2300)]
    tokens = datasets.Dataset.from_dict({"ids": docs, "labels": [[[1] * len(s) for s in d] for d in docs]})
    spec = pretraining.BuildSpec(BlockSpec(32, "nsp", 0, 2, 3), "auto", ReadOptions(), True, eval_docs=0)
    built = {n: pretraining._blocks(tokens, spec, n, 2, tmp_path / f"blocks{n}") for n in (1, 2, 3)}
    assert len(built[1]) > 1000 and built[1]["sentence_label"].count(1) > 100  # pairs, negatives among them
    for n in (2, 3):  # 3 workers cut 2,300 documents at 767 and 1,534, off the 1,000-document runs
        assert built[n]["input_ids"] == built[1]["input_ids"] and built[n]["sentence_label"] == built[1]["sentence_label"]


def _collator(whole_word=True, seed=0) -> MaskingCollator:
    return MaskingCollator(pad_id=0, mask_id=4, vocab_size=5000, special_ids=(0, 1, 2, 3, 4), whole_word=whole_word, seed=seed)


def _random_blocks(n: int, length: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for _ in range(n):
        size = int(rng.integers(length // 2, length))
        word = []
        while len(word) < size - 2:
            k = int(rng.integers(1, 5))  # words of 1-4 characters, as jieba gives
            word += [WORD_START] + [WORD_INSIDE] * (k - 1)
        word = [NOT_A_WORD] + word[: size - 2] + [NOT_A_WORD]
        ids = [2] + rng.integers(100, 5000, size - 2).tolist() + [3]
        rows.append({"input_ids": ids, "token_type_ids": [0] * size, "word_labels": word})
    return rows


def _words(word_labels: list[int]) -> list[list[int]]:
    words = []
    for i, label in enumerate(word_labels):
        if label == WORD_START:
            words.append([i])
        elif label == WORD_INSIDE:
            words[-1].append(i)
    return words


def test_whole_word_masking_treats_every_word_as_one_unit():
    rng = np.random.default_rng(0)
    collator = _collator()
    actions = Counter()
    for step in range(40):
        examples = _random_blocks(16, 64, rng)
        batch = collator.mask(collator.collate(examples), np.random.default_rng(step))
        for r, example in enumerate(examples):
            original, masked, labels = example["input_ids"], batch["input_ids"][r].tolist(), batch["labels"][r].tolist()
            maskable = sum(1 for w in example["word_labels"] if w != NOT_A_WORD)
            chosen_tokens = sum(1 for x in labels if x != -100)
            assert 0 < chosen_tokens <= round(maskable * 0.15)
            assert chosen_tokens >= round(maskable * 0.15) - 1  # short words fill the gap a skipped one leaves
            for word in _words(example["word_labels"]):
                chosen = [labels[i] != -100 for i in word]
                assert all(chosen) or not any(chosen), "a word is chosen whole or not at all"
                if not chosen[0]:
                    assert all(masked[i] == original[i] for i in word)
                    continue
                assert all(labels[i] == original[i] for i in word)
                states = {"mask" if masked[i] == 4 else "kept" if masked[i] == original[i] else "random" for i in word}
                assert len(states) == 1, f"characters of one word treated differently: {states}"
                actions[states.pop()] += 1
            assert all(masked[i] == original[i] for i, w in enumerate(example["word_labels"]) if w == NOT_A_WORD)
    total = sum(actions.values())
    assert total > 2000
    assert abs(actions["mask"] / total - 0.8) < 0.03
    assert abs(actions["random"] / total - 0.1) < 0.02 and abs(actions["kept"] / total - 0.1) < 0.02


def test_token_masking_and_dynamic_masks():
    rng = np.random.default_rng(1)
    examples = _random_blocks(8, 64, rng)
    token = _collator(whole_word=False)
    first = token.mask(token.collate(examples), np.random.default_rng(1))
    again = token.mask(token.collate(examples), np.random.default_rng(1))
    other = token.mask(token.collate(examples), np.random.default_rng(2))
    for r, example in enumerate(examples):
        maskable = sum(1 for w in example["word_labels"] if w != NOT_A_WORD)
        assert int((first["labels"][r] != -100).sum()) == round(maskable * 0.15)
    assert torch.equal(first["input_ids"], again["input_ids"])  # same position, same mask: exact resume
    assert not torch.equal(first["labels"], other["labels"])  # a new pass over the data, a new mask
    assert first["attention_mask"].sum().item() == sum(len(e["input_ids"]) for e in examples)
    assert first["input_ids"].shape[1] % 8 == 0
