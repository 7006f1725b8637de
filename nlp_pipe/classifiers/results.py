"""Scoring a trained classifier and writing the files every classifier artifact shares.

textcnn, finetune and distill all finish the same way: dev and test scores of the best weights with the
offline metrics (binary tasks at the dev F1-optimal threshold), labels.json, metrics.json, a confusion
matrix PNG, and a reload check through `TextClassifier.load` as users load it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import plots
from ..core.files import METRICS_JSON
from ..data.labelled import Splits, best_threshold
from ..metrics.scores import confusion_matrix, scores
from .labels import LabelInfo
from .loaded import TextClassifier

Probabilities = Callable[[Any], np.ndarray]  # a split (datasets.Dataset) -> [rows, classes] probabilities


@dataclass
class Evaluation:
    probs: np.ndarray
    gold: np.ndarray

    @property
    def loss(self) -> float:
        """Mean cross-entropy of the gold classes."""
        picked = self.probs[np.arange(len(self.gold)), self.gold]
        return float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(self.gold) else 0.0

    def metrics(self, threshold: float | None) -> dict[str, Any]:
        if threshold is not None and self.probs.shape[1] == 2:
            pred = (self.probs[:, 1] > threshold).astype(np.int64)
        else:
            pred = self.probs.argmax(axis=1)
        return {**scores(confusion_matrix(pred, self.gold, self.probs.shape[1])), "loss": self.loss}


def final_metrics(probabilities: Probabilities, splits: Splits) -> tuple[dict[str, Any], float | None]:
    """Dev and test scores; binary tasks get the dev F1-optimal threshold (and test also at argmax)."""
    dev = Evaluation(probabilities(splits.dev), splits.ids(splits.dev))
    threshold = best_threshold(dev.probs[:, 1], dev.gold)[0] if len(splits.labels) == 2 else None
    metrics = {"dev": dev.metrics(threshold)}
    if splits.test is not None:
        test = Evaluation(probabilities(splits.test), splits.ids(splits.test))
        metrics["test"] = test.metrics(threshold)
        if threshold is not None:
            metrics["test_argmax"] = test.metrics(None)
        unseen = unseen_rows(splits)
        metrics["test_unseen"] = {**Evaluation(test.probs[unseen], test.gold[unseen]).metrics(threshold), "rows": int(len(unseen))}
    return metrics, threshold


def unseen_rows(splits: Splits) -> np.ndarray:
    """Indices of the test rows whose text does not occur in train: what a classifier has not memorised."""
    if splits.test is None:
        return np.zeros(0, dtype=np.int64)
    seen = set(splits.train["text"])
    return np.array([i for i, t in enumerate(splits.test["text"]) if t not in seen], dtype=np.int64)


def write_classifier_files(out: Path, labels: LabelInfo, metrics: dict[str, Any]) -> None:
    labels.save(out)
    (out / METRICS_JSON).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    split = "test" if "test" in metrics else "dev"
    plots.confusion(metrics[split]["confusion_matrix"], labels.labels, out / "confusion_matrix.png", f"{split} confusion matrix")


def check_saved(out: Path, texts: Sequence[str], expected: np.ndarray) -> str:
    """The artifact, reloaded as users load it, gives the trained model's probabilities for `texts`."""
    diff = float(np.abs(TextClassifier.load(out).predict(list(texts)) - expected).max()) if len(texts) else 0.0
    if diff > 1e-4:
        raise RuntimeError(f"the saved classifier's probabilities differ from the trained model's by {diff}")
    return f"TextClassifier.load reloads it; probabilities match (max diff {diff:.1e})"


def scores_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown rows of accuracy and macro-F1 per split (test at argmax too, for thresholded binary tasks)."""
    lines = ["| split | accuracy | macro F1 |", "| --- | --- | --- |"]
    lines += [f"| {s} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for s, m in metrics.items() if s in ("dev", "test")]
    if "test_unseen" in metrics:
        m = metrics["test_unseen"]
        lines.append(f"| test, rows unseen in train ({m['rows']}) | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |")
    if "test_argmax" in metrics:
        lines.append(f"| test (trained head at p = 0.5, before the threshold) | {metrics['test_argmax']['accuracy']:.4f} | "
                     f"{metrics['test_argmax']['macro_f1']:.4f} |")
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        lines += ["", f"{len(cv['accuracy']['folds'])}-fold cross-validation: accuracy {cv['accuracy']['mean']:.4f} ± "
                  f"{cv['accuracy']['std']:.4f}, macro F1 {cv['macro_f1']['mean']:.4f} ± {cv['macro_f1']['std']:.4f}"]
    return lines


def per_class_table(metrics: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """Markdown rows of precision, recall, F1 and support per class on test (dev without test)."""
    split = "test" if "test" in metrics else "dev"
    pc = metrics[split]["per_class"]
    lines = [f"Per class ({split}):", "", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {pc['precision'][i]:.4f} | {pc['recall'][i]:.4f} | {pc['f1'][i]:.4f} | {int(pc['support'][i])} |"
              for i, name in enumerate(labels)]
    return lines


def fold_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of held-out accuracy and macro-F1 over cross-validation folds."""
    return {key: {"mean": float(np.mean([r[key] for r in results])), "std": float(np.std([r[key] for r in results])),
                  "folds": [r[key] for r in results]} for key in ("accuracy", "macro_f1")}
