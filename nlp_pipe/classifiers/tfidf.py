"""TF-IDF n-grams + logistic regression: the classical model every classifier is measured against.

`fit` trains it with scikit-learn (seconds); `fit_linear` is the logistic regression alone (textcnn's
n-gram bag starts from it). The fitted model is an `nlp_pipe.models.ngram.NgramModel`, which predicts
with numpy alone (the `baseline` stage saves it; classifiers/outcome.py fits it beside every classifier).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..core.errors import UserError
from ..data.labelled import Splits
from ..models.ngram import Analyzer, NgramConfig, NgramModel, features


@dataclass(frozen=True)
class TfidfOptions:
    analyzer: Analyzer = "char"
    char_ngrams: tuple[int, int] = (1, 3)
    word_ngrams: tuple[int, int] = (1, 2)
    min_df: int = 2
    C: float = 4.0
    sublinear_tf: bool = True
    class_weight: Literal["none", "balanced"] = "none"
    max_iter: int = 2000


def fit(texts: list[str], words: list[list[str]] | None, gold: np.ndarray, num_labels: int, options: TfidfOptions) -> NgramModel:
    """TF-IDF (smooth idf, L2 norm) over the n-grams of `features` + LogisticRegression(C), as NgramModel."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    config = NgramConfig(num_labels, options.analyzer, options.char_ngrams, options.word_ngrams, options.sublinear_tf)
    docs = [features(t, words[i] if words is not None else None, config) for i, t in enumerate(texts)]
    vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, min_df=options.min_df, sublinear_tf=options.sublinear_tf,
                                 lowercase=False)
    try:
        x = vectorizer.fit_transform(docs)
    except ValueError as exc:  # "After pruning, no terms remain" / "empty vocabulary"
        raise UserError(f"baseline: no n-gram is left to learn from ({exc}); lower min_df or check the training texts") from None
    coef, intercept = fit_linear(x, gold, num_labels, options.C, options.max_iter, options.class_weight)
    vocab = vectorizer.vocabulary_
    ngrams = sorted(vocab, key=vocab.__getitem__)
    return NgramModel(config, ngrams, vectorizer.idf_, coef, intercept)


def fit_linear(x: Any, gold: np.ndarray, num_labels: int, C: float, max_iter: int = 2000,
               class_weight: Literal["none", "balanced"] = "none", start_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """LogisticRegression(C) on the feature rows `x` (a sparse or dense matrix), as softmax weights: coef
    [num_labels, features] and intercept [num_labels], so that softmax(x @ coef.T + intercept) is its
    predict_proba for two classes as for more. `start_only`: the fit is a starting point that training goes
    on from, so stopping at max_iter before convergence is expected and not warned about."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced" if class_weight == "balanced" else None)
    with warnings.catch_warnings():
        if start_only:
            warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, gold)
    if list(clf.classes_) != list(range(num_labels)):
        raise ValueError(f"training labels {list(clf.classes_)} are not the class ids 0..{num_labels - 1}")
    coef, intercept = clf.coef_, clf.intercept_
    if num_labels == 2:  # sklearn's one binary row w: sigmoid(w.x + b) = softmax([-(w.x+b)/2, (w.x+b)/2])[1]
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef, intercept


def probabilities(model: NgramModel, ds: Any) -> np.ndarray:
    """The model's probabilities of a split (datasets.Dataset with text and words)."""
    return model.probabilities(list(ds["text"]), list(ds["words"]) if model.config.uses_words else None)


def fit_splits(splits: Splits, options: TfidfOptions) -> tuple[NgramModel, float]:
    """The baseline fitted on `splits.train`, and the seconds that took."""
    t0 = time.perf_counter()
    words = list(splits.train["words"]) if options.analyzer != "char" else None
    model = fit(list(splits.train["text"]), words, splits.ids(splits.train), len(splits.labels), options)
    return model, time.perf_counter() - t0
