"""Stage `baseline` (TF-IDF n-grams + logistic regression): trains on fixtures, reloads without pickle, predicts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import FIXTURES, build, fixture_lines, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.classifiers.tfidf import TfidfOptions, fit
from nlp_pipe.models.ngram import NgramConfig, features


@pytest.fixture(scope="module")
def baseline(seg_reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "baseline"
    manifest = build("baseline", out, {"train": seg_reviews}, seed=1, min_df=1)
    return out, manifest


def test_baseline_learns_the_fixture_and_reloads_as_a_text_classifier(baseline):
    out, manifest = baseline
    m = manifest["metrics"]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["features"] > 1000
    assert "probabilities match" in m["reload_check"]
    assert not list(out.glob("*.pkl")) and (out / "ngrams.json").exists()
    clf = TextClassifier.load(out)
    probs = clf.predict(["房间很干净，服务也好，下次还来", "太差了，再也不来"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    rows = [line.split("\t", 1) for line in fixture_lines("reviews.tsv")[1:]]
    predicted = [label for label, _ in clf.predict_labels([text for _, text in rows])]
    assert np.mean([p == gold for p, (gold, _) in zip(predicted, rows)]) >= 0.8  # it fits what it trained on (70% of rows)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {"dev", "test", "test_unseen"} <= set(metrics) and len(metrics["test"]["per_class"]["f1"]) == 2
    assert "| pos |" in (out / "report.md").read_text(encoding="utf-8")


def test_predict_cli_serves_the_baseline(baseline):
    out, _ = baseline
    result = run_cli("predict", out, "--text", "房间很干净，服务也好")
    assert result.code == 0, result.err
    assert result.out.strip()


@pytest.mark.parametrize("labels", [2, 3])
def test_numpy_prediction_equals_sklearn(labels):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    alphabet = list("好差房间服务干净脏贵便宜快慢")
    texts = ["".join(rng.choice(alphabet, size=rng.integers(3, 12))) for _ in range(90)]
    gold = np.array([i % labels for i in range(90)])
    model = fit(texts, None, gold, labels, TfidfOptions(min_df=1, C=2.0))
    config = NgramConfig(labels)
    docs = [features(t, None, config) for t in texts]
    vec = TfidfVectorizer(analyzer=lambda d: d, min_df=1, sublinear_tf=True, lowercase=False)
    clf = LogisticRegression(C=2.0, max_iter=2000).fit(vec.fit_transform(docs), gold)
    expected = clf.predict_proba(vec.transform(docs))
    assert np.abs(model.probabilities(texts) - expected).max() < 1e-5


def test_word_features_need_words():
    config = NgramConfig(2, analyzer="char+word")
    assert features("好 的", ["好", "的"], config) == ["c:好", "c: ", "c:的", "c:好 ", "c: 的", "c:好 的", "w:好", "w:的", "w:好 的"]


def test_nothing_left_after_min_df_is_a_user_error():
    from nlp_pipe.core.errors import UserError

    with pytest.raises(UserError, match="lower min_df"):
        fit(["好", "差", "好"], None, np.array([0, 1, 0]), 2, TfidfOptions(min_df=10))


def test_every_published_file_has_the_umasks_mode(tmp_path, seg_reviews):
    """safetensors writes 0600 files; a published artifact's files all get the mode the umask gives new files,
    so another account (a server's) can read the model, not only its JSON beside it."""
    old = os.umask(0o022)
    try:
        build("baseline", tmp_path / "clf", {"train": seg_reviews}, seed=1, min_df=1)
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "clf").iterdir() if p.is_file()}
    assert set(modes.values()) == {"0o644"}, modes


def test_rows_without_a_label_are_one_line(tmp_path):
    """A labelled file segmented with an unlabelled one: the latter's rows have no label, which made the classifier
    stages fail with a TypeError traceback (sorting None with str)."""
    seg = tmp_path / "mixed"
    plain = tmp_path / "plain.txt"
    plain.write_text("没有标签的一行\n又一行\n", encoding="utf-8")
    build("segment", seg, {"corpus": [FIXTURES / "reviews.tsv", plain]}, workers=1)
    result = run_cli("baseline", "--train", seg, "--out", tmp_path / "clf")
    assert result.code == 2 and "2 of 162 rows have no label (the first is row 160" in result.err, result.err
