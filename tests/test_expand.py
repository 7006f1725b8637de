"""Stage `expand`: new words are real single tokens; old ids, old rows and every other weight stay put.

Checkpoints are tiny random BERTs (hidden 32, 2 layers) on the full 21,128-token Chinese BERT
vocabulary (tests/fixtures/bert_zh/vocab.txt), saved with tokenizer.json (BertForMaskedLM) or as a
classic directory with only vocab.txt (BertForPreTraining).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertTokenizer,
)

from conftest import FIXTURES, build, lines, run_cli
from nlp_pipe.core.errors import UserError
from nlp_pipe.expansion.embedding_growth import grow, initial_rows, load_model
from nlp_pipe.expansion.tokenizer_growth import WordPlanner, load_tokenizer
from nlp_pipe.text.segmenter import Segmenter, SegmenterSpec
from nlp_pipe.text.userdict import read_userdict

VOCAB = FIXTURES / "bert_zh" / "vocab.txt"
WORDS = ["机器学习", "机器", "学习", "深度学习", "学习机", "性价比", "T恤", "covid", "pm2.5"]
# none of these contains a new word (as raw text, or `covid` after lower-casing)
PLAIN = ["今天天气很好，我们去公园散步。", "机场离市区很远，学生在学校里读书。", "The quick brown fox jumps over the lazy dog.",
         "价格¥5999，性能不错！iPhone 12 Pro 和 MacBook。", "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３", "café naïve Über coffee cocoa",
         "😀表情符号，《红楼梦》第1回", "深度睡眠对身体好", "PM 2.5 pm25 co vid", "电脑机箱、耳机和T 恤衫", "\t空白  字符\u3000测试 "]


def _tiny(cls):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = cls(config)
    with torch.no_grad():  # a trained-looking bias, so that bias rows are really checked
        model.cls.predictions.bias.normal_()
    return model


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "mlm"
    _tiny(BertForMaskedLM).save_pretrained(out)
    BertTokenizer(vocab=str(VOCAB)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def nsp_dir(tmp_path_factory):
    """A classic checkpoint: weights, config.json and vocab.txt only."""
    out = tmp_path_factory.mktemp("ckpt") / "nsp"
    _tiny(BertForPreTraining).save_pretrained(out)
    (out / "vocab.txt").write_bytes(VOCAB.read_bytes())
    return out


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("".join(f"{w} {i + 3}\n" for i, w in enumerate(WORDS)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def expanded(tmp_path_factory, mlm_dir, words_file):
    out = tmp_path_factory.mktemp("out") / "expanded"
    manifest = build("expand", out, {"checkpoint": mlm_dir, "words": [words_file]})
    return out, manifest


def vocab_lines(path):
    """One token a line; not str.splitlines(), which also breaks at the vocab's U+2028 token (id 343)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_new_words_are_single_tokens_in_running_text(expanded, mlm_dir):
    out, manifest = expanded
    tok = AutoTokenizer.from_pretrained(out)
    vocab = tok.get_vocab()
    assert manifest["metrics"]["new_words"] == len(WORDS) and len(tok) == 21128 + len(WORDS)
    assert [vocab[w] for w in ["机器学习", "性价比", "t恤", "covid", "pm2.5"]] == [21128, 21133, 21134, 21135, 21136]
    assert tok.tokenize("这家店的性价比很高，T恤也不错") == ["这", "家", "店", "的", "性价比", "很", "高", "，", "t恤", "也", "不", "错"]
    assert tok.tokenize("今年covid，还有COVID19") == ["今", "年", "covid", "，", "还", "有", "covid", "##19"]
    assert tok.tokenize("pm2.5超标") == ["pm2.5", "超", "标"]
    assert tok.tokenize("PM2.5") == tok.tokenize("Pm2.5") == ["pm2.5"]  # matched in the lower-cased text, as all else
    text = "用性价比高的学习机做机器学习"
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == ids_of(tok, text)  # token strings are real vocab entries
    assert tok.decode(ids_of(tok, "性价比T恤")) == "性价比 t恤"
    for cls in (BertTokenizer, AutoTokenizer):  # the explicit class loads the same tokenizer
        assert ids_of(cls.from_pretrained(out), text) == ids_of(tok, text)


