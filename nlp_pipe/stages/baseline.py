"""Stage `baseline`: TF-IDF over character (or word) n-grams + logistic regression, in seconds.

    nlp-pipe baseline --train runs/seg_train --dev runs/seg_dev --test runs/seg_test --out runs/baseline

The classical yardstick for the neural classifiers (textcnn, finetune and distill fit it on their own
split and report it beside their scores; this stage saves it as a model of its own). Inputs are
`segment` artifacts with labels (dev/test optional: without them train is split 7:1:2, stratified).
Writes config.json, ngrams.json (n-grams with idf), model.safetensors (coefficients; no pickle),
labels.json (F1-optimal threshold on dev for binary tasks), segmenter.json, metrics.json, report.md.
Load it with `nlp_pipe.TextClassifier.load(dir)` or `nlp-pipe predict dir --text ...` (numpy only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from ..classifiers.labels import LabelInfo
from ..classifiers.outcome import finish
from ..classifiers.tfidf import TfidfOptions, fit_splits, probabilities
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.files import CONFIG_JSON, LABELS_JSON, METRICS_JSON, NGRAMS_JSON, SEGMENTER_JSON, WEIGHTS
from ..data.labelled import load_splits
from ..text.segmenter import SegmenterSpec

NAME = "baseline"
VERSION = 2  # 2: splits carved by scikit-learn (other rows than 1 for the same seed)
OUTPUTS = (CONFIG_JSON, NGRAMS_JSON, WEIGHTS, LABELS_JSON, SEGMENTER_JSON, METRICS_JSON)

INPUTS = {
    "train": Input("labelled training data (segment artifact)", kind="artifact", stages=("segment",)),
    "dev": Input("labelled dev data for the threshold", kind="artifact", required=False, stages=("segment",)),
    "test": Input("labelled test data", kind="artifact", required=False, stages=("segment",)),
}


@dataclasses.dataclass(frozen=True)
class Config:
    analyzer: Literal["char", "word", "char+word"] = option("char", "n-grams of characters, of segmented words, or both")
    char_min: int = option(1, "shortest character n-gram", min=1)
    char_max: int = option(3, "longest character n-gram", min=1)
    word_max: int = option(2, "longest word n-gram (word analyzers; from unigrams)", min=1)
    min_df: int = option(2, "n-grams in fewer training texts are dropped", min=1)
    C: float = option(4.0, "inverse L2 regularisation strength of the logistic regression", min=1e-6)
    sublinear_tf: bool = option(True, "1 + log(tf) instead of raw counts")
    class_weight: Literal["none", "balanced"] = option("none", "balanced: weight classes inversely to their frequency")
    seed: int = option(42, "seed of the 7:1:2 split when dev is not given", min=0)

    def __post_init__(self) -> None:
        if self.char_min > self.char_max:
            raise ValueError("char_min must not exceed char_max")

    def options(self) -> TfidfOptions:
        return TfidfOptions(self.analyzer, (self.char_min, self.char_max), (1, self.word_max), self.min_df, self.C,
                               self.sublinear_tf, self.class_weight)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    model, train_s = fit_splits(splits, config.options())

    def save(info: LabelInfo) -> LabelInfo:
        model.save(out)
        SegmenterSpec.load(inputs["train"][0]).save(out)  # word analyzers cut new text as the training data was cut
        return info

    done = finish(out, splits, lambda ds: probabilities(model, ds), save, name="baseline", baseline=False)
    rows = len(splits.train) + len(splits.dev) + (len(splits.test) if splits.test is not None else 0)
    lines = ["## TF-IDF + logistic regression baseline",
             f"{config.analyzer} n-grams ({len(model.ngrams)} features, min_df {config.min_df}), C={config.C:g}, class weights "
             f"{config.class_weight}; data {splits.origin}; trained in {train_s:.1f} s.", "", *done.sections, "",
             "![confusion matrix](confusion_matrix.png)"]
    figures = {"features": len(model.ngrams), "train_s": round(train_s, 2), **done.figures}
    return Result(Counts.of(rows), figures, "\n".join(lines))
