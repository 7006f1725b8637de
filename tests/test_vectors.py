"""nlp_pipe.vectors: word2vec text reading/writing, evaluation against gensim's own, embedding matrix."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json

import numpy as np
import pytest
from gensim.models import KeyedVectors

from nlp_pipe.core.errors import UserError
from nlp_pipe.text.corpus import Counts
from nlp_pipe.vectors.embedding import embedding_matrix
from nlp_pipe.vectors.evaluation import evaluate_analogies, evaluate_similarity
from nlp_pipe.vectors.store import load_keyed_vectors, save_vectors
from nlp_pipe.vectors.word2vec_text import read_word2vec_text, write_word2vec_text

MALE = ["国王", "男人", "父亲", "儿子", "哥哥", "丈夫", "King", "爷爷", "男孩", "先生"]
FEMALE = ["王后", "女人", "母亲", "女儿", "姐姐", "妻子", "Queen", "奶奶", "女孩", "女士"]
CITY = ["北京", "东京", "巴黎", "伦敦", "柏林", "罗马", "Madrid", "首尔"]
COUNTRY = ["中国", "日本", "法国", "英国", "德国", "意大利", "Spain", "韩国"]


def keyed(words: list[str], matrix: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(matrix.shape[1])
    kv.add_vectors(words, matrix.astype(np.float32))
    return kv


@pytest.fixture(scope="module")
def structured() -> KeyedVectors:
    """Pairs that differ by a shared offset plus noise (analogies partly solvable), then filler words."""
    rng = np.random.default_rng(7)
    dim = 16
    words, rows = [], []
    for left, right in ((MALE, FEMALE), (CITY, COUNTRY)):
        offset = rng.normal(size=dim)
        for a, b in zip(left, right):
            base = rng.normal(size=dim)
            words += [a, b]
            rows += [base, base + offset + rng.normal(scale=0.9, size=dim)]
    words += [f"词{i}" for i in range(60)] + ["king"]  # lower-case "king" after "King": gensim keeps the first
    rows += list(rng.normal(size=(61, dim)))
    return keyed(words, np.array(rows))


@pytest.fixture(scope="module")
def analogy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "analogy.txt"
    lines = []
    for name, left, right in (("gender", MALE, FEMALE), ("capital-country", CITY, COUNTRY)):
        lines.append(f": {name}")
        pairs = list(zip(left, right)) + [("皇帝", "皇后")]  # an OOV pair: its questions are skipped, and counted
        lines += [f"{a} {b} {c} {d}" for (a, b), (c, d) in itertools.permutations(pairs, 2)]
    lines += [": empty section", "only three words", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gensim_counts(kv: KeyedVectors, path, restrict_vocab: int = 300_000) -> dict[str, tuple[int, int]]:
    _, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict_vocab)
    return {s["section"]: (len(s["correct"]), len(s["incorrect"])) for s in sections}


# ---------------------------------------------------------------- reading and writing

def test_text_format_round_trips_exactly_and_loads_in_gensim(tmp_path, structured):
    path = tmp_path / "v.txt"
    write_word2vec_text(structured, path)
    by_gensim = KeyedVectors.load_word2vec_format(str(path))
    assert by_gensim.index_to_key == structured.index_to_key
    assert np.array_equal(by_gensim.vectors, structured.vectors)
    ours = read_word2vec_text(path)
    assert ours.index_to_key == structured.index_to_key and np.array_equal(ours.vectors, structured.vectors)
    write_word2vec_text(ours, tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_bytes() == path.read_bytes()


def test_compressed_files_read_like_plain(tmp_path, structured):
    path = tmp_path / "v.txt"
    write_word2vec_text(structured, path)
    (tmp_path / "v.txt.bz2").write_bytes(bz2.compress(path.read_bytes()))
    (tmp_path / "v.txt.gz").write_bytes(gzip.compress(path.read_bytes()))
    for name in ("v.txt.bz2", "v.txt.gz"):
        kv = load_keyed_vectors(tmp_path / name)
        assert kv.index_to_key == structured.index_to_key and np.array_equal(kv.vectors, structured.vectors)
    for name in ("bad.txt.bz2", "bad.txt.gz"):  # corrupt compressed data: one line, not bz2's / gzip's traceback
        (tmp_path / name).write_bytes(b"notcompressed")
        with pytest.raises(UserError, match="reading failed .*is the file complete and readable"):
            load_keyed_vectors(tmp_path / name)


@pytest.mark.parametrize("text, where", [
    ("3 2\na 1 2\nb 3 4\n", "line 1"),               # header announces 3, file has 2
    ("1 2\na 1 2\nb 3 4\n", "line 3"),               # more rows than announced
    ("2 2\na 1 2\nb 3\n", "line 3"),                 # a row one value short
    ("2 2\na 1 2\nb 3 4 5\n", "line 3"),             # a row one value long
    ("2 2\na 1 2\nb 3 x4\n", "line 3"),              # not a number
    ("2 2\na 1 nan\nb 3 4\n", "line 2"),             # not finite
    ("a 1 2\nb 3 4\n", "line 1"),                    # no header at all
])
def test_malformed_files_stop_with_the_line(tmp_path, text, where):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_word2vec_text(path)
    message = str(err.value)
    assert where in message and str(path) in message and "\n" not in message


def test_duplicates_keep_the_first_and_every_drop_is_counted(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("5 2\n好 1 2\n坏 3 4 \n好 5 6\nhello world 7 8\n\n书 9 10\n", encoding="utf-8")
    counts = Counts()
    kv = read_word2vec_text(path, counts=counts)
    assert kv.index_to_key == ["好", "坏", "书"]
    assert kv["好"].tolist() == [1, 2]
    assert counts.as_dict() == {"rows_in": 5, "rows_out": 3,
                                "dropped": {"blank_line": 1, "duplicate": 1, "space_in_word": 1}}


def test_keep_and_limit(tmp_path, structured):
    path = tmp_path / "v.txt"
    write_word2vec_text(structured, path)
    counts = Counts()
    kv = read_word2vec_text(path, keep={"北京", "中国", "没有的词"}, counts=counts)
    assert kv.index_to_key == ["北京", "中国"] and counts.dropped["not_in_vocab"] == len(structured) - 2
    assert np.array_equal(kv["中国"], structured["中国"])
    assert read_word2vec_text(path, limit=5).index_to_key == structured.index_to_key[:5]


def test_save_vectors_writes_both_formats(tmp_path, structured):
    save_vectors(structured, tmp_path)
    reloaded = KeyedVectors.load(str(tmp_path / "vectors.kv"), mmap="r")
    assert np.array_equal(reloaded.vectors, structured.vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.kv", "vectors.kv.vectors.npy", "vectors.txt"]


def test_load_refuses_what_is_not_vectors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_keyed_vectors(tmp_path / "missing.txt")
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "manifest.json").write_text(json.dumps({"schema": "nlp-pipe.artifact/1", "stage": "segment", "files": []}),
                                                    encoding="utf-8")
    with pytest.raises(UserError, match="'segment' artifact, not word vectors"):
        load_keyed_vectors(tmp_path / "art")


# ---------------------------------------------------------------- evaluation

@pytest.mark.parametrize("restrict_vocab", [300_000, 30])
def test_analogy_accuracy_equals_gensim(structured, analogy_file, restrict_vocab):
    ours = evaluate_analogies(structured, analogy_file, restrict_vocab=restrict_vocab)
    theirs = gensim_counts(structured, analogy_file, restrict_vocab)
    for section in ours["sections"]:
        correct, incorrect = theirs[section["section"]]
        assert (section["3cosadd"]["correct"], section["evaluated"]) == (correct, correct + incorrect), section["section"]
    correct, incorrect = theirs["Total accuracy"]
    assert ours["total"]["3cosadd"]["accuracy"] == round(correct / (correct + incorrect), 6)
    assert 0 < correct < correct + incorrect  # the vectors answer some, not all: a real comparison
    assert ours["total"]["oov_skipped"] == ours["total"]["questions"] - (correct + incorrect) > 0
    assert ours["malformed_lines"] == 1
    assert ours["sections"][-1] == {**ours["sections"][-1], "questions": 0, "evaluated": 0}


def test_analogy_oov_skipped_counts_questions_with_unknown_words(structured, analogy_file):
    result = evaluate_analogies(structured, analogy_file)
    gender = result["sections"][0]
    # 11 pairs -> 110 questions; the 20 holding the unknown pair 皇帝/皇后 are skipped and counted
    assert (gender["questions"], gender["oov_skipped"], gender["evaluated"]) == (110, 20, 90)


def test_3cosmul_equals_gensim_most_similar_cosmul(structured, analogy_file):
    result = evaluate_analogies(structured, analogy_file)
    expected = 0
    for line in analogy_file.read_text(encoding="utf-8").splitlines():
        words = line.upper().split()
        if len(words) != 4 or line.startswith(": ") or not all(w in {k.upper() for k in structured.index_to_key} for w in words):
            continue
        a, b, c, d = (next(k for k in structured.index_to_key if k.upper() == w) for w in words)
        best = next(w for w, _ in structured.most_similar_cosmul(positive=[b, c], negative=[a], topn=5)
                    if w.upper() not in {a.upper(), b.upper(), c.upper()})
        expected += best.upper() == d.upper()
    assert result["total"]["3cosmul"]["correct"] == expected


def test_analogy_question_before_any_section_is_a_user_error(tmp_path, structured):
    path = tmp_path / "a.txt"
    path.write_text("国王 王后 男人 女人\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1: a question before the first"):
        evaluate_analogies(structured, path)


def test_similarity_spearman_equals_gensim(tmp_path, structured):
    path = tmp_path / "sim.tsv"
    rng = np.random.default_rng(3)
    pairs = [(a, b) for a, b in itertools.combinations(structured.index_to_key[:12], 2)][:40]
    rows = [f"{a}\t{b}\t{rng.uniform(0, 10):.2f}" for a, b in pairs] + ["未知\t国王\t5.0", "# a comment", "bad line"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ours = evaluate_similarity(structured, path)
    pearson, spearman, oov_ratio = structured.evaluate_word_pairs(str(path))
    assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-6)
    assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
    assert (ours["pairs"], ours["evaluated"], ours["oov_skipped"], ours["malformed_lines"]) == (41, 40, 1, 1)
    bad = tmp_path / "bad.tsv"  # no pair at all: printed an empty table with exit 0
    bad.write_text("a b notanumber\n酒店 服务\n", encoding="utf-8")
    with pytest.raises(UserError, match="no `word word score` line"):
        evaluate_similarity(structured, bad)


# ---------------------------------------------------------------- embedding matrix

def test_embedding_matrix_rows_follow_the_vocab(structured):
    tokens = ["[PAD]", "[UNK]", "中国", "国王", "没见过", "King", "北京"]
    matrix, stats = embedding_matrix(structured, tokens, seed=1)
    assert matrix.dtype == np.float32 and matrix.shape == (len(tokens), structured.vector_size)
    for i, token in enumerate(tokens):
        if token in structured.key_to_index:
            assert np.array_equal(matrix[i], structured[token])
    assert not matrix[0].any()
    assert (stats["found"], stats["oov"], stats["pad"], stats["ngram"]) == (4, 2, 1, 0)
    assert stats["oov_examples"] == ["[UNK]", "没见过"]
    assert np.abs(matrix[[1, 4]]).max() <= stats["init_scale"] and matrix[[1, 4]].any()
    again, _ = embedding_matrix(structured, tokens, seed=1)
    assert np.array_equal(again, matrix)