def test_longest_match_wins_for_overlapping_new_words(expanded):
    tok = AutoTokenizer.from_pretrained(expanded[0])
    v = tok.get_vocab()
    assert ids_of(tok, "机器学习") == [v["机器学习"]]  # not 机器 + 学习: the prefix loses
    assert ids_of(tok, "机器人") == [v["机器"], v["人"]]
    assert ids_of(tok, "深度学习") == [v["深度学习"]]  # the suffix 学习 loses
    assert ids_of(tok, "学习机器学习") == [v["学习机"], v["器"], v["学习"]]  # crossing overlaps: leftmost first
    assert ids_of(tok, "我爱机器学习和深度学习") == [v["我"], v["爱"], v["机器学习"], v["和"], v["深度学习"]]


def test_text_without_new_words_tokenises_as_before(expanded, mlm_dir):
    old = AutoTokenizer.from_pretrained(mlm_dir)
    new = AutoTokenizer.from_pretrained(expanded[0])
    for text in PLAIN:
        assert ids_of(new, text) == ids_of(old, text), text
        assert new(text, "第二句")["input_ids"] == old(text, "第二句")["input_ids"]
    assert {t: i for t, i in new.get_vocab().items() if i < 21128} == old.get_vocab()


def test_vocab_txt_lists_new_words_after_old_tokens(expanded, mlm_dir):
    out, _ = expanded
    vocab = vocab_lines(out / "vocab.txt")
    old = AutoTokenizer.from_pretrained(mlm_dir)  # saved without vocab.txt: its table is the reference
    assert vocab[:21128] == old.convert_ids_to_tokens(list(range(21128)))
    assert vocab[21128:] == ["机器学习", "机器", "学习", "深度学习", "学习机", "性价比", "t恤", "covid", "pm2.5"]
    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert {t["content"] for t in added if not t["special"]} == {w.lower() for w in WORDS} - {"covid"}  # covid: a WordPiece entry
    assert all(t["normalized"] for t in added if not t["special"])
    tsv = lines(out / "words.tsv")
    assert tsv[0].split("\t")[:4] == ["word", "token", "id", "count"] and tsv[1].split("\t")[:4] == ["机器学习", "机器学习", "21128", "3"]


def test_old_rows_identical_shapes_match_and_decoder_tied(expanded, mlm_dir):
    out, manifest = expanded
    size = len(AutoTokenizer.from_pretrained(out))
    old = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    new = AutoModelForMaskedLM.from_pretrained(out)
    emb, dec = new.bert.embeddings, new.cls.predictions
    assert emb.word_embeddings.weight.shape == (size, 32) == dec.decoder.weight.shape
    assert dec.decoder.bias.shape == (size,) == dec.bias.shape and new.config.vocab_size == size
    assert dec.decoder.weight.data_ptr() == emb.word_embeddings.weight.data_ptr()  # still tied
    assert torch.equal(emb.word_embeddings.weight[:21128], old.bert.embeddings.word_embeddings.weight)
    assert torch.equal(dec.bias[:21128], old.cls.predictions.bias)
    assert torch.equal(emb.position_embeddings.weight, old.bert.embeddings.position_embeddings.weight)
    assert torch.equal(emb.token_type_embeddings.weight, old.bert.embeddings.token_type_embeddings.weight)
    assert "bit-identical" in manifest["metrics"]["reload_check"]


def test_mean_chars_rows_are_the_mean_of_the_character_rows(expanded, mlm_dir):
    old = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    new = AutoModelForMaskedLM.from_pretrained(expanded[0])
    tok = AutoTokenizer.from_pretrained(mlm_dir)
    for i, word in enumerate(WORDS):
        pieces = ids_of(tok, word)
        assert len(pieces) > 1
        assert torch.allclose(new.bert.embeddings.word_embeddings.weight[21128 + i],
                              old.bert.embeddings.word_embeddings.weight[pieces].mean(0), rtol=0, atol=1e-7)
        shifted = old.cls.predictions.bias[pieces].mean() - 1.0 * (len(pieces) - 1)  # bias_shift: 1 nat per extra piece
        assert torch.allclose(new.cls.predictions.bias[21128 + i], shifted, rtol=0, atol=1e-6)


