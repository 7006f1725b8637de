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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.labelled import Splits
from . import tfidf
from .labels import LabelInfo
from .results import Probabilities, check_saved, final_metrics, per_class_table, scores_table, write_classifier_files

FIGURE_SPLITS = ("dev", "test", "test_unseen")
RELOAD_SAMPLE = 16  # dev texts the reloaded artifact must score as the trained model does


@dataclass(frozen=True)
class Finished:
    metrics: dict[str, Any]  # metrics.json
    threshold: float | None  # binary tasks: the dev F1-optimal threshold
    figures: dict[str, Any]  # manifest metrics every classifier writes
    sections: list[str]  # report lines: scores, per class, the baseline beside the model


def finish(out: Path, splits: Splits, probabilities: Probabilities, save: Callable[[LabelInfo], LabelInfo], *, name: str,
           baseline: bool, max_seq_len: int | None = None, cross_validation: dict[str, Any] | None = None) -> Finished:
    """Score, save, write, reload-check and compare one trained classifier (see the module doc)."""
    metrics, threshold = final_metrics(probabilities, splits)
    if cross_validation is not None:
        metrics["cross_validation"] = cross_validation
    write_classifier_files(out, save(LabelInfo(splits.labels, threshold, max_seq_len)), metrics)
    sample = splits.dev.select(range(min(RELOAD_SAMPLE, len(splits.dev))))
    check = check_saved(out, list(sample["text"]), probabilities(sample))  # after `save`: what is on disk now
    figures = {"labels": len(splits.labels), "split": splits.origin, "reload_check": check, **flat(metrics),
               **({"threshold": threshold} if threshold is not None else {})}
    sections = [*scores_table(metrics), "", *per_class_table(metrics, splits.labels)]
    if baseline:
        base = baseline_scores(splits)
        figures |= {f"baseline_{k}": v for k, v in flat(base["metrics"]).items()} | {"baseline_train_s": base["train_s"]}
        sections += ["", *baseline_section(metrics, base, name)]
    return Finished(metrics, threshold, figures, sections)


def flat(metrics: dict[str, Any]) -> dict[str, float]:
    """{split}_{accuracy,macro_f1} for dev, test and test_unseen, as the manifest holds them."""
    return {f"{s}_{k}": round(float(metrics[s][k]), 4) for s in FIGURE_SPLITS if s in metrics for k in ("accuracy", "macro_f1")}


def baseline_scores(splits: Splits, options: tfidf.TfidfOptions | None = None) -> dict[str, Any]:
    """The baseline fitted on `splits.train` and scored like the classifiers, with its training time."""
    options = options or tfidf.TfidfOptions()
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
