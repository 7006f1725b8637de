"""Folding a binary classifier's dev-tuned threshold into its head, so every loader decides alike.

A binary BERT classifier picks class 1 when p1 > t, with t chosen on dev for F1. Kept in labels.json
only, `transformers.pipeline("text-classification")` and `AutoModelForSequenceClassification` argmax
would ignore it. Since p1 > t  <=>  z1 - z0 > log(t / (1 - t)), subtracting that log-odds from the class-1
bias makes argmax take exactly the thresholded decision (a tie, p1 = t, stays class 0 both ways).
The saved probabilities are shifted alike: 0.5 is the decision point, and the trained head's own
probability is sigmoid(logit(p1) + log(t / (1 - t))). labels.json then records the original threshold as
`threshold_folded`, and its `threshold` is null (argmax applies). distill takes it out again
(`unfold_threshold`) before a teacher's logits become soft targets: those are the trained model's.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import loading
from ..checkpoints.families import is_classifier
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


def classifier_for(checkpoint: Path, labels: list[str], **kwargs: Any) -> tuple[Any, str]:
    """`checkpoint` as a *ForSequenceClassification model for `labels` (`kwargs` to its config), and what its head
    is: "kept from the checkpoint" only when trained for these labels in this order, else "new (random)". A head
    trained for other labels of the same count is drawn anew: from_pretrained would load it (the shape matches)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = AutoConfig.from_pretrained(str(checkpoint))
    trained = [base.id2label.get(i) for i in range(len(base.id2label))] if is_classifier(base.architectures) else None
    # quiet: "newly initialised classifier" is the point of fine-tuning
    model = loading.load_model(AutoModelForSequenceClassification, checkpoint, num_labels=len(labels),
                               id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                               ignore_mismatched_sizes=True, **kwargs)
    if trained is not None and trained != labels and len(trained) == len(labels):
        with torch.no_grad():  # as transformers draws a missing head
            head_layer(model).weight.normal_(0.0, model.config.initializer_range)
            head_layer(model).bias.zero_()
    return model, "kept from the checkpoint" if trained == labels else "new (random)"


def log_odds(threshold: float) -> float:
    """log(t / (1 - t)): how far the class-1 logit must lead for p1 > t (t kept off 0 and 1)."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return math.log(t / (1 - t))


@torch.no_grad()
def fold_threshold(model: Any, threshold: float) -> float:
    """Shift the class-1 bias of a 2-class model by -log(t / (1 - t)); returns the shift applied."""
    if model.config.num_labels != 2:
        raise ValueError("only a binary classifier has a threshold to fold")
    shift = log_odds(threshold)
    head_layer(model).bias[1] -= shift
    return shift


@torch.no_grad()
def unfold_threshold(model: Any, info: LabelInfo | None) -> float | None:
    """The trained head back from a saved one (distill's teacher: its soft targets are the trained model's
    probabilities, not a decision rule's); returns the threshold that now applies on top (None: argmax)."""
    if info is None or info.threshold_folded is None:
        return info.threshold if info is not None else None
    if model.config.num_labels != 2:
        raise UserError(f"labels.json says a threshold is folded into {type(model).__name__}, which has "
                        f"{model.config.num_labels} labels; rebuild the classifier")
    head_layer(model).bias[1] += log_odds(info.threshold_folded)
    return info.threshold_folded


def load_trained(directory: Path) -> tuple[Any, LabelInfo | None, float | None]:
    """A finetune artifact (or any HF classifier) as it was trained (distill's teacher): its head with the dev
    threshold that nlp-pipe folded into the saved one taken out again, so its logits (the soft targets) are the
    trained model's; returns it with its labels.json and the threshold that now applies on top (None: argmax)."""
    from transformers import AutoModelForSequenceClassification

    model = loading.load_model(AutoModelForSequenceClassification, directory)
    if not is_classifier(model.config.architectures):
        raise UserError(f"distill --mode task: teacher {directory} is not a classifier; fine-tune it first (nlp-pipe finetune)")
    meta = LabelInfo.find(directory)
    return model, meta, unfold_threshold(model, meta)


def save_classifier(out: Path, model: Any, tokenizer: Any, info: LabelInfo) -> LabelInfo:
    """Save a BERT classifier and its tokenizer once, a binary one with its tuned threshold folded into the
    head; returns the labels.json content that goes with what is now on disk."""
    folded = info.threshold is not None and len(info.labels) == 2
    if info.threshold is not None and folded:
        fold_threshold(model, info.threshold)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return dataclasses.replace(info, threshold=None, threshold_folded=info.threshold) if folded else info
