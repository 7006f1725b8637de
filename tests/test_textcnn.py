"""TextCNN stage, offline metrics, label splits and the TextClassifier predict interface."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import build, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.classifiers.tfidf import fit_linear
from nlp_pipe.core.errors import UserError
from nlp_pipe.data.labelled import best_threshold, stratified_split
from nlp_pipe.data.ngram_bag import NgramIndex, bag_matrix, gram_key, key_gram
from nlp_pipe.data.word_ids import stream_batch
from nlp_pipe.metrics.scores import confusion_matrix, scores
from nlp_pipe.models.textcnn import TextCNN, TextCNNConfig
from nlp_pipe.vectors.embedding import embedding_matrix


@pytest.fixture(scope="module")
def vectors(seg_reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("w2v") / "w2v"
    build("word2vec", out, {"corpus": seg_reviews}, min_count=1, epochs=3, vector_size=24, workers=1)
    return out


@pytest.fixture(scope="module")
def textcnn(seg_reviews, vectors, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "cnn"
    manifest = build("textcnn", out, {"train": seg_reviews, "vectors": vectors}, epochs=4, filters=8, mode="static", seed=1)
    return out, manifest


def test_scores_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.metrics import confusion_matrix as sk_confusion

    pred, gold = [0, 1, 2, 2, 1, 0, 0], [0, 1, 1, 2, 1, 2, 0]
    mine = scores(confusion_matrix(pred, gold, 3))
    assert mine["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert mine["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert mine["confusion_matrix"] == sk_confusion(gold, pred).tolist() == [[2, 0, 0], [0, 2, 1], [1, 0, 1]]


def test_best_threshold_beats_every_other_cut():
    rng = np.random.default_rng(0)
    probs, gold = rng.random(200), (rng.random(200) < 0.4).astype(int)
    threshold, f1 = best_threshold(probs, gold)

    def f1_at(t):
        pred = probs > t
        tp = (pred & (gold == 1)).sum()
        return 2 * tp / (pred.sum() + gold.sum())

    assert f1_at(threshold) == pytest.approx(f1)
    assert all(f1_at(t) <= f1 + 1e-12 for t in np.linspace(0, 1, 501))


def test_stratified_split_keeps_class_proportions():
    labels = np.array([0] * 70 + [1] * 30)
    train, dev, test = stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    assert sorted(np.concatenate([train, dev, test]).tolist()) == list(range(100))
    assert [int((labels[p] == 1).sum()) for p in (train, dev, test)] == [21, 3, 6]


def test_textcnn_artifact_and_static_embeddings_unchanged(textcnn, vectors):
    out, manifest = textcnn
    for name in ("config.json", "model.safetensors", "vocab.txt", "labels.json", "segmenter.json", "metrics.json",
                 "training_curves.png", "metrics.jsonl", "confusion_matrix.png", "length_histogram.png", "report.md",
                 "ngrams.txt"):
        assert (out / name).exists(), name
    tokens = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    expected, _ = embedding_matrix(vectors, tokens, seed=1)
    weights = load_file(str(out / "model.safetensors"))
    assert torch.equal(weights["embedding.weight"], torch.from_numpy(expected)), "static embeddings moved"
    assert json.loads((out / "labels.json").read_text())["labels"] == ["neg", "pos"]
    assert manifest["metrics"]["threshold"] is not None  # binary task: threshold searched on dev
    assert 0.0 <= manifest["metrics"]["test_accuracy"] <= 1.0


def test_report_shows_the_baseline_from_the_same_split_and_per_class_f1(textcnn, seg_reviews, vectors, tmp_path):
    out, manifest = textcnn
    m = manifest["metrics"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {"baseline_dev_accuracy", "baseline_test_accuracy", "baseline_test_unseen_accuracy", "test_unseen_accuracy"} <= set(m)
    assert metrics["test_unseen"]["rows"] <= sum(metrics["test"]["per_class"]["support"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Against the classical baseline" in report and "| pos |" in report
    off = build("textcnn", tmp_path / "cnn", {"train": seg_reviews, "vectors": vectors}, epochs=1, filters=4, seed=1, baseline=False)
    assert not any(k.startswith("baseline_") for k in off["metrics"])


def test_non_static_embeddings_do_change(seg_reviews, vectors, tmp_path):
    build("textcnn", tmp_path / "cnn", {"train": seg_reviews, "vectors": vectors}, epochs=2, filters=8, mode="non-static", seed=1,
          batch_size=8)  # several steps an epoch: the output layer starts at 0 (bag from LR), so step 1 moves no embedding
    tokens = (tmp_path / "cnn" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    expected, _ = embedding_matrix(vectors, tokens, seed=1)
    assert not torch.equal(load_file(str(tmp_path / "cnn" / "model.safetensors"))["embedding.weight"], torch.from_numpy(expected))


@pytest.mark.parametrize("kind", ["chars", "both"])
def test_char_stream_trains_saves_and_reloads_with_identical_probabilities(kind, seg_reviews, vectors, tmp_path):
    out = tmp_path / "cnn"
    inputs = {"train": seg_reviews, **({"vectors": vectors} if kind == "both" else {})}  # chars need no vectors
    manifest = build("textcnn", out, inputs, input=kind, epochs=2, filters=4, char_dim=8, embedding_dropout=0.2,
                     seed=1, baseline=False)
    m = manifest["metrics"]
    assert m["input"] == kind and m["char_vocab"] > 2 and "train_chars" in m["oov_rate"]
    assert ("train" in m["oov_rate"]) == (kind == "both")
    assert m["reload_check"].startswith("TextClassifier.load reloads it")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["input"] == kind and config["char_max_len"] == m["char_max_len"]
    chars = (out / "chars.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert chars[:2] == ["[PAD]", "[UNK]"] and len(chars) == m["char_vocab"]
    texts = ["房间干净，服务热情", "太差了，再也不来", "", "齉龘靐齾"]
    first, again = TextClassifier.load(out).predict(texts), TextClassifier.load(out).predict(texts)
    assert np.array_equal(first, again) and np.allclose(first.sum(axis=1), 1.0, atol=1e-5)
    result = run_cli("predict", out, "--text", texts[0], "--json")
    assert result.code == 0, result.err
    row = json.loads(result.out.splitlines()[0])
    assert np.allclose([row["probabilities"]["neg"], row["probabilities"]["pos"]], first[0], atol=1e-5)


def reference_grams(text, max_n):
    chars = "".join(ch for ch in text if not ch.isspace())
    return {chars[i:i + n] for n in range(1, max_n + 1) for i in range(len(chars) - n + 1)}


def test_ngram_index_matches_a_plain_python_count_on_hostile_text():
    rng = np.random.default_rng(0)
    alphabet = list("好不错差的了房间服务") + ["😀", "𠀀", "\u2028", " ", "\t", "\x00", "a", "\uffff"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(300)] + ["", "   ", "好", "好好好"]
    for max_n in (1, 2, 3):
        index = NgramIndex.count(texts, max_n, min_count=2, max_vocab=10**6, pad="[PAD]")
        df = {}
        for t in texts:
            for g in reference_grams(t, max_n):
                df[g] = df.get(g, 0) + 1
        assert index.grams[0] == "[PAD]" and set(index.grams[1:]) == {g for g, n in df.items() if n >= 2}
        counts = [df[g] for g in index.grams[1:]]
        assert counts == sorted(counts, reverse=True)  # most texts first
        rows, unknown = index.encode(texts)
        for t, row in zip(texts, rows):
            assert sorted(index.grams[i] for i in row) == sorted(g for g in reference_grams(t, max_n) if df[g] >= 2)
        seen = sum(len(reference_grams(t, max_n)) for t in texts)
        assert unknown == pytest.approx(1 - sum(len(r) for r in rows) / seen)
    assert key_gram(gram_key("😀好\x00")) == "😀好\x00" and gram_key("a") != gram_key("\x00a")
    top = NgramIndex.count(texts, 3, min_count=1, max_vocab=5, pad="[PAD]")
    assert len(top.grams) == 6 and top.encode(["zzz"])[0][0].size == 0  # unknown n-grams are left out


def test_ngram_bag_ignores_padding_and_starts_at_zero():
    model = TextCNN(TextCNNConfig(0, 0, 3, input="chars", char_vocab_size=10, char_dim=4, filters=2,
                                  ngram_vocab_size=20, ngram_max=2)).eval()
    assert not model.wide.weight.any()  # training starts from the CNN alone
    torch.nn.init.normal_(model.wide.weight)
    rows = [(None, np.array([2, 3, 4, 5, 6]), np.array([3, 7])), (None, np.array([2, 3, 4]), np.array([1, 3, 9, 11, 12]))]
    together = model(**stream_batch(rows, 5))
    alone = model(**stream_batch(rows[:1], 5))
    assert torch.allclose(together[0], alone[0], atol=1e-6)  # the other row's longer bag pads this one's
    cnn_only = model(char_ids=stream_batch(rows[:1], 5)["char_ids"], ngram_ids=torch.zeros(1, 1, dtype=torch.long))
    bag = model.wide.weight[[3, 7]].sum(0) / np.sqrt(2)
    assert torch.allclose(alone[0] - cnn_only[0], bag, atol=1e-5)
    with pytest.raises(ValueError, match="pass ngram_ids"):
        model(char_ids=stream_batch(rows, 5)["char_ids"])


@pytest.mark.parametrize("num_labels", [2, 3])
def test_bag_started_from_logistic_regression_predicts_as_sklearn_does(num_labels):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(num_labels)
    words = ["好", "不错", "差", "房间", "服务", "太", "贵", "干净", "吵"]
    texts = ["".join(rng.choice(words, size=rng.integers(1, 8))) for _ in range(120)] + ["zz"]
    gold = rng.integers(0, num_labels, size=len(texts))
    index = NgramIndex.count(texts, 3, min_count=2, max_vocab=10**6, pad="[PAD]")
    rows, _ = index.encode(texts)
    assert rows[-1].size == 0  # a text with no known n-gram gets an all-zero row, not NaN
    idf = index.idf(len(texts))
    x = bag_matrix(rows, idf)
    assert np.allclose(np.asarray(x[:-1].multiply(x[:-1]).sum(axis=1)).ravel(), 1.0) and x[-1].nnz == 0
    coef, intercept = fit_linear(x, gold, num_labels, C=4.0)
    expected = LogisticRegression(C=4.0, max_iter=2000).fit(x, gold).predict_proba(x)
    model = TextCNN(TextCNNConfig(0, 0, num_labels, input="chars", char_vocab_size=10, char_dim=4, filters=2,
                                  ngram_vocab_size=len(index.grams), ngram_max=3), idf=torch.from_numpy(idf)).eval()
    model.start_wide(torch.from_numpy(coef.T.astype(np.float32)), torch.from_numpy(intercept.astype(np.float32)))
    chars = [np.array([2, 3, 4]) for _ in texts]  # any characters: the CNN's output layer starts at zero
    logits = model(**stream_batch([(None, c, r) for c, r in zip(chars, rows)], 5))
    assert np.allclose(torch.softmax(logits, dim=-1).detach().numpy(), expected, atol=1e-4)


def test_a_start_that_stops_before_convergence_is_not_warned_about():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    x, gold = np.random.default_rng(0).normal(size=(60, 5)), np.arange(60) % 3
    with pytest.warns(ConvergenceWarning):
        fit_linear(x, gold, 3, C=4.0, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coef, intercept = fit_linear(x, gold, 3, C=4.0, max_iter=1, start_only=True)
    assert coef.shape == (3, 5) and intercept.shape == (3,)


def test_ngram_bag_trains_saves_and_reloads(textcnn):
    out, manifest = textcnn
    m = manifest["metrics"]
    grams = (out / "ngrams.txt").read_text(encoding="utf-8").split("\n")[:-1]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert grams[0] == "[PAD]" and len(grams) == m["ngram_vocab"] == config["ngram_vocab_size"] and config["ngram_max"] == 3
    assert all(1 <= len(g) <= 3 for g in grams[1:]) and len(set(grams)) == len(grams)
    assert load_file(str(out / "model.safetensors"))["wide.weight"].abs().sum() > 0  # the bag learned
    assert "train_ngrams" in m["oov_rate"] and m["reload_check"].startswith("TextClassifier.load reloads it")
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "linear bag of character 1-3-grams" in report and "started from logistic regression" in report


def test_bag_starts_as_logistic_regression_and_the_cnn_at_zero(seg_reviews, vectors, tmp_path):
    for init in ("lr", "zero"):
        build("textcnn", tmp_path / init, {"train": seg_reviews, "vectors": vectors}, steps=1, lr=0.0, filters=4, seed=1,
              ngram_init=init, baseline=False)  # lr 0: the saved weights are the starting ones
    started, zero = (load_file(str(tmp_path / init / "model.safetensors")) for init in ("lr", "zero"))
    assert started["wide.weight"].abs().sum() > 0 and not started["classifier.weight"].any()
    assert not zero["wide.weight"].any() and zero["classifier.weight"].any()


def test_artifact_from_before_the_ngram_bag_still_loads(textcnn, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(textcnn[0], out)
    (out / "ngrams.txt").unlink()
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    for key in ("ngram_vocab_size", "ngram_max"):
        del config[key]
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    weights = {k: v for k, v in load_file(str(out / "model.safetensors")).items() if not k.startswith("wide")}
    save_file(weights, str(out / "model.safetensors"))
    probs = TextClassifier.load(out).predict(["房间干净，服务热情", "太差了"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_word_input_needs_vectors(seg_reviews, tmp_path):
    with pytest.raises(UserError, match="pass --vectors"):
        build("textcnn", tmp_path / "cnn", {"train": seg_reviews}, epochs=1)


def test_predict_handles_oov_empty_and_very_long_text(textcnn):
    clf = TextClassifier.load(textcnn[0])
    texts = ["齉龘靐齾", "", "好" * 20_000, "质量很好，推荐购买"]
    probs = clf.predict(texts)
    assert probs.shape == (4, 2)
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    labels = clf.predict_labels(texts)
    assert all(label in ("neg", "pos") and 0.0 <= p <= 1.0 for label, p in labels)


def test_predict_cli_json_matches_library(textcnn, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("房间干净，服务热情\n太差了，再也不来\n", encoding="utf-8")
    result = run_cli("predict", textcnn[0], "--file", texts, "--json")
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in result.out.splitlines()]
    probs = TextClassifier.load(textcnn[0]).predict(["房间干净，服务热情", "太差了，再也不来"])
    assert [r["text"] for r in rows] == ["房间干净，服务热情", "太差了，再也不来"]
    assert np.allclose([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in rows], probs, atol=1e-5)


def test_unseen_test_label_stops_with_the_label_named(seg_reviews, vectors, tmp_path):
    odd = tmp_path / "odd.tsv"
    odd.write_text("label\ttext\nneutral\t还行吧，一般般\npos\t很好\n", encoding="utf-8")
    build("segment", tmp_path / "seg_odd", {"corpus": [odd]}, workers=1)
    with pytest.raises(UserError, match="'neutral' never seen in training"):
        build("textcnn", tmp_path / "cnn", {"train": seg_reviews, "dev": tmp_path / "seg_odd", "vectors": vectors}, epochs=1)


@pytest.mark.slow
def test_cross_validation_reports_mean_and_std(seg_reviews, vectors, tmp_path):
    manifest = build("textcnn", tmp_path / "cnn", {"train": seg_reviews, "vectors": vectors}, epochs=2, batch_size=16, filters=8, folds=3)
    cv = json.loads((tmp_path / "cnn" / "metrics.json").read_text())["cross_validation"]
    assert len(cv["accuracy"]["folds"]) == 3 and 0 <= cv["accuracy"]["std"] <= 0.5
    assert manifest["stage"] == "textcnn"
