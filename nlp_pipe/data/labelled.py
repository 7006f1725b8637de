"""Labelled data for the classifiers (textcnn, finetune, distill): splits, augmented train rows, label maps, folds, thresholds.

Inputs are `segment` artifacts (a `datasets` dataset with text, words, label). With only a
train artifact, it is split 7:1:2 (train:dev:test), stratified by label, with a fixed seed
(scikit-learn's train_test_split and StratifiedKFold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..core.errors import UserError
from ..core.files import segmented_dataset


@dataclass
class Splits:
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None
    labels: list[str]  # class id -> label name
    origin: str  # "given", "split 7:1:2 (train:dev:test) from train ..." or "split 7:1 (train:dev) ...; test given"
    train_rows: np.ndarray  # rows of the train artifact that form `train` (all of them unless carved)
    halfwidth: bool = False  # the train text was mapped to half-width (segment --halfwidth): a classifier records it


    def ids(self, ds: datasets.Dataset) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array([index[v] for v in ds["label"]], dtype=np.int64)


def load_dataset(artifact: Path, role: str) -> datasets.Dataset:
    ds = segmented_dataset(artifact, role, keep_in_memory=True)
    if "label" not in ds.column_names:
        raise UserError(f"{role} data {artifact} has no labels; segment a file with a label column (or --label-per-file)")
    missing = ds.data.column("label").null_count  # a freshly loaded dataset: no indices mapping over its table
    if missing:  # labelled and unlabelled files segmented together: their rows have no label
        first = next(i for i, v in enumerate(ds["label"]) if v is None)
        raise UserError(f"{role} data {artifact}: {missing} of {len(ds)} rows have no label (the first is row {first}, "
                        "from a file without a label column segmented with labelled ones); segment the labelled files "
                        "on their own, or label every file with --label-per-file")
    return ds


def load_splits(train: Path, dev: Path | None, test: Path | None, seed: int,
                ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> Splits:
    """Train/dev/test from segment artifacts; missing dev (and test) are carved out of train."""
    train_ds = load_dataset(train, "train")
    labels = sorted(set(train_ds["label"]))
    if len(labels) < 2:
        raise UserError(f"train data {train} has a single label ({labels[0] if labels else 'none'}); a classifier needs two or more")
    dev_ds = load_dataset(dev, "dev") if dev else None
    test_ds = load_dataset(test, "test") if test else None
    origin, train_rows = "given", np.arange(len(train_ds))
    if dev_ds is None:
        _enough_per_class(np.array(train_ds["label"]), labels, train)  # scikit-learn cannot stratify a class of one
        try:
            parts = stratified_split(np.array(train_ds["label"]), ratios if test_ds is None else (ratios[0], ratios[1], 0.0), seed)
        except ValueError as exc:  # "The test_size = 3 should be greater or equal to the number of classes = 5"
            raise UserError(f"train data {train}: too few rows to carve a stratified dev/test split ({exc}); "
                            "pass --dev and --test, or add rows") from None
        origin = split_origin(ratios if test_ds is None else ratios[:2], seed)
        train_ds, dev_ds, carved_test = (train_ds.select(p) for p in parts)
        train_rows = parts[0]
        test_ds = test_ds if test_ds is not None else carved_test
    _enough_per_class(np.array(train_ds["label"]), labels, train)
    for name, ds in (("dev", dev_ds), ("test", test_ds)):
        if ds is not None:
            unseen = sorted(set(ds["label"]) - set(labels))
            if unseen:
                raise UserError(f"{name} data has label '{unseen[0]}' never seen in training (training labels: {', '.join(labels)})")
    return Splits(train_ds, dev_ds, test_ds if test_ds is not None and len(test_ds) else None, labels, origin, train_rows,
                  halfwidth(train))


def augmented_train(splits: Splits, augmented: Path | None, train_artifact: Path, stage: str) -> tuple[datasets.Dataset, int]:
    """The train split, or the augmented copies of its rows (originals included) from an augment artifact of
    `train_artifact` (with how many). Copies of rows carved out for dev/test are left out, and the originals must
    be the train artifact's texts."""
    if augmented is None:
        return splits.train, 0
    table = load_dataset(augmented, "augmented")
    if "source_row" not in table.column_names:
        raise UserError(f"{stage}: {augmented} is not an augment artifact (no source_row column)")
    original = load_dataset(train_artifact, "train")
    source = np.asarray(table["source_row"])
    first = np.flatnonzero(~np.asarray(table["augmented"]))
    if source.max(initial=-1) >= len(original) or any(
            table[int(i)]["text"] != original[int(source[i])]["text"] for i in first[:: max(1, len(first) // 50)]):
        raise UserError(f"{stage}: {augmented} was not made from the train input {train_artifact}; augment that artifact")
    missing = np.setdiff1d(splits.train_rows, source)
    if len(missing):  # an augment of part of the train input would silently leave the other rows out of training
        raise UserError(f"{stage}: {augmented} holds no copy of {len(missing)} of the {len(splits.train_rows)} train rows "
                        f"(first: row {int(missing[0])}); it was made from another artifact than the train input "
                        f"{train_artifact}: augment that artifact")
    keep = np.flatnonzero(np.isin(source, splits.train_rows))
    return table.select(keep).select_columns(["text", "label"]), int(len(keep))


def halfwidth(artifact: Path) -> bool:
    """Whether a segment artifact's text was mapped to half-width (its manifest's config says)."""
    from ..core.manifest import read_manifest

    return bool(((read_manifest(artifact) or {}).get("config") or {}).get("halfwidth", False))


def split_origin(ratios: tuple[float, ...], seed: int) -> str:
    """What a carved split says it is: train:dev:test 7:1:2, or train:dev 7:1 (87.5/12.5) when test was given."""
    parts = ("train", "dev", "test")[: len(ratios)]
    shares = ":".join(f"{r * 10:g}" for r in ratios)
    given = "" if len(ratios) == 3 else "; test given"
    return f"split {shares} ({':'.join(parts)}) from train (stratified, seed {seed}){given}"


def _enough_per_class(train_labels: np.ndarray, labels: list[str], source: Path) -> None:
    """A class with fewer than 2 training examples cannot be learnt or scored; say which, before training."""
    names, counts = np.unique(train_labels, return_counts=True)
    rare = {str(n): int(c) for n, c in zip(names, counts) if c < 2}
    rare.update({label: 0 for label in labels if label not in set(names.tolist())})
    if rare:
        shown = ", ".join(f"'{k}' ({v})" for k, v in list(rare.items())[:5])
        raise UserError(f"train data {source}: class(es) with fewer than 2 training examples: {shown}; "
                        "add examples of them, or drop those rows")


def stratified_split(labels: np.ndarray, ratios: tuple[float, float, float], seed: int) -> list[np.ndarray]:
    """Train, dev and test index arrays (test empty when its ratio is 0), each class divided in the same
    proportions: scikit-learn's stratified train_test_split, test carved first, then dev from the rest."""
    from sklearn.model_selection import train_test_split

    rest, test = np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    if ratios[2]:
        rest, test = train_test_split(rest, test_size=ratios[2] / sum(ratios), stratify=labels, random_state=seed)
    train, dev = train_test_split(rest, test_size=ratios[1] / (ratios[0] + ratios[1]), stratify=labels[rest],
                                  random_state=seed)
    return [np.sort(p).astype(np.int64) for p in (train, dev, test)]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, held-out indices) for each of k stratified folds: scikit-learn's StratifiedKFold, shuffled."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    return [(train.astype(np.int64), held.astype(np.int64)) for train, held in folds]


def best_threshold(positive_probs: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """The probability cut for class 1 that maximises F1 on (dev) data, and that F1."""
    order = np.argsort(-positive_probs)
    probs, hits = positive_probs[order], (gold[order] == 1).astype(float)
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    positives = hits.sum()
    if positives == 0:
        return 0.5, 0.0
    f1 = 2 * tp / (tp + fp + positives)
    # only cut between distinct probabilities, so every item at the cut is on the same side
    last_of_run = np.r_[probs[1:] != probs[:-1], True]
    best = int(np.argmax(np.where(last_of_run, f1, -1)))
    threshold = float(probs[best + 1] + probs[best]) / 2 if best + 1 < len(probs) else float(probs[best]) / 2
    return threshold, float(f1[best])
