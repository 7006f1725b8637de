"""Folding a binary classifier's dev-tuned threshold into its head, so every loader decides alike.

A binary BERT classifier picks class 1 when p1 > t, with t chosen on dev for F1. Kept in labels.json
only, `transformers.pipeline("text-classification")` and `AutoModelForSequenceClassification` argmax
would ignore it. Since p1 > t  <=>  z1 - z0 > log(t / (1 - t)), subtracting that log-odds from the class-1
bias makes argmax take exactly the thresholded decision (a tie, p1 = t, stays class 0 both ways).
The saved probabilities are shifted alike: 0.5 is the decision point, and the trained head's own
probability is sigmoid(logit(p1) + log(t / (1 - t))). labels.json then records the original threshold as
`threshold_folded`, and its `threshold` is null (argmax applies).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from .labels import LabelInfo


def head_layer(model: Any) -> nn.Linear:
    """The linear layer producing the class logits: `classifier` (BERT, ERNIE, ALBERT, MegatronBERT) or
    `classifier.out_proj` (ELECTRA, RoBERTa)."""
    head = getattr(model, "classifier", None)
    layer = head if isinstance(head, nn.Linear) else getattr(head, "out_proj", None)
    if not isinstance(layer, nn.Linear) or layer.bias is None or layer.out_features != model.config.num_labels:
        raise UserError(f"{type(model).__name__}: no classification layer with a bias to fold the threshold into")
    return layer


@torch.no_grad()
def fold_threshold(model: Any, threshold: float) -> float:
    """Shift the class-1 bias of a 2-class model by -log(t / (1 - t)); returns the shift applied."""
    if model.config.num_labels != 2:
        raise ValueError("only a binary classifier has a threshold to fold")
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    shift = math.log(t / (1 - t))
    head_layer(model).bias[1] -= shift
    return shift


def save_with_decision(out: Path, model: Any, info: LabelInfo) -> LabelInfo:
    """A binary classifier with a tuned threshold is saved again with the threshold folded into its head;
    returns the labels.json content that goes with what is now on disk."""
    if info.threshold is None or len(info.labels) != 2:
        return info
    fold_threshold(model, info.threshold)
    model.save_pretrained(str(out), safe_serialization=True)
    return dataclasses.replace(info, threshold=None, threshold_folded=info.threshold)
