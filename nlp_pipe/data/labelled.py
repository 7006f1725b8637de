"""Labelled data for the classifiers (textcnn, finetune): splits, label maps, folds, thresholds.

Inputs are `segment` artifacts (a `datasets` dataset with text, words, label). With only a
train artifact, it is split 7:1:2 (train:dev:test), stratified by label, with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..core.errors import UserError
from ..text.corpus import segmented_dataset


@dataclass
class Splits:
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset | None
    labels: list[str]  # class id -> label name
    origin: str  # "given" or "split 7:1:2 (seed N)"
    train_rows: np.ndarray  # rows of the train artifact that form `train` (all of them unless carved)
    halfwidth: bool = False  # the train text was mapped to half-width (segment --halfwidth): a classifier records it


    def ids(self, ds: datasets.Dataset) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array([index[v] for v in ds["label"]], dtype=np.int64)


def load_dataset(artifact: Path, role: str) -> datasets.Dataset:
    ds = segmented_dataset(artifact, role, keep_in_memory=True)
    if "label" not in ds.column_names:
        raise UserError(f"{role} data {artifact} has no labels; segment a file with a label column (or --label-per-file)")
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
        parts = stratified_split(np.array(train_ds["label"]), ratios if test_ds is None else (ratios[0], ratios[1], 0.0), seed)
        origin = f"split {':'.join(str(round(r * 10)) for r in ratios)} from train (stratified, seed {seed})"
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


def halfwidth(artifact: Path) -> bool:
    """Whether a segment artifact's text was mapped to half-width (its manifest's config says)."""
    from ..core.manifest import read_manifest

    return bool(((read_manifest(artifact) or {}).get("config") or {}).get("halfwidth", False))


def _enough_per_class(train_labels: np.ndarray, labels: list[str], source: Path) -> None:
    """A class with fewer than 2 training examples cannot be learnt or scored; say which, before training."""
    names, counts = np.unique(train_labels, return_counts=True)
    rare = {str(n): int(c) for n, c in zip(names, counts) if c < 2}
    rare.update({label: 0 for label in labels if label not in set(names.tolist())})
    if rare:
        shown = ", ".join(f"'{k}' ({v})" for k, v in list(rare.items())[:5])
        raise UserError(f"train data {source}: class(es) with fewer than 2 training examples after the split: {shown}; "
                        "add examples of them, or drop those rows")


def stratified_split(labels: np.ndarray, ratios: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays, one per ratio, each class divided in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in ratios]
    cuts = np.cumsum(ratios) / sum(ratios)
    for label in sorted(set(labels.tolist())):
        idx = rng.permutation(np.flatnonzero(labels == label))
        bounds = [0, *np.round(cuts * len(idx)).astype(int)]
        for i in range(len(ratios)):
            parts[i].extend(idx[bounds[i]:bounds[i + 1]].tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, held-out indices) for each of k stratified folds."""
    folds = stratified_split(labels, (1.0,) * k, seed)
    everything = np.arange(len(labels))
    return [(np.setdiff1d(everything, held), held) for held in folds]


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
