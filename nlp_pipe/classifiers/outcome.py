"""How every classifier stage ends (textcnn, finetune, distill, baseline): one call, `finish`.

    done = finish(out, splits, probabilities, save, name="TextCNN", baseline=config.baseline)
    report = "\n".join([*own_lines, "", *done.sections, "", *images])
    return Result(counts, {**own_figures, **done.figures}, report)

`finish` scores dev and test with the trained model's probabilities (binary tasks at the dev F1-optimal
threshold), has the stage save its model (`save` gets the LabelInfo and returns what labels.json must say
about the files it wrote), writes labels.json, metrics.json and the confusion matrix, reloads the artifact
as users load it, and fits the TF-IDF + LR baseline on the same split. It returns the manifest figures every
classifier has (README: accuracy and macro-F1 of dev, test and the test rows unseen in train, threshold,
baseline_*) and the report's shared sections (scores, per-class table, the baseline beside the model).
`finish_bert` is that call for a BERT-family classifier (`bert_probabilities` its scoring); `Evaluation` and `fold_summary` score the
held-out part of a cross-validation fold alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import plots
from ..core.files import CONFIG_JSON, LABELS_JSON, METRICS_JSON, WEIGHTS
from ..data.labelled import Splits, best_threshold
from ..metrics.scores import confusion_matrix, scores
from . import tfidf
from .decision import save_classifier
from .labels import LabelInfo
from .loaded import BertClassifier, TextClassifier

Probabilities = Callable[[Any], np.ndarray]  # a split (datasets.Dataset) -> [rows, classes] probabilities

BERT_OUTPUTS = (CONFIG_JSON, WEIGHTS, LABELS_JSON, METRICS_JSON)  # what finish_bert leaves in every BERT classifier artifact
FIGURE_SPLITS = ("dev", "test", "test_unseen")
RELOAD_SAMPLE = 16  # dev texts the reloaded artifact must score as the trained model does


@dataclass(frozen=True)
class Finished:
    metrics: dict[str, Any]  # metrics.json
    figures: dict[str, Any]  # manifest metrics every classifier writes
    sections: list[str]  # report lines: scores, per class, the baseline beside the model


def finish(out: Path, splits: Splits, probabilities: Probabilities, save: Callable[[LabelInfo], LabelInfo], *, name: str,
           baseline: bool, max_seq_len: int | None = None, cross_validation: dict[str, Any] | None = None) -> Finished:
    """Score, save, write, reload-check and compare one trained classifier (see the module doc)."""
    metrics, threshold = final_metrics(probabilities, splits)
    if cross_validation is not None:
        metrics["cross_validation"] = cross_validation
    write_classifier_files(out, save(LabelInfo(splits.labels, threshold, max_seq_len, halfwidth=splits.halfwidth)), metrics)
    sample = splits.dev.select(range(min(RELOAD_SAMPLE, len(splits.dev))))
    check = check_saved(out, list(sample["text"]), probabilities(sample))  # after `save`: what is on disk now
    figures = {"labels": len(splits.labels), "split": splits.origin, "reload_check": check, **flat(metrics),
               **({"threshold": threshold} if threshold is not None else {})}
    sections = [*scores_table(metrics), "", *per_class_table(metrics, splits.labels)]
    if baseline:
        base = baseline_scores(splits)
        figures |= {f"baseline_{k}": v for k, v in flat(base["metrics"]).items()} | {"baseline_train_s": base["train_s"]}
        sections += ["", *baseline_section(metrics, base, name)]
    return Finished(metrics, figures, sections)


def finish_bert(out: Path, splits: Splits, model: Any, tokenizer: Any, max_seq_len: int, *, name: str, baseline: bool,
                cross_validation: dict[str, Any] | None = None) -> Finished:
    """`finish` for a trained BERT-family classifier (finetune, distill): saved once with its tokenizer, a binary
    one with its dev threshold folded into the head (classifiers/decision.py)."""
    model = model.float().eval()
    return finish(out, splits, bert_probabilities(model, tokenizer, splits.labels, max_seq_len),
                  lambda info: save_classifier(out, model, tokenizer, info), name=name, baseline=baseline,
                  max_seq_len=max_seq_len, cross_validation=cross_validation)


def bert_probabilities(model: Any, tokenizer: Any, labels: list[str], max_seq_len: int) -> Probabilities:
    """A BERT-family classifier's probabilities of a split's texts, computed as `TextClassifier` computes them."""
    classifier = BertClassifier(model, tokenizer, labels, None, max_seq_len)
    return lambda ds: classifier.predict(list(ds["text"]))


def flat(metrics: dict[str, Any]) -> dict[str, float]:
    """{split}_{accuracy,macro_f1} for dev, test and test_unseen, as the manifest holds them."""
    return {f"{s}_{k}": round(float(metrics[s][k]), 4) for s in FIGURE_SPLITS if s in metrics for k in ("accuracy", "macro_f1")}


def baseline_scores(splits: Splits) -> dict[str, Any]:
    """The baseline (default options) fitted on `splits.train` and scored like the classifiers, with its training time."""
    options = tfidf.TfidfOptions()
    model, train_s = tfidf.fit_splits(splits, options)
    metrics, threshold = final_metrics(lambda ds: tfidf.probabilities(model, ds), splits)
    return {"name": f"TF-IDF {options.analyzer} n-grams + LR (C={options.C:g})", "train_s": round(train_s, 2),
            "threshold": threshold, "metrics": metrics}


def baseline_section(ours: dict[str, Any], base: dict[str, Any], name: str) -> list[str]:
    """Markdown: this classifier's and the baseline's accuracy / macro-F1 per split, side by side."""
    lines = ["### Against the classical baseline", f"{base['name']}, fitted on the same train split in this run "
             f"({base['train_s']:.1f} s); both at their own dev-tuned threshold for binary tasks.", "",
             f"| split | {name} accuracy | baseline accuracy | {name} macro F1 | baseline macro F1 |", "| --- | --- | --- | --- | --- |"]
    for split in FIGURE_SPLITS:
        if split in ours and split in base["metrics"]:
            a, b = ours[split], base["metrics"][split]
            lines.append(f"| {split} | {a['accuracy']:.4f} | {b['accuracy']:.4f} | {a['macro_f1']:.4f} | {b['macro_f1']:.4f} |")
    return lines


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
