"""Classification scores: the one definition of accuracy and macro-F1 that training, reports and benchmarks use.

macro-F1 is the mean F1 over every class of the label set (a class absent from the references and never
predicted scores 0, as scikit-learn's `f1_score(average="macro", labels=all, zero_division=0)`), so a
split missing a class cannot look better than one that has it. Training sums per-class counts over
batches and processes (`confusion_sums`) and turns the sums into the same figures (`summarize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray,
                     num_labels: int | None = None) -> np.ndarray:
    """[gold, predicted] counts; num_labels defaults to the largest id + 1."""
    pred = np.asarray(predictions, dtype=np.int64)
    gold = np.asarray(references, dtype=np.int64)
    n = int(num_labels or (max(pred.max(initial=-1), gold.max(initial=-1)) + 1))
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (gold, pred), 1)
    return matrix


def per_class(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class from its true positives, predictions and references."""
    tp, predicted, support = (np.asarray(a, dtype=float) for a in (tp, predicted, support))
    precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(len(tp)), where=support > 0)
    both = predicted + support
    f1 = np.divide(2 * tp, both, out=np.zeros(len(tp)), where=both > 0)  # = 2PR / (P + R)
    return {"precision": precision, "recall": recall, "f1": f1}


def scores(matrix: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 over all classes, per-class figures and the matrix itself."""
    tp = np.diag(matrix)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    classes = per_class(tp, predicted, support)
    total = int(matrix.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_precision": float(classes["precision"].mean()) if len(tp) else 0.0,
        "macro_recall": float(classes["recall"].mean()) if len(tp) else 0.0,
        "macro_f1": float(classes["f1"].mean()) if len(tp) else 0.0,
        "per_class": {**{k: v.tolist() for k, v in classes.items()}, "support": support.tolist()},
        "confusion_matrix": matrix.tolist(),
    }


def confusion_sums(logits: Any, labels: Any, num_labels: int) -> dict[str, Any]:
    """Per-class counts of a batch as scalar tensors the Trainer sums across batches and processes
    (it sums every value a forward returns); `summarize` turns the sums into scores."""
    import torch

    pred = logits.argmax(-1)
    sums = {"count": torch.tensor(float(len(labels)), device=labels.device), "correct": (pred == labels).sum()}
    for c in range(num_labels):
        sums[f"tp_{c}"] = ((pred == c) & (labels == c)).sum()
        sums[f"pred_{c}"] = (pred == c).sum()
        sums[f"gold_{c}"] = (labels == c).sum()
    return sums


def summarize(sums: dict[str, float], num_labels: int) -> dict[str, float]:
    """Mean loss per batch, and accuracy and macro-F1 when the sums hold `confusion_sums` counts."""
    out = {"loss": sums["loss"] / max(sums["batches"], 1)}
    if "count" in sums:
        counts = {k: np.array([sums[f"{k}_{c}"] for c in range(num_labels)]) for k in ("tp", "pred", "gold")}
        f1 = per_class(counts["tp"], counts["pred"], counts["gold"])["f1"]
        out |= {"accuracy": sums["correct"] / max(sums["count"], 1), "macro_f1": float(f1.mean())}
    return out