def test_round_trip_gives_identical_logits_and_old_logits_unchanged(tmp_path, mlm_dir):
    tok = load_tokenizer(mlm_dir)
    planner = WordPlanner(tok)
    for word in WORDS:
        planner.consider(word)
    model = load_model(mlm_dir)
    original = AutoModelForMaskedLM.from_pretrained(mlm_dir).eval()
    rows, biases, _ = initial_rows(model, [w.pieces for w in planner.new], "mean-chars")
    grow(model, len(tok), rows, biases)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    with_new = torch.tensor([[101, 21128, 2110, 21133, 21136, 102]])
    old_only = torch.tensor([[101, 2769, 4263, 3322, 1690, 102]])
    with torch.no_grad():
        assert torch.equal(model(with_new).logits, reloaded(with_new).logits)
        grown, before = reloaded(old_only).logits, original(old_only).logits
    assert grown.shape[-1] == 21128 + len(WORDS)
    assert torch.allclose(grown[..., :21128], before, atol=1e-5)  # the old vocabulary scores as before


def test_existing_words_are_a_reported_no_op(tmp_path, mlm_dir):
    words = tmp_path / "words.txt"
    words.write_text("的\niPhone\n[CLS]\n性价比\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "words": [words]})
    assert manifest["metrics"]["skipped_existing"] == 3 and manifest["metrics"]["new_words"] == 1
    assert manifest["skipped_existing"] == [{"word": "的", "id": 4638}, {"word": "iPhone", "id": 8210}, {"word": "[CLS]", "id": 101}]
    only_existing = tmp_path / "existing.txt"
    only_existing.write_text("的\n好\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "noop", {"checkpoint": mlm_dir, "words": [only_existing]})
    assert manifest["metrics"]["vocab_size_after"] == 21128 and manifest["metrics"]["new_words"] == 0
    empty = tmp_path / "empty.txt"  # a word list with no words is "no words to add", as no list is (it published a copy)
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no words to add"):
        build("expand", tmp_path / "none", {"checkpoint": mlm_dir, "words": [empty]})
    new = AutoModelForMaskedLM.from_pretrained(tmp_path / "noop")
    old = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))


