"""Training options every training stage's config inherits, and the choices made from them.

    @dataclass(frozen=True)
    class Config(TrainOptions): ...          # steps/epochs, batch, lr, schedule, precision, checkpoints ...

`run_identity` says which options and inputs make two runs the same run (checkpoints of another
run are never resumed); `resolve_precision` and `resolve_threads` turn `precision` and `threads` into
what accelerate and torch are told.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from accelerate.logging import get_logger

from ..core.artifacts import config_files, input_fingerprint
from ..core.config import SEED_MAX, option, to_dict

log = get_logger(__name__)

# TrainOptions fields that do not change the training trajectory
# (threads: run.json records the count it resolved to, which is what a resume must match). Of these, the ones
# declared `neutral` (resume and checkpointing) are also left out of the artifact's freshness; log_every and
# report_to stay in it (they change what metrics.jsonl and tracking/ hold), as do threads and compile (they change
# the numerics: a run on other threads or compiled is not bitwise the same model)
NOT_RUN_IDENTITY = ("resume", "keep_checkpoints", "report_to", "log_every", "save_every", "checkpoint_limit", "compile",
                    "threads")
# accelerate tracker name -> the package it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim"}
T = TypeVar("T")
# the help of eval_every in stages that evaluate once an epoch by default (eval_every 0)
EVAL_EACH_EPOCH = {"eval_every": "evaluate on dev every N steps; 0 = once an epoch"}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Training fields a stage config inherits (a stage changes their defaults with `stage_defaults`)."""

    steps: int = option(1000, "optimizer steps to train; 0 = from epochs", min=0)
    epochs: float = option(0.0, "passes over the training data, used when steps = 0", min=0.0)
    batch_size: int = option(32, "examples per process per micro-batch", min=1)
    grad_accum: int = option(1, "micro-batches per optimizer step (effective batch = batch_size x grad_accum x processes)", min=1)
    lr: float = option(1e-4, "peak learning rate (AdamW)", min=0.0)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and norms)", min=0.0)
    warmup: float = option(0.1, "warmup: a fraction of the steps (< 1) or a number of steps (>= 1)", min=0.0)
    schedule: Literal["linear", "cosine", "constant"] = option("linear", "learning-rate decay after warmup")
    max_grad_norm: float = option(1.0, "clip gradients to this global norm (0 = no clipping)", min=0.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "autocast precision; auto = bf16 on GPUs that have it (else fp16) and on CPUs with AMX, else fp32")
    log_every: int = option(10, "log training metrics every N steps", min=1)
    eval_every: int = option(200, "evaluate every N steps (0 = only at the start and the end)", min=0)
    save_every: int = option(200, "checkpoint every N steps (0 = with each evaluation); a rerun after a kill resumes from the last", min=0,
                            neutral=True)
    checkpoint_limit: int = option(2, "checkpoints kept while training (oldest removed first)", min=1, neutral=True)
    keep_checkpoints: bool = option(False, "keep NAME.checkpoints/ after the artifact is published", neutral=True)
    resume: bool = option(True, "resume from NAME.checkpoints/ when a killed run left checkpoints there",
                          neutral=True)
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "aim"] = option(
        "none", "also log metrics to this tracker (through accelerate); tensorboard and aim write under tracking/ in the artifact")
    compile: bool = option(False, "torch.compile the model: off by default; on CPU pretrain 0.77x, finetune 1.06x after "
                                  "51 s of compiling, distill 0.34x, never bit-identical (docs/performance.md); try it on GPUs")
    seed: int = option(42, "seed for initial weights, batch order, masking and dropout", min=0, max=SEED_MAX)
    threads: int = option(0, "CPU intra-op threads; 0 = decided at the run's first start (OMP_NUM_THREADS, else a probe "
                             "of the load) and kept by every resume, so a resumed run ends bitwise equal", min=0)

    def __post_init__(self) -> None:
        if self.steps == 0 and self.epochs == 0:
            raise ValueError("set steps or epochs (both are 0)")


