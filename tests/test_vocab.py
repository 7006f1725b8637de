"""Stage `vocab`: word and BERT vocabularies, their files, and tokenizers that load from them."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from transformers import AutoTokenizer

from conftest import build, fixture_lines, lines
from nlp_pipe import runner
from nlp_pipe.core import config as configs
from nlp_pipe.core.errors import UserError
from nlp_pipe.expansion.tokenizer_growth import pre_tokenize
from nlp_pipe.stages import vocab as vocab_stage

POS, NEG = fixture_lines("pos.txt"), fixture_lines("neg.txt")


def corpus_counts(seg) -> Counter:
    return Counter(w for line in lines(seg / "corpus.txt") for w in line.split())


def vocab_files(out):
    tokens = lines(out / "vocab.txt")
    freq = [line.split("\t") for line in lines(out / "vocab.freq.tsv")]
    w2i = json.loads((out / "w2i.json").read_text(encoding="utf-8"))
    userdict = [line.split(" ") for line in lines(out / "jieba_userdict.txt")]
    return tokens, freq, w2i, userdict


@pytest.fixture(scope="module")
def word_vocab(seg_reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "word"
    manifest = build("vocab", out, {"corpus": [seg_reviews]}, min_freq=2)
    return out, manifest


def test_word_vocab_files_agree(word_vocab, seg_reviews):
    out, manifest = word_vocab
    counts = corpus_counts(seg_reviews)
    tokens, freq, w2i, userdict = vocab_files(out)
    assert tokens[:2] == ["[PAD]", "[UNK]"]  # specials first
    assert len(set(tokens)) == len(tokens) == manifest["metrics"]["size"]
    words = tokens[2:]
    assert set(words) == {w for w, n in counts.items() if n >= 2}  # exactly the words seen twice or more
    assert words == sorted(words, key=lambda w: (-counts[w], w))  # most frequent first
    assert [t for t, _ in freq] == tokens and all(int(n) == counts[t] for t, n in freq)
    assert w2i == {t: i for i, t in enumerate(tokens)}  # index = line number
    assert [w for w, _ in userdict] == [w for w in words if len(w) > 1]  # jieba user dict: multi-char words only
    assert all(int(n) == counts[w] for w, n in userdict)
    covered = sum(counts[w] for w in words) / sum(counts.values())
    assert manifest["metrics"]["coverage"] == round(covered, 4)
    assert manifest["metrics"]["corpus_tokens"] == sum(counts.values())


def test_min_freq_one_keeps_every_word(seg_reviews, tmp_path):
    build("vocab", tmp_path / "v", {"corpus": [seg_reviews]}, min_freq=1)
    assert set(lines(tmp_path / "v" / "vocab.txt")[2:]) == set(corpus_counts(seg_reviews))


def test_max_size_keeps_the_most_frequent(word_vocab, seg_reviews, tmp_path):
    full = lines(word_vocab[0] / "vocab.txt")
    manifest = build("vocab", tmp_path / "v", {"corpus": [seg_reviews]}, min_freq=2, max_size=40)
    assert lines(tmp_path / "v" / "vocab.txt") == full[:40] and manifest["metrics"]["size"] == 40
    with pytest.raises(UserError, match="max_size = 2 leaves no room beside 2 special tokens"):
        runner.plan("vocab", {"max_size": 2}, {"corpus": [seg_reviews]}, tmp_path / "x")


def test_custom_specials_and_forced_words(seg_reviews, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\ufeff喵窝智投 7\n房间\n[UNK]\n\n蓝鲸听书\n", encoding="utf-8")
    build("vocab", tmp_path / "v", {"corpus": [seg_reviews], "words": [words]}, min_freq=3,
          specials="<pad>,<unk>,[UNK]")
    tokens, freq, _, userdict = vocab_files(tmp_path / "v")
    assert tokens[:3] == ["<pad>", "<unk>", "[UNK]"]
    assert tokens[-2:] == ["喵窝智投", "蓝鲸听书"]  # forced words after the counted ones, whatever their count
    assert tokens.count("房间") == 1 and tokens.count("[UNK]") == 1
    assert ["喵窝智投", "7"] in userdict and dict(freq)["喵窝智投"] == "7"
    gbk = tmp_path / "gbk_words.txt"  # a GBK word list reads as a GBK corpus does (it was refused as "must be UTF-8")
    gbk.write_bytes("喵窝智投 7\n蓝鲸听书\n".encode("gbk"))
    build("vocab", tmp_path / "g", {"corpus": [seg_reviews], "words": [gbk]}, min_freq=3)
    assert vocab_files(tmp_path / "g")[0][-2:] == ["喵窝智投", "蓝鲸听书"]


def test_literal_special_token_in_the_corpus_is_not_duplicated(tmp_path):
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "corpus.txt").write_text("[PAD] 很 好\n[PAD] [MASK] 很 差\n[UNK] 好\n", encoding="utf-8")
    for kind in ("word", "bert"):
        out = tmp_path / kind
        out.mkdir()
        cfg = configs.build(vocab_stage.Config, {"kind": kind, "min_freq": 1}, "test")
        result = vocab_stage.run(cfg, {"corpus": [seg], "phrases": [], "words": []}, out)
        tokens = lines(out / "vocab.txt")
        assert len(tokens) == len(set(tokens)) and tokens.count("[PAD]") == 1 and tokens.index("[PAD]") == 0
        assert result.metrics["specials_seen_in_corpus"] == (["[PAD]", "[UNK]"] if kind == "word" else ["[MASK]", "[PAD]", "[UNK]"])


@pytest.fixture(scope="module")
def bert_vocab(seg_reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "bert"
    manifest = build("vocab", out, {"corpus": [seg_reviews]}, kind="bert", min_freq=1)
    return out, manifest


def test_bert_vocab_loads_with_auto_tokenizer(bert_vocab):
    out, manifest = bert_vocab
    tokens = lines(out / "vocab.txt")
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == len(tokens) == manifest["metrics"]["size"]
    assert tokenizer.convert_tokens_to_ids(tokens) == list(range(len(tokens)))
    assert "AutoTokenizer loads" in manifest["metrics"]["tokenizer_check"]
    hanzi = {ch for t in POS + NEG for ch in t if "\u4e00" <= ch <= "\u9fff"}
    assert hanzi <= set(tokens)  # every character of the corpus (min_freq 1)
    for text in POS + NEG:
        pieces = tokenizer.tokenize(text)
        assert "[UNK]" not in pieces, (text, pieces)
    ids = tokenizer("房间干净整洁")["input_ids"]
    assert ids[0] == tokens.index("[CLS]") and ids[-1] == tokens.index("[SEP]") and len(ids) == 8
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "房间干净整洁"


def test_bert_vocab_latin_after_hanzi_is_not_unknown(bert_vocab):
    """'连上WiFi' is one jieba word; BERT sees 连 上 wifi, so 'w' must exist as a word start."""
    tokenizer = AutoTokenizer.from_pretrained(str(bert_vocab[0]))
    text = next(t for t in POS if "WiFi" in t)
    assert tokenizer.tokenize(text)[-6:] == ["上", "w", "##i", "##f", "##i", "。"]
    assert tokenizer.tokenize("多收了100元") == ["多", "收", "了", "1", "##0", "##0", "元"]


def test_wordpiece_vocab_trains_and_loads(seg_reviews, tmp_path):
    out = tmp_path / "wp"
    manifest = build("vocab", out, {"corpus": [seg_reviews]}, kind="bert", wordpiece=True, wordpiece_size=1000, min_freq=1)
    tokens = lines(out / "vocab.txt")
    assert len(tokens) == len(set(tokens)) == manifest["metrics"]["size"] and len(tokens) <= 1000
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "wifi" in tokens and "##0" in tokens  # merges learned beside the alphabet (hanzi stay single)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == len(tokens)
    assert tokenizer.tokenize("连上WiFi，多收了100元") == ["连", "上", "wifi", "，", "多", "收", "了", "100", "元"]
    for text in POS[:20] + NEG[:20]:
        assert "[UNK]" not in tokenizer.tokenize(text)  # hanzi are kept (limit_alphabet raised)
    with pytest.raises(UserError, match="wordpiece applies to kind=bert only"):
        runner.plan("vocab", {"wordpiece": True}, {"corpus": [seg_reviews]}, tmp_path / "x")


def test_vocab_from_several_corpora_and_a_phrases_artifact(seg_reviews, seg_news, tmp_path):
    phrases = tmp_path / "phrases"
    build("phrases", phrases, {"corpus": seg_reviews}, min_count=2, scoring="npmi", threshold=0.5)
    found = [line.split(" ")[0] for line in lines(phrases / "jieba_userdict.txt")]
    assert found
    out = tmp_path / "v"
    build("vocab", out, {"corpus": [seg_reviews, seg_news], "phrases": [phrases]}, min_freq=3)
    tokens = lines(out / "vocab.txt")
    counts = corpus_counts(seg_reviews) + corpus_counts(seg_news)
    assert {w for w, n in counts.items() if n >= 3} <= set(tokens)
    assert set(found) <= set(tokens) and len(tokens) == len(set(tokens))


def test_bert_character_pieces_are_what_the_saved_tokenizer_sees(bert_vocab):
    """The vocabulary's pieces come from the BertTokenizer's own normalizer and pre-tokenizer: an invisible
    format character (zero-width space) is dropped as the tokenizer drops it, accents go under lowercase."""
    tokenizer = AutoTokenizer.from_pretrained(str(bert_vocab[0]))  # lowercase (the vocab stage's default)
    words = Counter({"卡拉OK": 3, "Café": 2, "连\u200b上WiFi": 1, "你好，世界": 4})
    seen: Counter = Counter()
    for word, n in words.items():
        for piece in pre_tokenize(tokenizer, word):
            seen[piece[0]] += n
            for ch in piece[1:]:
                seen["##" + ch] += n
    assert vocab_stage._char_counts(words, True) == seen
    assert seen["##\u200b"] == 0 and seen["##e"] == 2 and seen["o"] == 3  # dropped; café -> cafe; 卡拉OK -> 卡 拉 ok
