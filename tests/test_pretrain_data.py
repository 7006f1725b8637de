"""Pretraining data: documents, the token stream with word starts, block layouts, the cache, masking."""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from conftest import FIXTURES
from nlp_pipe.core import artifacts
from nlp_pipe.data import documents as docs_mod
from nlp_pipe.data import pretraining
from nlp_pipe.data.blocks import IGNORE, NOT_A_WORD, WORD_INSIDE, WORD_START, BlockSpec, assemble, build_layouts, doc_in_stream
from nlp_pipe.data.masking import MaskingCollator
from nlp_pipe.data.token_stream import TokenEncoder, sentence_starts, word_start_flags, word_starts
from nlp_pipe.text.corpus import Counts, ReadOptions
from nlp_pipe.text.segmenter import SegmenterSpec


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt"))


def _spec(tokenizer, task="sop", eval_docs=2, pair_sets=1, max_seq_len=32, userdict=()) -> pretraining.BuildSpec:
    return pretraining.BuildSpec(BlockSpec(max_seq_len, task, 0, tokenizer.cls_token_id, tokenizer.sep_token_id), "auto",
                                 ReadOptions(), SegmenterSpec(userdict=userdict), eval_docs=eval_docs, pair_sets=pair_sets)


def test_sentences_split_on_chinese_end_punctuation_and_keep_closing_quotes():
    text = "今天天气很好。你去吗？“走吧！”他说，我们出发了"
    starts = sentence_starts(text)
    assert [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])] == ["今天天气很好。", "你去吗？", "“走吧！”", "他说，我们出发了"]
    assert sentence_starts("没有句号的一段话") == [0]


def test_word_starts_whether_the_words_cover_the_text_or_not():
    words = ["我", "爱", "北京", "。", "天安门"]
    assert word_starts("我爱北京。天安门", words).tolist() == [0, 1, 2, 4, 5]
    assert word_starts("我 爱北京。 天安门", words).tolist() == [0, 2, 3, 5, 7]  # a segment artifact drops the spaces
    assert word_starts("我 爱北京。 天安门", np.array([1, 1, 2, 1, 3])).tolist() == [0, 2, 3, 5, 7]  # read as lengths
    assert word_starts("我爱北京。x天安门", ["我", "爱", "南京", "天安门"]).tolist() == [0, 1, 6]  # not found: skipped


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
    first = news[0]  # one sentence a line: the lines joined, each line a sentence
    assert [first.text[s:].split("\n")[0] for s in first.sentences] == first.text.split("\n")
    lines = list(docs_mod.file_documents(one_per_line, ReadOptions(), "auto", Counts()))
    assert [(d.text, d.sentences) for d in lines] == [("第一篇。有两句！", None), ("第二篇只有一句。", None)]


def test_the_detected_layout_is_said_with_its_reason(tmp_path, caplog):
    """A file with >= 5% blank lines was read as blank-line documents without a word (pairs then cross what the
    user meant as documents): a notice in the manifest names why and the option that reads it the other way."""
    counts = Counts()
    list(docs_mod.file_documents(FIXTURES / "news.txt", ReadOptions(), "auto", counts))
    (notice,) = counts.notices
    assert "news.txt: read as documents separated by blank lines (" in notice and "--layout line" in notice
    one_per_line = tmp_path / "docs.txt"
    one_per_line.write_text("第一篇。\n第二篇。\n", encoding="utf-8")
    with caplog.at_level("INFO", logger=docs_mod.__name__):
        list(docs_mod.file_documents(one_per_line, ReadOptions(), "auto", counts))
    assert "docs.txt: read as one document a line (0 of its first 2 rows follow a blank line, under 5%); --layout blank" in caplog.text
    assert len(counts.notices) == 1


def test_word_labels_mark_jieba_word_starts_over_characters(tokenizer):
    text = "北京大学hello世界"
    encoded = TokenEncoder(tokenizer).encode(text)
    flags = word_start_flags(encoded.chars, word_starts(text, ["北京大学", "hello", "世界"]), len(text))
    tokens = tokenizer.convert_ids_to_tokens(encoded.ids.tolist())
    starts = [t for t, f in zip(tokens, flags) if f]
    assert tokens[:4] == ["北", "京", "大", "学"] and flags[:4].tolist() == [True, False, False, False]
    assert starts[0] == "北" and starts[-1] == "世" and not flags[-1]
    assert len(starts) == 3  # every word piece of "hello" belongs to its one jieba word


