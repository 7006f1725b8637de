"""Stages `word2vec` and `import-vectors` through the runner, and `nlp-pipe word2vec-eval`."""

from __future__ import annotations

import bz2
import json
import random

import numpy as np
import pytest
from gensim.models import KeyedVectors, Word2Vec

from conftest import build, run_cli
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.vectors.embedding import embedding_matrix
from nlp_pipe.vectors.store import load_keyed_vectors

PAIRS = [("国王", "王后"), ("男人", "女人"), ("父亲", "母亲"), ("儿子", "女儿"), ("哥哥", "姐姐"), ("丈夫", "妻子")]
CAPITALS = [("北京", "中国"), ("东京", "日本"), ("巴黎", "法国"), ("伦敦", "英国"), ("柏林", "德国")]
TEMPLATES = ["{m}和{f}一起去{city}旅行。", "{city}是{country}的首都，{m}很喜欢{city}。", "这位{m}说{f}今天很高兴。",
             "{f}在{country}读书，她的{m}在{city}工作。", "我们都认为{m}比{f}更喜欢看电影。", "{country}的经济发展很快。"]
W2V = dict(workers=1, epochs=3, vector_size=24, min_count=2, seed=3)


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """A segment artifact of 1,200 generated Chinese sentences."""
    root = tmp_path_factory.mktemp("w2v")
    rng = random.Random(0)
    lines = []
    for _ in range(1200):
        m, f = rng.choice(PAIRS)
        city, country = rng.choice(CAPITALS)
        lines.append(rng.choice(TEMPLATES).format(m=m, f=f, city=city, country=country))
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build("segment", root / "seg", {"corpus": [root / "corpus.txt"]}, workers=1)
    return root / "seg"


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    lines = [": gender"] + [f"{a} {b} {c} {d}" for a, b in PAIRS for c, d in PAIRS + [("皇帝", "皇后")] if a != c]
    lines += [": capital-country"] + [f"{a} {b} {c} {d}" for a, b in CAPITALS for c, d in CAPITALS if a != c]
    (root / "analogy.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sims = ["国王\t王后\t8", "男人\t女人\t7", "北京\t中国\t6", "中国\t日本\t5", "国王\t电影\t1", "经济\t哥哥\t0.5", "皇帝\t皇后\t8"]
    (root / "similarity.txt").write_text("\n".join(sims) + "\n", encoding="utf-8")
    return root / "analogy.txt", root / "similarity.txt"


@pytest.fixture(scope="module")
def w2v(seg, eval_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("w2v") / "w2v"
    analogy, similarity = eval_files
    build("word2vec", out, {"corpus": seg, "analogy": analogy, "similarity": similarity}, query=("国王", "不存在的词"), **W2V)
    return out


def test_stage_writes_a_verified_artifact(w2v):
    assert manifests.verify(w2v) == []
    names = {f["name"] for f in manifests.read_manifest(w2v)["files"]}
    assert {"vectors.txt", "vectors.kv", "vectors.kv.vectors.npy", "eval.json", "report.md"} <= names
    manifest = manifests.read_manifest(w2v)
    kv = load_keyed_vectors(w2v)
    counts = manifest["counts"]
    assert counts["rows_out"] == len(kv) and counts["rows_in"] == counts["rows_out"] + counts["dropped"]["below_min_count"]
    assert manifest["metrics"]["vocab_size"] == len(kv) and manifest["metrics"]["workers"] == 1
    report = (w2v / "report.md").read_text(encoding="utf-8")
    assert "| 国王 |" in report and "| 不存在的词 | not in the vocabulary |" in report


def test_vectors_txt_loads_in_gensim_and_equals_vectors_kv(w2v):
    by_gensim = KeyedVectors.load_word2vec_format(str(w2v / "vectors.txt"))
    kv = load_keyed_vectors(w2v)
    assert by_gensim.index_to_key == kv.index_to_key
    assert np.array_equal(by_gensim.vectors, kv.vectors)


def test_eval_json_agrees_with_gensim(w2v, eval_files):
    analogy, similarity = eval_files
    result = json.loads((w2v / "eval.json").read_text(encoding="utf-8"))
    kv = KeyedVectors.load_word2vec_format(str(w2v / "vectors.txt"))
    score, sections = kv.evaluate_word_analogies(str(analogy))
    total = sections[-1]
    assert result["analogy"]["total"]["3cosadd"]["accuracy"] == round(score, 6)
    assert result["analogy"]["total"]["evaluated"] == len(total["correct"]) + len(total["incorrect"])
    assert result["analogy"]["total"]["oov_skipped"] == 6  # the questions asking for 皇帝/皇后
    _, spearman, _ = kv.evaluate_word_pairs(str(similarity))
    assert result["similarity"]["spearman"] == pytest.approx(spearman.statistic, abs=1e-6)
    assert result["similarity"]["oov_skipped"] == 1
    assert manifests.read_manifest(w2v)["metrics"]["analogy_oov_skipped"] == 6


def test_import_round_trips_unchanged(w2v, tmp_path):
    source = tmp_path / "vectors.txt.bz2"
    source.write_bytes(bz2.compress((w2v / "vectors.txt").read_bytes()))
    manifest = build("import-vectors", tmp_path / "imported", {"vectors": source})
    assert (tmp_path / "imported" / "vectors.txt").read_bytes() == (w2v / "vectors.txt").read_bytes()
    assert manifests.verify(tmp_path / "imported") == []
    assert manifest["counts"] == {"rows_in": manifest["counts"]["rows_out"], "rows_out": len(load_keyed_vectors(w2v)), "dropped": {}}
    assert np.array_equal(load_keyed_vectors(tmp_path / "imported").vectors, load_keyed_vectors(w2v).vectors)


def test_import_counts_duplicates_and_restricts_to_a_vocab(seg, tmp_path):
    vocab = tmp_path / "vocab"
    build("vocab", vocab, {"corpus": [seg]}, min_freq=1)
    tokens = (vocab / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    source = tmp_path / "ext.txt"
    source.write_text("5 3\n国王 1 2 3\n外星人 4 5 6\n国王 7 8 9\n王后 0.5 0.25 -1\n中国 1e-3 2 3\n", encoding="utf-8")
    manifest = build("import-vectors", tmp_path / "imported", {"vectors": source, "vocab": vocab})
    assert manifest["counts"] == {"rows_in": 5, "rows_out": 3, "dropped": {"duplicate": 1, "not_in_vocab": 1}}
    kv = load_keyed_vectors(tmp_path / "imported")
    assert kv.index_to_key == ["国王", "王后", "中国"] and kv["国王"].tolist() == [1, 2, 3]
    assert manifest["metrics"]["vocab_coverage"] == round(3 / len(tokens), 6)


def test_import_header_that_disagrees_is_one_line_exit_2(tmp_path):
    source = tmp_path / "ext.txt"
    source.write_text("3 3\n国王 1 2 3\n王后 4 5 6\n", encoding="utf-8")
    result = run_cli("import-vectors", "--vectors", source, "--out", tmp_path / "imported")
    assert result.code == 2 and len(result.err_lines) == 1
    assert "line 1" in result.err and "announces 3 vectors" in result.err
    source.write_text("2 3\n国王 1 2 3\n王后 4 5\n", encoding="utf-8")
    result = run_cli("import-vectors", "--vectors", source, "--out", tmp_path / "imported")
    assert result.code == 2 and "line 3: 2 values for '王后'" in result.err and not (tmp_path / "imported").exists()


def test_embedding_matrix_from_an_artifact(w2v, seg, tmp_path):
    build("vocab", tmp_path / "vocab", {"corpus": [seg]}, min_freq=1)
    tokens = (tmp_path / "vocab" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    kv = load_keyed_vectors(w2v)
    matrix, stats = embedding_matrix(w2v, tokens, seed=0)
    assert matrix.shape == (len(tokens), 24) and matrix.dtype == np.float32
    known = [i for i, t in enumerate(tokens) if t in kv.key_to_index]
    assert all(np.array_equal(matrix[i], kv[tokens[i]]) for i in known)
    assert stats["found"] == len(known) and stats["pad"] == 1 and not matrix[tokens.index("[PAD]")].any()
    assert stats["oov"] == len(tokens) - len(known) - 1 > 0


def test_fasttext_gives_unseen_words_vectors(seg, tmp_path):
    out = tmp_path / "ft"
    manifest = build("word2vec", out, {"corpus": seg}, algorithm="fasttext", bucket=2000, query=("国王们",), **W2V)
    assert manifests.verify(out) == [] and manifest["metrics"]["vocab_size"] > 10
    assert "国王们 (unseen: from n-grams)" in (out / "report.md").read_text(encoding="utf-8")
    _, stats = embedding_matrix(out, ["[PAD]", "国王", "国王们"])
    assert (stats["found"], stats["ngram"], stats["oov"]) == (1, 1, 0)


def test_word2vec_eval_cli(w2v, eval_files, tmp_path):
    analogy, similarity = eval_files
    table = run_cli("word2vec-eval", w2v, "--analogy", analogy, "--similarity", similarity)
    assert table.code == 0 and "capital-country" in table.out and "spearman" in table.out
    as_json = run_cli("word2vec-eval", w2v / "vectors.txt", "--analogy", analogy, "--json")
    assert as_json.code == 0
    in_artifact = json.loads((w2v / "eval.json").read_text(encoding="utf-8"))["analogy"]
    assert json.loads(as_json.out)["analogy"] == in_artifact | {"file": str(analogy)}
    missing = run_cli("word2vec-eval", w2v)
    assert missing.code == 2 and "--analogy" in missing.err


def test_bad_configs_and_inputs_are_user_errors(seg, tmp_path):
    with pytest.raises(UserError, match="leave nothing to train"):
        build("word2vec", tmp_path / "x", {"corpus": seg}, negative=0, hs=False)
    raw = tmp_path / "raw.txt"
    raw.write_text("这是一段没有分词的中文文本，它应该先经过分词才能训练词向量。\n" * 20, encoding="utf-8")
    with pytest.raises(UserError, match="does not look segmented"):
        build("word2vec", tmp_path / "x", {"corpus": raw}, **W2V)
    gbk = tmp_path / "gbk.txt"  # segmented, but GBK: gensim's reader died on it with a UnicodeDecodeError traceback
    gbk.write_bytes("这 是 一段 已经 分词 的 中文 文本 ， 用 空格 分开 。\n".encode("gbk") * 50)
    with pytest.raises(UserError, match="is gb18030 text; gensim's corpus_file mode reads UTF-8"):
        build("word2vec", tmp_path / "x", {"corpus": gbk}, **W2V)
    with pytest.raises(UserError, match="min-count"):
        build("word2vec", tmp_path / "x", {"corpus": seg}, **{**W2V, "min_count": 100_000})


def test_report_compares_with_other_vectors(w2v, seg, eval_files, tmp_path):
    analogy, similarity = eval_files
    manifest = build("word2vec", tmp_path / "other", {"corpus": seg, "analogy": analogy, "similarity": similarity,
                                                      "compare": [w2v]}, min_count=1, epochs=2, vector_size=16, workers=1)
    report = (tmp_path / "other" / "report.md").read_text(encoding="utf-8")
    table = report.split("## Comparison", 1)[1]
    assert f"| this run | {w2v.name} |" in table
    earlier = manifests.read_manifest(w2v)["metrics"]
    assert f"| analogy_accuracy | {manifest['metrics']['analogy_accuracy']} | {earlier['analogy_accuracy']} |" in table


def test_training_progress_follows_gensims_progress_lines(monkeypatch, caplog):
    """gensim tells training progress only in its log: those lines move our bar (epochs x 100%), not the terminal;
    its warnings still reach the log."""
    import io
    import logging

    from nlp_pipe.core import console
    from nlp_pipe.stages import word2vec as w2v_stage

    bars, real = [], console.progress
    monkeypatch.setattr(console, "progress", lambda **kw: bars.append(real(**{**kw, "disable": False, "file": io.StringIO()}))
                        or bars[-1])
    gensim_log = logging.getLogger("gensim.models.word2vec")
    with caplog.at_level(logging.INFO), \
            w2v_stage._gensim_progress(w2v_stage._TRAINED, lambda m: 100 * int(m.group(1)) + float(m.group(2)), total=200):
        gensim_log.info("EPOCH %i - PROGRESS: at %.2f%% examples, %.0f words/s, in_qsize %i, out_qsize %i", 1, 41.5, 1e4, -1, 0)
        assert bars[0].n == pytest.approx(141.5) and bars[0].total == 200
        warning = "Effective 'alpha' higher than previous training cycles"
        gensim_log.warning(warning)  # gensim's own warnings still reach the log
    assert [r.getMessage() for r in caplog.records if r.name == gensim_log.name] == [warning]
    assert bars[0].n == 200 and not gensim_log.handlers and not gensim_log.filters and gensim_log.propagate


def test_the_vocabulary_pass_shows_progress_over_the_artifacts_lines(monkeypatch, tmp_path, seg_reviews):
    """build_vocab's own "PROGRESS: at sentence #N" lines move a bar whose total is the corpus artifact's rows out."""
    import functools
    import io

    from tqdm.auto import tqdm

    from nlp_pipe.core import console

    class Recording(tqdm):
        moves = 0

        def update(self, n=1):
            self.moves += 1
            return super().update(n)

    bars: list[Recording] = []
    monkeypatch.setattr(console, "progress", lambda **kw: bars.append(Recording(**{**kw, "disable": False, "file": io.StringIO()}))
                        or bars[-1])
    # gensim logs every 10,000 lines; the fixture has 160, so it is asked for a line every 10
    monkeypatch.setattr(Word2Vec, "build_vocab", functools.partialmethod(Word2Vec.build_vocab, progress_per=10))
    build("word2vec", tmp_path / "w2v", {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=8, workers=1)
    vocabulary = next(b for b in bars if b.desc == "word2vec vocabulary")
    assert vocabulary.total == manifests.read_manifest(seg_reviews)["counts"]["rows_out"] == 160
    assert vocabulary.n == 160 and vocabulary.moves >= 10  # moved while counting, not only filled at the end
