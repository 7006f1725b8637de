"""Offline evaluate module: accuracy, macro and per-class precision/recall/F1, confusion matrix.

Hub metrics (`evaluate.load("accuracy")`) fetch a script from the internet; this one ships
with nlp_pipe. Use it as a class, or through evaluate with a local path:

    from nlp_pipe.metrics import load
    load("classification").compute(predictions=[0, 1], references=[0, 0], num_labels=2)

The figures are nlp_pipe.metrics.scores' (macro averages over every class of the label set).
"""

import datasets
import evaluate

from nlp_pipe.metrics.scores import confusion_matrix, scores

_DESCRIPTION = "Accuracy, macro precision/recall/F1, per-class precision/recall/F1/support and the confusion matrix."
_INPUTS = """
Args:
    predictions: predicted class ids.
    references: gold class ids.
    num_labels: number of classes (so classes absent from both lists still count); default = max id + 1.
Returns:
    accuracy, macro_precision, macro_recall, macro_f1 (means over all num_labels classes), per_class (lists
    indexed by class id), confusion_matrix (rows = gold, columns = predicted).
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
        return scores(confusion_matrix(predictions, references, num_labels))