MIXED = ("北京大学的Hello World，ｆｕｌｌ　ｗｉｄｔｈ！数字12.5%和café、naïve über；emoji😀与罕见字𠀀、"
         "tab\there\u3000全角空格 [MASK] 和 [UNK] 还有\u200b零宽，混合abc中文def123。\n换行 后 继续")


def test_per_character_encoding_equals_plain_encoding(tokenizer):
    """The ideograph shortcut gives exactly the ids and offsets of plain encoding (sabotaged: a wrong ideograph
    table and a missing run both fail here)."""
    encoder = TokenEncoder(tokenizer)
    assert encoder.per_character
    for text in (MIXED, MIXED * 3, "纯中文没有别的", "only latin text here", " ", "。"):
        fast, plain = encoder._fast(text), encoder._plain(text)
        assert fast.ids.tolist() == plain.ids.tolist() and fast.chars.tolist() == plain.chars.tolist(), text


def test_line_by_line_encoding_equals_plain_encoding_with_added_words():
    """A vocabulary grown with words (expand) rules out the ideograph shortcut; its runs are then encoded a line
    at a time in one encode_batch, with exactly the ids and offsets of plain encoding (sabotaged: line starts
    not added to the offsets fails here)."""
    grown = BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt"))
    grown.add_tokens(["北京大学", "人工智能"])
    encoder = TokenEncoder(grown)
    assert not encoder.per_character and encoder.by_line
    for text in ("\n".join([MIXED, "北京大学和人工智能", "", "人工\n智能北京大学"]), "\n", "北京大学", MIXED * 2):
        lines, plain = encoder._lines(text), encoder._plain(text)
        assert lines.ids.tolist() == plain.ids.tolist() and lines.chars.tolist() == plain.chars.tolist(), text
    assert encoder.encode("北京大学\n人工智能").ids.tolist() == grown("北京大学\n人工智能", add_special_tokens=False)["input_ids"]
    assert encoder.by_line  # the check on the first text agreed
    # expand's tokenizers split CJK characters off before BERT's pre-tokenizer: lines still never share a piece
    from tokenizers import Regex, pre_tokenizers

    from nlp_pipe.expansion.tokenizer_growth import CJK_PATTERN

    backend = grown.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CJK_PATTERN), "isolated"), backend.pre_tokenizer])
    expanded = TokenEncoder(backend)
    assert not expanded.per_character and expanded.by_line
    text = "\n".join([MIXED, "北京大学和人工智能", "", "人工\n智能北京大学"])
    lines, plain = expanded._lines(text), expanded._plain(text)
    assert lines.ids.tolist() == plain.ids.tolist() and lines.chars.tolist() == plain.chars.tolist()


def _stream_docs(n_docs: int, rng: np.random.Generator) -> tuple[np.ndarray, list, set[int]]:
    """A token stream whose ids say where they come from: doc d, position p -> 10000 + 1000 d + p; its
    documents; the ids that end a sentence."""
    ids, docs, ends = [], [], set()
    for d in range(n_docs):
        start, sentences, pos = len(ids), [], 0
        for _ in range(rng.integers(1, 9)):
            n = int(rng.integers(3, 12))
            sentences.append(len(ids))
            ids += range(10000 + 1000 * d + pos, 10000 + 1000 * d + pos + n)
            pos += n
            ends.add(ids[-1])
        docs.append(doc_in_stream(start, len(ids), np.asarray(sentences), 29))
    return np.asarray(ids), docs, ends


