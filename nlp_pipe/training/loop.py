"""The step loop behind the Trainer: batch order, micro-batch accumulation, precision, metric sums, early stopping.
Kept apart so trainer.py reads as the public API; nothing here is used by stages directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclasses.dataclass
class TrainState:
    """Where training stands; saved in every checkpoint (accelerate's register_for_checkpointing)."""

    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches consumed: the data position
    best: dict[str, float] | None = None  # evaluation metrics at the best step so far (early stopping)
    bad_evals: int = 0  # evaluations since the best one

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class Precision:
    """The run's arithmetic: bf16/fp16 autocast around each forward and, for fp16 (whose narrow range needs loss
    scaling; bf16 has fp32's range), a GradScaler whose state every checkpoint keeps, so a resume goes on with
    the scale the killed run had.

    Applied here, not through Accelerator(mixed_precision=...): accelerate keeps that choice in a process-wide
    singleton (AcceleratorState) that refuses a second value and has no public reset (accelerate 1.16), while one
    process may train several stages with different precisions (`nlp-pipe run`, the tests). So every Accelerator
    of the package is made with the same process-wide arguments (Trainer) and never needs a reset."""

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device) -> None:
        self.dtype, self.device_type = self.DTYPES.get(precision), device.type
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> Any:
        """Around the forward only: backward runs in the dtypes autocast chose for each op (torch's AMP recipe)."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler else loss

    def unscale(self, optimizer: Any) -> None:
        """Before clipping: the norm must be measured on the true gradients."""
        if self.scaler:
            self.scaler.unscale_(_torch_optimizer(optimizer))

    def step(self, optimizer: Any) -> None:
        """The optimizer step; with fp16 the scaler's, which skips a step whose gradients overflowed and adapts
        the scale."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(_torch_optimizer(optimizer))
        self.scaler.update()


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's AcceleratedOptimizer, which is what the GradScaler must see (as in
    accelerate's own fp16 step): the fused AdamW reads the scaler's found_inf from its own attributes."""
    return getattr(optimizer, "optimizer", optimizer)


class BatchOrder:
    """Batch `k` of the run, for this process: epoch k // per_epoch in a permutation seeded by (seed, epoch).

    The position alone decides the batch, so resuming at micro-batch k needs no sampler state.
    With `lengths`, batches hold examples of similar length (little padding) yet stay random: the
    epoch's permutation is cut into pools of POOL_BATCHES global batches, each pool sorted by length
    and cut into batches, and the batches shuffled (HF's group_by_length does the same with a sampler
    whose state a resume would have to restore)."""

    POOL_BATCHES = 50

    def __init__(self, n: int, batch_size: int, seed: int, processes: int, rank: int, per_epoch: int,
                 lengths: np.ndarray | None = None) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.processes, self.rank, self.per_epoch = processes, rank, per_epoch
        self.lengths = lengths
        self._epoch, self._perm = -1, np.arange(0)

    def indices(self, micro_step: int) -> list[int]:
        epoch, batch = divmod(micro_step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self._permutation(np.random.default_rng([self.seed, epoch]))
        start = (batch * self.processes + self.rank) * self.batch_size
        return self._perm[start:start + self.batch_size].tolist()

    def _permutation(self, rng: np.random.Generator) -> np.ndarray:
        perm = rng.permutation(self.n)
        if self.lengths is None:
            return perm
        size = self.batch_size * self.processes  # one global batch: every process gets a similar-length share
        pool = size * self.POOL_BATCHES
        batches = []
        for start in range(0, len(perm), pool):
            chunk = perm[start:start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        full = [b for b in batches if len(b) == size]  # an incomplete batch goes last: never reached
        return np.concatenate([full[i] for i in rng.permutation(len(full))] + [b for b in batches if len(b) < size])


class StepLoop:
    """One optimizer step at a time: accumulate micro-batches, clip, step; sums for the next log record."""

    def __init__(self, acc: Accelerator, options: Any, precision: Precision, model, optimizer, scheduler, data,
                 collate: Callable, forward: Forward, transform: Callable | None, summarize: Callable, per_epoch: int,
                 lengths: np.ndarray | None = None) -> None:
        self.acc, self.o, self.precision = acc, options, precision
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.data, self.collate, self.forward, self.transform, self.summarize = data, collate, forward, transform, summarize
        self.order = BatchOrder(len(data), options.batch_size, options.seed, acc.num_processes, acc.process_index, per_epoch,
                                lengths)
        self.window: dict[str, torch.Tensor] = {}
        self.total = {"tokens": 0, "slots": 0, "seconds": 0.0, "steps": 0}  # this session's training steps
        self.recent = dict(self.total)  # the same since the last log record
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def step(self, state: TrainState) -> None:
        acc, o = self.acc, self.o
        start = time.perf_counter()
        for i in range(o.grad_accum):
            batch = self.collate(rows(self.data, self.order.indices(state.micro_step)))
            if self.transform is not None:
                batch = self.transform(batch, np.random.default_rng([o.seed, 0, acc.process_index, state.micro_step]))
            if "attention_mask" in batch:  # real tokens vs padded slots, for throughput and padding
                self._count(tokens=int(batch["attention_mask"].sum()), slots=batch["attention_mask"].numel())
            sync = i == o.grad_accum - 1  # gradients are all-reduced once per step, not per micro-batch
            with nullcontext() if sync else acc.no_sync(self.model):
                with self.precision.autocast():
                    out = self.forward(self.model, to_device(batch, acc.device))
                acc.backward(self.precision.scale(out["loss"] / o.grad_accum))
            add_sums(self.window, out)
            state.micro_step += 1
        if o.max_grad_norm:
            self.precision.unscale(self.optimizer)
            acc.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)
        self.precision.step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self._count(seconds=time.perf_counter() - start, steps=1)

    def _count(self, **amounts: float) -> None:
        for key, value in amounts.items():
            self.total[key] += value
            self.recent[key] += value

    def flush(self, state: TrainState) -> dict[str, Any]:
        """The log record for the steps since the last one (metrics summed across processes). "lr" is the
        scheduled --lr, whatever lr_scale gives the first parameter group."""
        self.last_train = self.summarize(reduce_sums(self.acc, self.window))
        recent, processes = self.recent, self.acc.num_processes
        speed = {"step_s": recent["seconds"] / max(recent["steps"], 1)}
        if recent["slots"]:
            speed |= {"tokens_per_s": recent["tokens"] * processes / max(recent["seconds"], 1e-9),
                      "padding_fraction": 1 - recent["tokens"] / recent["slots"]}
        self.window, self.recent = {}, dict.fromkeys(self.recent, 0)
        base = self.scheduler.base_lrs[0]  # 0 with --lr 0 (or a first group scaled to 0): no schedule to read
        return {"step": state.step, "epoch": round(state.micro_step / self.order.per_epoch, 4),
                "lr": self.o.lr * (self.scheduler.get_last_lr()[0] / base if base else 1.0), **self.last_train, **speed}


class EarlyStop:
    """Best evaluation so far (kept in TrainState, so it survives a resume) and its weights: held in memory
    (a CPU copy, on every process) and written into each checkpoint beside that TrainState, so a kill can
    never leave weights of a step the resumed state does not name."""

    FILE = "best.pt"

    def __init__(self, metric: str | None, greater: bool, patience: int, acc: Accelerator) -> None:
        self.metric, self.greater, self.patience, self.acc = metric, greater, patience, acc
        self.weights: dict[str, torch.Tensor] | None = None

    def stop(self, state: TrainState) -> bool:
        return bool(self.metric and self.patience and state.bad_evals >= self.patience)

    def update(self, state: TrainState, metrics: dict[str, float], model: torch.nn.Module) -> None:
        if self.metric is None:
            return
        if self.metric not in metrics:
            raise KeyError(f"best_metric '{self.metric}' is not among the evaluation metrics {sorted(metrics)}")
        value, best = metrics[self.metric], (state.best or {}).get(self.metric)
        if best is None or (value > best if self.greater else value < best):
            state.best, state.bad_evals = {"step": state.step, **metrics}, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.bad_evals += 1

    def save(self, checkpoint: Path) -> None:
        """Into a checkpoint being written (before it is renamed into place), by the main process."""
        if self.weights is not None and self.acc.is_main_process:
            torch.save(self.weights, checkpoint / self.FILE)

    def load(self, checkpoint: Path) -> None:
        """From the checkpoint a run resumes from: the weights its TrainState.best names."""
        if self.metric and (checkpoint / self.FILE).exists():
            self.weights = torch.load(checkpoint / self.FILE, map_location="cpu", weights_only=True)

    def restore(self, state: TrainState, model: torch.nn.Module) -> dict[str, float] | None:
        if self.metric and state.best is not None and self.weights is not None:
            model.load_state_dict(self.weights)
        return state.best


def rows(data: Any, indices: list[int]) -> Any:
    """A datasets.Dataset gives a dict of columns for a list of indices; other datasets a list of rows."""
    return data[indices] if hasattr(data, "column_names") else [data[i] for i in indices]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def call_model(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The default forward: a HF model's output loss."""
    out = model(**batch)
    return {"loss": out["loss"] if isinstance(out, dict) else out.loss}


def add_sums(sums: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
    for key, value in out.items():
        value = value.detach().float()
        sums[key] = sums[key] + value if key in sums else value
    sums["batches"] = sums.get("batches", 0) + torch.ones((), device=out["loss"].device)


def reduce_sums(acc: Accelerator, sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sums over all processes (every process must call this at the same point). Gathered as objects,
    because a process may have had no batch at all (a small evaluation set) and so no keys."""
    local = {k: float(v) for k, v in sums.items()}
    if acc.num_processes == 1:
        return local
    merged: dict[str, float] = {}
    for part in gather_object([local]):
        for key, value in part.items():
            merged[key] = merged.get(key, 0.0) + value
    return merged


def mean_loss(sums: dict[str, float]) -> dict[str, float]:
    """The default summary: mean loss over batches."""
    return {"loss": sums["loss"] / max(sums["batches"], 1)}
