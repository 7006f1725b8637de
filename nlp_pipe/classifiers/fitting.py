"""How the trained classifiers train (textcnn through classifiers/convnet.py, finetune): their shared options, the fit, the folds.

    @dataclasses.dataclass(frozen=True)
    @stage_defaults({"epochs": 3.0, "patience": 2})
    class Config(ClassifierOptions): ...

    summary = fit(trainer, model, config, train, dev, logits=..., collate=..., num_labels=...)
    folds = cross_validate(config, out, NAME, pooled, gold, train_fold) if config.folds else None

`fit` is cross-entropy on the gold labels with dev accuracy and macro-F1 each evaluation, early stopping and the
best checkpoint on `monitor`. `cross_validate` trains a fresh model on each of K stratified folds of train+dev
(a tenth of its training part for early stopping) and scores the held-out part; `classifiers/outcome.py` then
reports what the fold scores say beside the model's own.

A BERT-family checkpoint (finetune) is fitted the same way through three calls:

    tokenizer, encoded = bert_encoded(checkpoint, splits, NAME, config.max_seq_len, config.len_percentile)
    model, head = bert_classifier(checkpoint, splits.labels, tokenizer, NAME)
    summary = fit_bert(trainer, model, config, encoded["train"], encoded["dev"], tokenizer, layer_decay(layers, 0.9))
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch

from ..checkpoints import loading
from ..core import artifacts
from ..core.config import option
from ..data import bert_inputs
from ..data.labelled import Splits, stratified_folds
from ..metrics.scores import confusion_sums, summarize
from ..training.options import TrainOptions
from ..training.trainer import Trainer
from .decision import classifier_for
from .outcome import Evaluation, Probabilities, fold_summary

log = logging.getLogger(__name__)

_LAYER = re.compile(r"\.layer\.(\d+)\.")  # a transformer layer's parameters: encoder.layer.3.attention...

Logits = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]  # (model, batch) -> [batch, classes]


class Rows(Protocol):
    """What the folds need of the training rows: a `datasets.Dataset` or the TextCNN's encoded TextIds."""

    def select(self, indices: Any) -> Any: ...


R = TypeVar("R", bound=Rows)


@dataclasses.dataclass(frozen=True)
class ClassifierOptions(TrainOptions):
    """TrainOptions plus what a classifier stage adds: early stopping, cross-validation, the baseline beside it."""

    patience: int = option(3, "stop after this many evaluations without dev improvement (0 = never)", min=0)
    monitor: Literal["macro_f1", "accuracy", "loss"] = option("macro_f1", "dev figure for early stopping and the best checkpoint")
    folds: int = option(0, "K-fold cross-validation on train+dev, reported beside the model, which still trains on the "
                           "normal split (0 = off)", min=0)
    baseline: bool = option(True, "also fit the TF-IDF + LR baseline on the same split and report its scores beside these")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or at least 2")


Opts = TypeVar("Opts", bound=ClassifierOptions)


