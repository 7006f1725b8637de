"""nlp_pipe.training on its own: the loop textcnn / finetune / distill reuse (epochs, plain lists of
rows, accuracy from summed counts, early stopping with the best weights restored)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from nlp_pipe.core.config import option
from nlp_pipe.training.options import TrainOptions
from nlp_pipe.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class ToyConfig(TrainOptions):
    steps: int = option(0, "steps")
    epochs: float = option(30.0, "epochs")
    batch_size: int = option(16, "batch")
    lr: float = option(0.05, "lr")
    warmup: float = option(0.0, "warmup")
    precision: str = option("fp32", "precision")
    save_every: int = option(0, "no checkpoints")


def _rows(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return [{"x": a, "y": b} for a, b in zip(x, y)]


def _collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    logits = model(batch["x"])
    loss = torch.nn.functional.cross_entropy(logits, batch["y"])
    return {"loss": loss, "correct": (logits.argmax(-1) == batch["y"]).sum(), "count": torch.tensor(len(batch["y"]))}


def _summarize(sums: dict[str, float]) -> dict[str, float]:
    return {"loss": sums["loss"] / sums["batches"], "accuracy": sums["correct"] / sums["count"]}


def test_epoch_training_with_early_stopping_restores_the_best_weights(tmp_path):
    out = tmp_path / ".toy.tmp-1234abcd"  # as the runner names its staging directory
    out.mkdir()
    train, dev = _rows(256, 0), _rows(64, 1)
    with Trainer(ToyConfig(), out, run_config={"toy": 1}, name="toy") as trainer:
        assert trainer.work == tmp_path / "toy.checkpoints"  # beside the final artifact, not in the staging dir
        model = torch.nn.Linear(4, 2)
        per_epoch = trainer.steps_per_epoch(len(train))
        summary = trainer.fit(model, train, collate=_collate, forward=_forward, eval_data=dev, summarize=_summarize,
                              best_metric="accuracy", patience=3, eval_steps=per_epoch)
        best = trainer.evaluate(model, dev, _collate, _forward, summarize=_summarize)
        total = trainer.total_steps(len(train))
    assert per_epoch == 256 // 16 and total == 30 * per_epoch
    assert summary.steps < total  # stopped early: 3 evaluations without improvement
    assert summary.best is not None and summary.best["accuracy"] > 0.9
    assert best["accuracy"] == pytest.approx(summary.best["accuracy"])  # the best weights, not the last ones
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert evals[0]["step"] == 0 and all(r["step"] % per_epoch == 0 for r in evals)
    assert (out / "training_curves.png").stat().st_size > 0
