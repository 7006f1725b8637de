"""The classical baseline every classifier is measured against: TF-IDF n-grams + logistic regression.

`fit` trains it with scikit-learn (seconds); `baseline_scores` fits it on a run's own train split and
scores it on the same dev/test (and unseen-test) rows with the same metrics, for the textcnn, finetune
and distill reports; `baseline_section` writes that comparison as markdown. The fitted model is an
`nlp_pipe.models.ngram.NgramModel`, which predicts with numpy alone (the `baseline` stage saves it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..core.errors import UserError
from ..data.labelled import Splits
from ..models.ngram import Analyzer, NgramConfig, NgramModel, features
from .results import final_metrics


@dataclass(frozen=True)
class BaselineOptions:
    analyzer: Analyzer = "char"
    char_ngrams: tuple[int, int] = (1, 3)
    word_ngrams: tuple[int, int] = (1, 2)
    min_df: int = 2
    C: float = 4.0
    sublinear_tf: bool = True
    class_weight: Literal["none", "balanced"] = "none"
    max_iter: int = 2000


def fit(texts: list[str], words: list[list[str]] | None, gold: np.ndarray, num_labels: int, options: BaselineOptions) -> NgramModel:
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


def fit_splits(splits: Splits, options: BaselineOptions) -> tuple[NgramModel, float]:
    """The baseline fitted on `splits.train`, and the seconds that took."""
    t0 = time.perf_counter()
    words = list(splits.train["words"]) if options.analyzer != "char" else None
    model = fit(list(splits.train["text"]), words, splits.ids(splits.train), len(splits.labels), options)
    return model, time.perf_counter() - t0


def baseline_scores(splits: Splits, options: BaselineOptions | None = None) -> dict[str, Any]:
    """The baseline fitted on `splits.train` and scored like the classifiers (dev, test, test_unseen),
    with its training time."""
    options = options or BaselineOptions()
    model, train_s = fit_splits(splits, options)
    metrics, threshold = final_metrics(lambda ds: probabilities(model, ds), splits)
    return {"name": f"TF-IDF {options.analyzer} n-grams + LR (C={options.C:g})", "train_s": round(train_s, 2),
            "threshold": threshold, "metrics": metrics}


def summary(base: dict[str, Any]) -> dict[str, Any]:
    """Flat figures for a manifest: baseline_{split}_{accuracy,macro_f1}."""
    return {f"baseline_{s}_{k}": round(m[k], 4) for s, m in base["metrics"].items()
            if s in ("dev", "test", "test_unseen") for k in ("accuracy", "macro_f1")} | {"baseline_train_s": base["train_s"]}


def baseline_section(ours: dict[str, Any], base: dict[str, Any], name: str) -> list[str]:
    """Markdown: this classifier's and the baseline's accuracy / macro-F1 per split, side by side."""
    lines = ["### Against the classical baseline", f"{base['name']}, fitted on the same train split in this run "
             f"({base['train_s']:.1f} s); both at their own dev-tuned threshold for binary tasks.", "",
             f"| split | {name} accuracy | baseline accuracy | {name} macro F1 | baseline macro F1 |", "| --- | --- | --- | --- | --- |"]
    for split in ("dev", "test", "test_unseen"):
        if split in ours and split in base["metrics"]:
            a, b = ours[split], base["metrics"][split]
            lines.append(f"| {split} | {a['accuracy']:.4f} | {b['accuracy']:.4f} | {a['macro_f1']:.4f} | {b['macro_f1']:.4f} |")
    return lines


def beside(report: str, figures: dict[str, Any], metrics: dict[str, Any], splits: Splits, name: str, enabled: bool) -> str:
    """The one call a classifier stage makes: when `enabled`, fit the baseline on `splits`, add its flat figures
    to `figures` (the manifest's metrics) and return `report` with the comparison section appended."""
    if not enabled:
        return report
    base = baseline_scores(splits)
    figures.update(summary(base))
    return report + "\n\n" + "\n".join(baseline_section(metrics, base, name))