def fit(trainer: Trainer, model: torch.nn.Module, options: ClassifierOptions, train: Any, dev: Any, *, logits: Logits,
        collate: Callable, num_labels: int, lengths: Any, dev_lengths: Any,
        lr_scale: Callable[[str], float] | None = None) -> Any:
    """Train `model` on `train` (cross-entropy), evaluating on `dev` (sorted by length: less padding) each
    `eval_every` steps or once an epoch; returns the Trainer's summary."""

    def forward(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = logits(m, batch)
        loss = torch.nn.functional.cross_entropy(scores.float(), batch["labels"])
        return {"loss": loss, **confusion_sums(scores, batch["labels"], num_labels)}

    return trainer.fit(model, train, collate=collate, forward=forward,
                       eval_data=dev.select(np.argsort(dev_lengths, kind="stable")),
                       summarize=lambda sums: summarize(sums, num_labels), best_metric=options.monitor,
                       greater_is_better=options.monitor != "loss", patience=options.patience,
                       eval_steps=options.eval_every or trainer.steps_per_epoch(len(train)), lengths=lengths,
                       lr_scale=lr_scale)


def bert_encoded(checkpoint: Path, splits: Splits, stage: str, max_seq_len: int = 0,
                 percentile: float = 95.0) -> tuple[Any, bert_inputs.Encoded]:
    """`checkpoint`'s tokenizer (checked: a model directory of a family `stage` takes, with a padding token) and the
    splits encoded with it at `max_seq_len` tokens, 0 = the `percentile` of the training texts' token lengths; at
    most 512 and what the model's position embeddings take."""
    tokenizer = loading.checked_tokenizer(checkpoint, stage)
    limit = min(512, loading.max_positions(checkpoint))
    encoded = bert_inputs.encode_all({"train": splits.train, "dev": splits.dev, "test": splits.test}, tokenizer,
                                     splits.labels, min(max_seq_len, limit) or None, percentile, limit)
    return tokenizer, encoded


def bert_classifier(checkpoint: Path, labels: list[str], tokenizer: Any, stage: str, dropout: float = -1.0) -> tuple[Any, str]:
    """`checkpoint` with a classification head for `labels` (decision.classifier_for: says whether the head is new
    or kept), once the tokenizer's every id has an embedding row. `dropout` < 0: the checkpoint's hidden dropout."""
    model, head = classifier_for(checkpoint, labels, **({} if dropout < 0 else {"classifier_dropout": dropout}))
    loading.check_vocabulary(tokenizer, model, stage, checkpoint)
    return model, head


def fit_bert(trainer: Trainer, model: Any, options: ClassifierOptions, train: Any, dev: Any, tokenizer: Any,
             lr_scale: Callable[[str], float] | None = None) -> Any:
    """`fit` for a BERT-family classifier on `bert_inputs.encode`d rows, batches padded to their longest row."""
    return fit(trainer, model, options, train, dev, num_labels=model.config.num_labels, collate=bert_inputs.Collator(tokenizer),
               logits=lambda m, batch: m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
               lengths=train["length"], dev_lengths=dev["length"], lr_scale=lr_scale)


def layer_decay(layers: int, decay: float) -> Callable[[str], float] | None:
    """Deeper layers learn faster: the head and pooler at lr, layer i at lr x decay^(layers - i), embeddings lowest
    (None when decay is 1: every parameter at lr)."""
    if decay == 1.0:
        return None

    def scale(name: str) -> float:
        if (match := _LAYER.search(name)) is not None:
            return decay ** (layers - int(match.group(1)))
        return decay ** (layers + 1) if ".embeddings." in f".{name}" else 1.0

    return scale


def cross_validate(options: Opts, out: Path, stage: str, pooled: R, gold: np.ndarray,
                   train_fold: Callable[[Trainer, Opts, R, R], Probabilities]) -> dict[str, Any]:
    """Mean and standard deviation of held-out accuracy and macro-F1 over `options.folds` stratified folds of
    `pooled` (train+dev rows, `gold` their class ids). `train_fold(trainer, fold_options, train, dev)` trains a
    fresh model and returns its probabilities function. Under `accelerate launch` every process trains each fold
    (its checkpoints beside the artifact: the same path on every process); the main one scores the held-out part."""
    fold_options = dataclasses.replace(options, save_every=10**9, resume=False)  # folds are short: no checkpoints
    results = []
    for k, (train_idx, held_idx) in enumerate(stratified_folds(gold, options.folds, options.seed)):
        inner_train, inner_dev = stratified_folds(gold[train_idx], 9, options.seed)[0]
        part = pooled.select(train_idx)
        fold_out = out / f".fold{k}"
        with Trainer(fold_options, fold_out, run_config={"fold": k}, name=f"{stage} fold {k + 1}/{options.folds}",
                     work=artifacts.work_dir(out, f"fold{k}.checkpoints")) as trainer:
            main = trainer.is_main
            if main:
                fold_out.mkdir()
            probabilities = train_fold(trainer, fold_options, part.select(inner_train), part.select(inner_dev))
        if not main:
            continue
        results.append(Evaluation(probabilities(pooled.select(held_idx)), gold[held_idx]).metrics(None))
        log.info("fold %d/%d: accuracy %.4f, macro_f1 %.4f", k + 1, options.folds, results[-1]["accuracy"], results[-1]["macro_f1"])
        shutil.rmtree(fold_out, ignore_errors=True)
        artifacts.remove_work_dir(trainer.work)
    return fold_summary(results) if results else {}