def test_words_appended_to_vocab_txt_by_hand_are_activated(tmp_path, mlm_dir):
    """The trap (docs/library-notes.md): a word in vocab.txt that the tokenizer never emits gets emitted, with its old row."""
    ckpt = tmp_path / "naive"
    model = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    model.resize_token_embeddings(21129, mean_resizing=False)
    model.save_pretrained(ckpt)
    (ckpt / "vocab.txt").write_text(VOCAB.read_text(encoding="utf-8") + "性价比\n", encoding="utf-8")
    words = tmp_path / "words.txt"
    words.write_text("性价比\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "out", {"checkpoint": ckpt, "words": [words]})
    assert manifest["metrics"]["activated"] == 1 and manifest["metrics"]["vocab_size_after"] == 21129
    assert AutoTokenizer.from_pretrained(tmp_path / "out").tokenize("性价比高") == ["性价比", "高"]


def test_bert_for_pretraining_keeps_its_nsp_head(tmp_path, nsp_dir, words_file):
    manifest = build("expand", tmp_path / "out", {"checkpoint": nsp_dir, "words": [words_file]}, init="random", seed=3)
    assert manifest["architecture"] == "BertForPreTraining"
    old = BertForPreTraining.from_pretrained(nsp_dir)
    new = AutoModelForPreTraining.from_pretrained(tmp_path / "out")
    assert type(new).__name__ == "BertForPreTraining"
    assert torch.equal(new.cls.seq_relationship.weight, old.cls.seq_relationship.weight)
    assert torch.equal(new.bert.pooler.dense.weight, old.bert.pooler.dense.weight)
    rows = new.bert.embeddings.word_embeddings.weight[21128:]
    assert rows.shape == (len(WORDS), 32) and 0.01 < rows.std().item() < 0.03  # N(0, initializer_range 0.02)
    assert torch.equal(new.cls.predictions.bias[21128:], torch.zeros(len(WORDS)))
    assert AutoTokenizer.from_pretrained(tmp_path / "out").tokenize("机器学习") == ["机器学习"]
    assert (tmp_path / "out" / "vocab.txt").read_bytes().startswith(VOCAB.read_bytes())  # the old file, byte for byte


def test_vectors_init_applies_the_fitted_linear_map(tmp_path, mlm_dir):
    """word2vec vectors that are an invertible linear image of the embeddings map back exactly."""
    old = AutoModelForMaskedLM.from_pretrained(mlm_dir).bert.embeddings.word_embeddings.weight.detach().double().numpy()
    vocab = vocab_lines(VOCAB)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(32, 32))
    target = rng.normal(size=32) * 0.02
    anchors = list(range(2000, 2300))  # characters
    rows = [(vocab[i], old[i] @ mix) for i in anchors] + [("性价比", target @ mix)]
    path = tmp_path / "vectors.txt"
    path.write_text(f"{len(rows)} 32\n" + "".join(f"{w} {' '.join(f'{x:.10f}' for x in v)}\n" for w, v in rows), encoding="utf-8")
    words = tmp_path / "words.txt"
    words.write_text("性价比\n深度学习\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "words": [words], "vectors": path}, init="vectors")
    new = AutoModelForMaskedLM.from_pretrained(tmp_path / "out").bert.embeddings.word_embeddings.weight.detach()
    assert np.allclose(new[21128].double().numpy(), target, atol=1e-5)
    pieces = ids_of(AutoTokenizer.from_pretrained(mlm_dir), "深度学习")  # no vector: mean of its characters
    assert torch.allclose(new[21129], torch.from_numpy(old[pieces].mean(0)).float(), atol=1e-6)
    m = manifest["metrics"]
    assert m["words_with_vectors"] == 1 and m["words_without_vectors_mean_chars"] == 1 and m["vector_fit_r2"] > 0.999


def test_corpus_discovery_picks_frequent_missing_words(tmp_path, mlm_dir, seg_reviews):
    phrases = tmp_path / "phrases"
    build("phrases", phrases, {"corpus": seg_reviews}, min_count=2, scoring="npmi", threshold=0.3)
    stop = tmp_path / "stop.txt"
    stop.write_text("房间\n", encoding="utf-8")
    out = tmp_path / "out"
    manifest = build("expand", out, {"checkpoint": mlm_dir, "corpus": [seg_reviews], "phrases": [phrases],
                                     "stoplist": [stop]}, min_freq=3, max_words=15)
    rows = [line.split("\t") for line in lines(out / "words.tsv")[1:]]
    assert 0 < len(rows) <= 15 and manifest["metrics"]["from_corpus"] == len(rows)
    counts = [int(r[3]) for r in rows]
    assert counts == sorted(counts, reverse=True) and min(counts) >= 3
    assert all(len(r[0]) >= 2 and r[4] in ("corpus", "phrases") for r in rows) and "房间" not in {r[0] for r in rows}
    m = manifest["metrics"]
    assert m["tokens_per_text_after"] < m["tokens_per_text_before"] and manifest["counts"]["rows_out"] == 160
    userdict = read_userdict(out / "jieba_userdict.txt")
    assert sorted(w for w, _ in userdict) == sorted(r[0] for r in rows)
    for policy in ("file", "force"):  # whole-word masking sees each new word whole
        segmenter = Segmenter(SegmenterSpec(userdict=tuple(userdict), policy=policy))
        assert all(segmenter.cut(r[0]) == [r[0]] for r in rows)


def test_raw_text_corpus_is_segmented_with_jieba(tmp_path, mlm_dir):
    manifest = build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "corpus": [FIXTURES / "pos.txt"]},
                     min_freq=2, workers=1)
    assert manifest["counts"]["rows_in"] == 80 and manifest["metrics"]["new_words"] > 0
    assert manifest["metrics"]["texts_measured"] == 80