@pytest.mark.parametrize("task", ["sop", "nsp", "none"])
def test_blocks_are_full_and_pairs_follow_their_task(task):
    stream, docs, sentence_ends = _stream_docs(200, np.random.default_rng(0))
    flags = np.arange(len(stream)) % 2 == 0
    spec = BlockSpec(max_seq_len=32, sentence_task=task, seed=1, cls_id=2, sep_id=3)
    layouts = build_layouts(docs, spec, 1)
    ranges = np.asarray(layouts.ranges).reshape(-1, 2)
    blocks = [assemble(ranges[a:b], n, stream, flags, spec) for a, b, n in zip(layouts.offsets, layouts.offsets[1:], layouts.a_counts)]
    out = {"input_ids": [b[0].tolist() for b in blocks], "token_type_ids": [b[1].tolist() for b in blocks],
           "word_labels": [b[2].tolist() for b in blocks], "sentence_label": layouts.labels}
    lengths = [len(x) for x in out["input_ids"]]
    assert all(n == 32 for n in lengths[:-1]), "only the last block of a run may be short"
    labels = Counter(out["sentence_label"])
    if task != "nsp":  # every token in exactly one block (NSP negatives borrow text from other documents)
        real = [t for row in out["input_ids"] for t in row if t >= 10000]
        assert sorted(real) == stream.tolist()
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


def _ids(blocks) -> list[list[int]]:
    return [row["input_ids"].tolist() for row in blocks]


def test_padding_below_two_percent_through_the_dataset_build(tmp_path, tokenizer):
    spec = _spec(tokenizer)
    corpus = [FIXTURES / "news.txt", FIXTURES / "reviews.tsv"]  # long documents and short reviews
    key = pretraining.cache_key("news+reviews", tokenizer, spec)
    killed = tmp_path / "cache" / f".{key}.tmp-4242"  # what a SIGKILLed build leaves
    killed.mkdir(parents=True)
    (killed / "tokens.bin").write_bytes(b"half")
    built = pretraining.build(corpus, "news+reviews", tokenizer, spec, tmp_path / "cache", num_proc=1)
    assert not killed.exists() and [p.name for p in (tmp_path / "cache").iterdir()] == [built.cache_dir.name == key and key]
    stats = built.stats["train"]
    assert stats["padding_fraction"] < 0.02 and stats["blocks"] > 100
    assert 0 < stats["pair_blocks"] < stats["blocks"]  # long documents give pairs, reviews packed MLM-only blocks
    assert built.stats["documents"] == 9 + 160 and built.stats["eval_documents"] == 2
    again = pretraining.build(corpus, "news+reviews", tokenizer, spec, tmp_path / "cache", num_proc=1)
    assert again.reused and _ids(again.train) == _ids(built.train)
    three = pretraining.build(corpus, "news+reviews", tokenizer, replace(spec, pair_sets=3), tmp_path / "cache", num_proc=1)
    n = stats["blocks"]
    assert not three.reused and three.stats["train"]["blocks"] == pytest.approx(3 * n, abs=6)
    assert _ids(three.train[:n]) == _ids(built.train)  # the first set is the single-set build
    assert _ids(three.train[n:2 * n]) != _ids(built.train)  # the others split and cut elsewhere
    assert len(three.eval) == len(built.eval)  # evaluation keeps one fixed set
    lengths = np.concatenate([n for n, _ in built.train.lengths_and_labels(size=7)])  # in chunks of 7 blocks
    assert lengths.tolist() == [len(row["input_ids"]) for row in built.train]
    row = built.train[0]
    assert len(row["input_ids"]) == len(row["token_type_ids"]) == len(row["word_labels"]) == 32


