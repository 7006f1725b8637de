"""nlp_pipe.training on its own: the loop textcnn / finetune / distill reuse (epochs, plain lists of
rows, accuracy from summed counts, early stopping with the best weights restored)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

import pytest
import torch

from nlp_pipe.core.config import option
from nlp_pipe.training.options import TrainOptions
from nlp_pipe.training.trainer import Summary, Trainer


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


def _train(out, precision: str, steps: int, rows: list[dict], seen: set | None = None,
           **options: Any) -> tuple[dict[str, torch.Tensor], Summary]:
    """`steps` steps of a linear model on `rows` at `precision`, checkpointing every 3; the final weights and the
    summary. `seen` collects the dtypes of the model's outputs in training and evaluation."""
    model = torch.nn.Linear(4, 2)
    if seen is not None:
        model.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    config = dataclasses.replace(ToyConfig(), precision=precision, steps=steps, epochs=0.0, save_every=3, keep_checkpoints=True,
                                 **options)
    with Trainer(config, out, run_config={"precision": precision, "steps": steps}, name="toy") as trainer:
        summary = trainer.fit(model, rows, collate=_collate, forward=_forward, eval_data=rows[:32], summarize=_summarize)
    return {k: v.clone() for k, v in model.state_dict().items()}, summary


def test_trainings_in_one_process_each_use_their_own_precision(tmp_path):
    """A pipeline trains several stages in one process. accelerate keeps mixed precision in a process-wide singleton
    without a public reset, so the Trainer leaves that at fp32 and applies each run's precision itself: fp32, bf16,
    fp16 and fp32 again each compute in their own dtype, and accelerate's state is never changed."""
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DynamoBackend

    rows = _rows(64, 0)
    dtypes = []
    for i, precision in enumerate(["fp32", "bf16", "fp16", "fp32"]):
        seen: set[torch.dtype] = set()
        out = tmp_path / f"run{i}"
        out.mkdir()
        _train(out, precision, 2, rows, seen)
        dtypes.append(seen)
        state = AcceleratorState()
        assert state.mixed_precision == "no" and state.dynamo_plugin.backend == DynamoBackend.NO
        assert GradientState().sync_gradients and GradientState().num_steps == 1
    assert dtypes == [{torch.float32}, {torch.bfloat16}, {torch.float16}, {torch.float32}]


def test_fp16_resume_keeps_the_loss_scale(tmp_path):
    """fp16's GradScaler state is part of the checkpoint: inputs large enough to overflow fp16 gradients make the
    scaler skip steps 1-4, halving its scale each time; a run resumed at step 3 must go on with the scale of step 3
    (a fresh scaler would skip steps 4-6 too) and end with the uninterrupted run's weights, bitwise."""
    rows = [{"x": r["x"] * 30, "y": r["y"]} for r in _rows(64, 0)]  # steps 1-4 overflow: scale 64k -> 4k
    out = tmp_path / "toy"
    out.mkdir()
    whole, _ = _train(out, "fp16", 6, rows)  # leaves its checkpoints of step 3 and the final step (keep_checkpoints)
    assert sorted(p.name for p in (tmp_path / "toy.checkpoints").glob("step_*")) == ["step_000003", "step_000006"]
    shutil.rmtree(tmp_path / "toy.checkpoints" / "step_000006")  # as if killed before the final one
    resumed, summary = _train(out, "fp16", 6, rows)  # the same run: resumes from step 3
    assert summary.resumed_from == 3
    for name, weights in whole.items():
        assert torch.equal(weights, resumed[name]), name


@pytest.mark.slow
def test_compiled_training_resumes_without_compile(tmp_path):
    """compile=true compiles the training steps only: checkpoints hold the module's own state_dict keys (a compiled
    module's start with "_orig_mod."), so a run started with compile resumes without it (compile is not part of the
    run's identity). 20 s on CPU, most of it inductor compiling."""
    from safetensors.torch import load_file

    rows = _rows(64, 0)
    out = tmp_path / "toy"
    out.mkdir()
    compiled, _ = _train(out, "fp32", 6, rows, compile=True)
    assert set(load_file(tmp_path / "toy.checkpoints" / "step_000003" / "model.safetensors")) == {"weight", "bias"}
    shutil.rmtree(tmp_path / "toy.checkpoints" / "step_000006")  # as if killed before the final one
    eager, summary = _train(out, "fp32", 6, rows)
    assert summary.resumed_from == 3
    for name, weights in compiled.items():
        torch.testing.assert_close(eager[name], weights)  # compiled arithmetic is close to eager, not bitwise


def test_a_run_resumed_at_its_final_step_keeps_its_weights_and_last_metrics(tmp_path):
    """Training saves its final step (a Ctrl-C while the stage evaluates or writes then costs no retraining): the
    rerun resumes there, trains nothing, and reports the metrics the first run ended with (from metrics.jsonl)."""
    rows = _rows(64, 0)
    out = tmp_path / "toy"
    out.mkdir()
    first_weights, first = _train(out, "fp32", 6, rows)
    again_weights, again = _train(out, "fp32", 6, rows)
    assert again.resumed_from == 6 and again.steps == 6 and first.last_train and first.last_eval
    assert again.last_train == pytest.approx(first.last_train) and again.last_eval == pytest.approx(first.last_eval)
    for name, weights in first_weights.items():
        assert torch.equal(weights, again_weights[name]), name