def test_cli_and_user_errors(tmp_path, mlm_dir, words_file):
    ok = run_cli("expand", "--checkpoint", mlm_dir, "--words", words_file, "--out", tmp_path / "cli")
    assert ok.code == 0, ok.err
    for args, message in [
        (["--words", words_file, "--init", "vectors"], "--init vectors needs --vectors"),
        ([], "no words to add"),
        (["--words", words_file, "--min-len", "5", "--max-len", "2"], "min_len = 5 is above max_len = 2"),
    ]:
        bad = run_cli("expand", "--checkpoint", mlm_dir, *args, "--out", tmp_path / "bad")
        assert bad.code == 2 and message in bad.err_lines[-1], bad.err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    bad = run_cli("expand", "--checkpoint", empty, "--words", words_file, "--out", tmp_path / "bad")
    assert bad.code == 2 and "AutoTokenizer cannot load a tokenizer" in bad.err_lines[-1], bad.err


def test_invalid_words_are_reported_not_added(tmp_path, mlm_dir):
    words = tmp_path / "words.txt"
    words.write_text("##ab\n零宽\u200b空格\n" + "长" * 101 + "\n好词\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "words": [words]})
    assert manifest["metrics"]["new_words"] == 1 and manifest["metrics"]["invalid"] == 3
    assert set(manifest["invalid_words"]) == {"##ab", "零宽\u200b空格", "长" * 101}
    planner = WordPlanner(load_tokenizer(mlm_dir))
    assert "whitespace" in planner.consider("两个 词") and planner.consider("两个词") == "new"


def test_malformed_word_file_lines_are_dropped_with_their_line(tmp_path, mlm_dir, caplog):
    """`hello world` was added as `hello` (count 0) and `人工智能 12 extra` lost "extra" without a word."""
    words = tmp_path / "words.txt"
    words.write_text("hello world\n人工智能 12 extra\n区块链\t7\n好词\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "words": [words]})
    added = {row.split("\t")[0]: row.split("\t")[3] for row in lines(tmp_path / "out" / "words.tsv")[1:]}
    assert added == {"区块链": "7", "好词": "0"}
    assert manifest["counts"]["dropped"] == {"word file: count not a whole number": 1, "word file: more than `word count`": 1}
    assert manifest["reading"]["dropped_at"]["word file: count not a whole number"] == [f"{words}:1"]
    assert "line 2 '人工智能 12 extra' dropped" in caplog.text


def test_added_words_match_as_the_tokenizer_normalises(tmp_path, mlm_dir):
    """The tokenizer lower-cases: "abc公司" gave a, ##b, ##c, 公司 while "ABC公司" was one token (raw-text match)."""
    from tokenizers import normalizers

    from nlp_pipe.expansion.tokenizer_growth import CJK_RANGES

    words = tmp_path / "words.txt"
    words.write_text("ABC公司\n机器学习\n", encoding="utf-8")
    build("expand", tmp_path / "out", {"checkpoint": mlm_dir, "words": [words]})
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    company = tok.convert_tokens_to_ids("abc公司")
    for text in ("ABC公司", "abc公司", "Abc公司"):
        assert tok.tokenize(text) == ["abc公司"] and ids_of(tok, text) == [company], text
    assert tok("ABC公司好", "机器学习")["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    # the pre-tokenizer's CJK split is the BERT normalizer's: the same characters stand alone
    spacing = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    spaced = {cp for cp in range(0x30000) if not 0xD800 <= cp < 0xE000 and spacing.normalize_str(chr(cp)) != chr(cp)}
    assert spaced == {cp for a, b in CJK_RANGES for cp in range(a, b + 1)}