def _long_corpus(path: Path, docs: int, seed: int = 0) -> Path:
    """`docs` documents a line, sentences of the fixtures' reviews shuffled together."""
    rng = np.random.default_rng(seed)
    pool = [line.split("\t", 1)[-1] for line in (FIXTURES / "reviews.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    path.write_text("".join("".join(rng.choice(pool, size=int(rng.integers(1, 8)))) + "\n" for _ in range(docs)),
                    encoding="utf-8")
    return path


def test_blocks_are_the_same_whatever_the_worker_count(tmp_path, tokenizer, monkeypatch):
    corpus = [_long_corpus(tmp_path / "docs.txt", 2300)]
    spec = _spec(tokenizer, "nsp", eval_docs=20, pair_sets=2)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    built = {n: pretraining.build(corpus, "docs", tokenizer, spec, tmp_path / f"cache{n}", num_proc=n) for n in (1, 2, 3)}
    assert "TOKENIZERS_PARALLELISM" not in os.environ  # the workers' setting does not outlive the build
    assert len(built[1].train) > 1000 and built[1].stats["train"]["negative_pairs"] > 100  # pairs, negatives among them
    for n in (2, 3):  # 3 runs of documents over 1, 2 and 3 workers
        for name in sorted(os.listdir(built[1].cache_dir)):
            if name != pretraining.STATS:  # it records when it was built
                assert (built[n].cache_dir / name).read_bytes() == (built[1].cache_dir / name).read_bytes(), name


def test_the_cache_is_compact(tmp_path, tokenizer):
    """The default sop task with 4 pair sets: at most twice the raw text on disk (8.6x with one row per block)."""
    corpus = [_long_corpus(tmp_path / "docs.txt", 1500)]
    built = pretraining.build(corpus, "docs", tokenizer, _spec(tokenizer, pair_sets=4, max_seq_len=128), tmp_path / "c", 1)
    on_disk = sum(f.stat().st_size for f in built.cache_dir.iterdir())
    assert len(built.train) > 200 and on_disk <= 2 * corpus[0].stat().st_size, on_disk / corpus[0].stat().st_size
    assert np.fromfile(built.cache_dir / "tokens.bin", dtype=np.uint16).size == built.stats["tokens"]


def test_raw_text_is_cut_with_the_user_dictionary(tmp_path, tokenizer):
    """Whole-word masking over raw text uses the user dictionary it is given (an expand artifact's new words)."""
    corpus = tmp_path / "docs.txt"
    corpus.write_text("我们喜欢自然语言处理模型。\n" * 10, encoding="utf-8")
    word = "自然语言处理模型"

    def labels(userdict) -> list[int]:
        built = pretraining.build([corpus], "docs", tokenizer, _spec(tokenizer, "none", 0, userdict=userdict),
                                  tmp_path / "cache", 1)
        row = built.train[0]
        tokens = tokenizer.convert_ids_to_tokens(row["input_ids"].tolist())
        at = next(i for i in range(len(tokens)) if tokens[i:i + len(word)] == list(word))
        return row["word_labels"][at:at + len(word)].tolist()

    assert labels(((word, None),)) == [WORD_START] + [WORD_INSIDE] * (len(word) - 1)
    assert labels(()) != [WORD_START] + [WORD_INSIDE] * (len(word) - 1)


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


def test_a_second_builder_of_a_key_waits_for_the_first_and_uses_its_build(tmp_path, tokenizer):
    spec, corpus = _spec(tokenizer), [FIXTURES / "news.txt"]
    folder = tmp_path / "cache" / pretraining.cache_key("news", tokenizer, spec)
    results = []
    with artifacts.locked(folder, wait=True):  # the first builder at work
        waiter = threading.Thread(target=lambda: results.append(pretraining.build(corpus, "news", tokenizer, spec,
                                                                                  tmp_path / "cache", 1)))
        waiter.start()
        waiter.join(1.5)
        assert waiter.is_alive() and not results  # waiting, not failing, not building beside it
    waiter.join(60)
    assert results and results[0].cache_dir == folder and len(results[0].train) > 0


def test_segment_artifact_documents_keep_the_artifacts_words(seg_reviews):
    """Read batch by batch from the Arrow files (no memory map): each row's words as lengths where they cover the text."""
    import datasets

    rows = datasets.load_from_disk(str(seg_reviews / "dataset"))
    counts = Counts()
    docs = list(docs_mod.artifact_documents(seg_reviews, counts))
    assert len(docs) == counts.rows_out == len(rows) == 160
    for doc, row in zip(docs, rows):
        assert doc.text == row["text"] and isinstance(doc.words, np.ndarray)
        expected, pos = [], 0
        for word in row["words"]:
            pos = row["text"].index(word, pos)
            expected.append(pos)
            pos += len(word)
        assert word_starts(doc.text, doc.words).tolist() == expected
