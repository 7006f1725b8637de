"""Epoch training with early stopping for classifiers that take padded word-id batches (TextCNN).

Kept apart from training.py's step-based loop (pretraining) because classifier training is
epoch-based, restores the best epoch and scores the dev set with the offline metrics.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from .metrics import load as load_metric
from .training import cpu_threads

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Texts as word-id arrays (ragged; padded per batch) plus how many words were unknown."""

    ids: list[np.ndarray]
    oov_rate: float

    def batch(self, index: Sequence[int], min_len: int = 1) -> torch.Tensor:
        rows = [self.ids[i] for i in index]
        width = max(min_len, max((len(r) for r in rows), default=1))
        out = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return torch.from_numpy(out)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r) for r in self.ids), dtype=np.int64, count=len(self.ids))

    def select(self, index: Sequence[int]) -> Encoded:
        return Encoded([self.ids[i] for i in index], self.oov_rate)

    def concat(self, other: Encoded) -> Encoded:
        return Encoded(self.ids + other.ids, self.oov_rate)


def encode(texts: Sequence[Sequence[str]], index: dict[str, int], max_len: int, unk: int = 1) -> Encoded:
    total = unknown = 0
    rows = []
    for words in texts:
        ids = np.fromiter((index.get(w, unk) for w in words[:max_len]), dtype=np.int64, count=min(len(words), max_len))
        total += len(ids)
        unknown += int((ids == unk).sum())
        rows.append(ids)
    return Encoded(rows, unknown / total if total else 0.0)


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int
    lr: float
    epochs: int
    patience: int
    monitor: str  # macro_f1 | accuracy | loss
    seed: int


@dataclass
class Evaluation:
    probs: np.ndarray
    gold: np.ndarray
    loss: float

    def metrics(self, threshold: float | None) -> dict:
        if threshold is not None and self.probs.shape[1] == 2:
            pred = (self.probs[:, 1] > threshold).astype(np.int64)
        else:
            pred = self.probs.argmax(axis=1)
        result = load_metric().compute(predictions=pred, references=self.gold, num_labels=self.probs.shape[1])
        return {**result, "loss": self.loss}


@dataclass
class History:
    monitor: str
    rows: list[dict] = field(default_factory=list)
    best_epoch: int = 0

    def series(self, key: str) -> list[tuple[float, float]]:
        return [(r["epoch"], r[key]) for r in self.rows if key in r]


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar-length texts, so little compute goes to padding.

    With `rng`, texts are shuffled, sorted by length within pools of 50 batches and the batches
    shuffled (training stays random); without, batches follow global length order (evaluation).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    shuffled, pool = rng.permutation(len(lengths)), batch_size * 50
    batches = []
    for start in range(0, len(shuffled), pool):
        chunk = shuffled[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def evaluate(model: nn.Module, data: Encoded, gold: np.ndarray, num_labels: int, batch_size: int = 256) -> Evaluation:
    model.eval()
    device = next(model.parameters()).device
    probs = np.zeros((len(data.ids), num_labels), dtype=np.float32)
    loss = 0.0
    with torch.inference_mode():
        for index in length_batches(data.lengths, batch_size, None):
            logits = model(data.batch(index).to(device)).float()
            y = torch.from_numpy(gold[index]).to(device)
            loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            probs[index] = torch.softmax(logits, dim=-1).cpu().numpy()
    return Evaluation(probs, gold, loss / max(len(gold), 1))


def fit(model: nn.Module, train: Encoded, train_y: np.ndarray, dev: Encoded, dev_y: np.ndarray, s: TrainSettings) -> History:
    """Adam over shuffled batches; after each epoch score dev, keep the best state, stop on patience."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.device.type == "cpu":
        cpu_threads()  # on a busy 2-core machine 2 threads ran an epoch 10x slower than 1 (the demo, measured)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    rng = np.random.default_rng(s.seed)
    history, best, best_state, waited = History(s.monitor), None, None, 0
    num_labels = model.classifier.out_features
    lengths = train.lengths
    for epoch in range(1, s.epochs + 1):
        model.train()
        total = 0.0
        for index in tqdm(length_batches(lengths, s.batch_size, rng), desc=f"epoch {epoch}", leave=False,
                          mininterval=1.0, disable=None if accelerator.is_main_process else True):  # None: off without a terminal
            logits = model(train.batch(index).to(accelerator.device))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(train_y[index]).to(accelerator.device))
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            total += loss.item() * len(index)
        dev_eval = evaluate(model, dev, dev_y, num_labels).metrics(None)
        row = {"epoch": epoch, "train_loss": total / len(lengths), "dev_loss": dev_eval["loss"],
               "dev_accuracy": dev_eval["accuracy"], "dev_macro_f1": dev_eval["macro_f1"]}
        history.rows.append(row)
        score = -row["dev_loss"] if s.monitor == "loss" else row[f"dev_{s.monitor}"]
        log.info("epoch %d: train loss %.4f, dev loss %.4f, dev accuracy %.4f, dev macro F1 %.4f",
                 epoch, row["train_loss"], row["dev_loss"], row["dev_accuracy"], row["dev_macro_f1"])
        if best is None or score > best:
            best, best_state, waited, history.best_epoch = score, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= s.patience:
                log.info("early stop: no dev %s improvement for %d epochs", s.monitor, s.patience)
                break
    accelerator.unwrap_model(model).load_state_dict(best_state)
    return history