def run_identity(config: Any, inputs: dict[str, list[Path]], also_ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Trainer's `run_config`: the config without the fields that only log, checkpoint or report (a rerun with
    other values of those still resumes), a file the config names as its content (config_files), plus the inputs'
    fingerprints under "inputs"."""
    ignore = set(NOT_RUN_IDENTITY) | set(also_ignore)
    return {**{k: v for k, v in {**to_dict(config), **config_files(config)}.items() if k not in ignore},
            "inputs": {k: [input_fingerprint(p, {}) for p in v] for k, v in inputs.items()}}


def resolve_precision(choice: str) -> str:
    """accelerate's mixed_precision for a `precision` option. auto: bf16 on GPUs that support it (else
    fp16); on CPU bf16 only with AMX, where autocast measured 1.6-2x at matching loss (docs/performance.md)."""
    if choice != "auto":
        return "no" if choice == "fp32" else choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if amx else "no"


def resolve_threads(requested: int, recorded: int | None) -> int:
    """Intra-op threads for CPU training, decided once per run: `threads` when set, else what the run's
    first start chose (run.json: a resumed run must compute as the killed one did to end bitwise equal),
    else OMP_NUM_THREADS, else a short probe of the current load (an MLP step with all cores, then with
    one) that keeps all cores only when they are clearly faster: on a shared 2-core machine two threads
    measured 4-12x slower than one (docs/performance.md). Leaves torch's setting as it found it."""
    if requested or recorded:
        return requested or int(recorded or 0)
    cores = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or cores == 1:
        return cores
    net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    x = torch.randn(512, 256)

    def probe(threads: int) -> float:
        torch.set_num_threads(threads)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            net(x).sum().backward()
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    try:
        threads = cores if probe(cores) * 1.2 < probe(1) else 1
    finally:
        torch.set_num_threads(cores)
    log.info(f"{threads} intra-op thread(s) of {cores} (OMP_NUM_THREADS unset; probe of the current load)",
             main_process_only=True)
    return threads


def cpu_processes() -> bool:
    """Several processes (torchrun / `accelerate launch --multi_gpu`) on a machine without CUDA: accelerate
    only joins them into one gloo process group when told they are CPU processes; otherwise each would
    train alone, believing it is the main process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def stage_defaults(values: Mapping[str, Any], help: Mapping[str, str] | None = None) -> Callable[[type[T]], type[T]]:
    """A stage's own defaults for inherited option fields (TrainOptions', or any other dataclass base's), as
    data (place it under @dataclass):

        @dataclasses.dataclass(frozen=True)
        @stage_defaults({"epochs": 3.0, "lr": 5e-5}, help={"eval_every": "...; 0 = once an epoch"})
        class Config(TrainOptions): ...

    Each field keeps its type, range and place (CLI flags and YAML keys unchanged); `help` replaces the
    help of a field whose meaning the stage changes."""

    def apply(cls: type[T]) -> type[T]:
        bases = [b for b in cls.__bases__ if dataclasses.is_dataclass(b)]
        inherited = {f.name: f for b in reversed(bases) for f in dataclasses.fields(b)}
        hints = {k: v for b in reversed(bases) for k, v in typing.get_type_hints(b).items()}
        unknown = sorted(set(values) - set(inherited)) + sorted(set(help or {}) - set(inherited))
        if unknown:
            raise TypeError(f"stage_defaults: {unknown} are not inherited option fields")  # a bug in a stage, not user input
        annotations = cls.__dict__.get("__annotations__", {})
        cls.__annotations__ = annotations  # the class's own, never a base's
        for name in {**values, **(help or {})}:
            field = inherited[name]
            metadata = {**field.metadata, **({"help": help[name]} if help and name in help else {})}
            annotations[name] = hints[name]
            setattr(cls, name, dataclasses.field(default=values.get(name, field.default), metadata=metadata))
        return cls

    return apply
