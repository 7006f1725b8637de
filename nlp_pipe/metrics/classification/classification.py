"""Offline evaluate module: accuracy, macro and per-class precision/recall/F1, confusion matrix.

Hub metrics (`evaluate.load("accuracy")`) fetch a script from the internet; this one ships
with nlp_pipe. Use it as a class, or through evaluate with a local path:

    from nlp_pipe.metrics import load
    load("classification").compute(predictions=[0, 1], references=[0, 0], num_labels=2)
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, macro precision/recall/F1, per-class precision/recall/F1/support and the confusion matrix."
_INPUTS = """
Args:
    predictions: predicted class ids.
    references: gold class ids.
    num_labels: number of classes (so classes absent from both lists still get a row); default = max id + 1.
Returns:
    accuracy, macro_precision, macro_recall, macro_f1, per_class (lists indexed by class id), confusion_matrix
    (rows = gold, columns = predicted).
"""


class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        pred = np.asarray(predictions, dtype=np.int64)
        gold = np.asarray(references, dtype=np.int64)
        n = int(num_labels or (max(pred.max(initial=-1), gold.max(initial=-1)) + 1))
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (gold, pred), 1)
        tp = np.diag(matrix).astype(float)
        predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
        precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
        present = support > 0  # macro averages over the classes that occur in the references
        return {
            "accuracy": float(tp.sum() / max(len(gold), 1)),
            "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
            "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                          "support": support.tolist()},
            "confusion_matrix": matrix.tolist(),
        }
