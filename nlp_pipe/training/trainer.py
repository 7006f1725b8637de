"""The one accelerate training loop that pretrain, textcnn, finetune and distill share.

    @dataclass(frozen=True)
    class Config(TrainOptions): ...                  # steps/epochs, batch, lr, schedule, checkpoints ...

    with Trainer(config, out, run_config=run_identity(config, inputs), name="finetune") as trainer:
        model = build_model()                        # after Trainer(): seeded, same weights on every process
        summary = trainer.fit(model, train_dataset, collate=collate, forward=forward, eval_data=dev_dataset,
                              summarize=summarize, best_metric="accuracy", patience=3)
        trainer.save_pretrained(hf_model, tokenizer)  # written by the main process only
    if not trainer.is_main:
        return trainer.secondary_result()            # the main process alone evaluates, reports and publishes
    ...
    return Result(counts, metrics, report, cleanup=trainer.cleanup)

One process or many (`accelerate launch`), CPU or GPU: that is accelerate. The run's precision (fp32, or
bf16/fp16 autocast with fp16's GradScaler) and `compile` are applied here, not by accelerate, which keeps them
in process-wide state that one process training several stages could not change (loop.Precision).
Here: AdamW (no decay on biases and norms) with warmup + linear/cosine decay, gradient accumulation
and clipping, a seeded batch order whose position alone says what comes next, periodic evaluation,
early stopping with the best weights restored, metrics.jsonl, a curves PNG, TensorBoard on request,
and checkpoints with exact resume. Those live beside the artifact (`artifacts.work_dir`), because
the runner builds each attempt in a fresh temporary directory:

    NAME.checkpoints/run.json           config + inputs of the run and the CPU thread count its first start
                                        chose; other values refuse to resume
    NAME.checkpoints/metrics.jsonl      every logged record; copied into the artifact at the end
    NAME.checkpoints/step_000500/       accelerator.save_state: model, optimizer, RNG, scheduler, trainer
                                        state; data_position.json says where the data stood; best.pt the
                                        weights of the best evaluation so far (with best_metric)
    NAME.checkpoints/tracking/          with report_to tensorboard or aim; copied into the artifact at the end

`trainer.cleanup` is that directory unless keep_checkpoints: the stage hands it to the runner in its
Result, and the runner removes it once the artifact is published.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, broadcast_object_list, set_seed
from transformers import get_scheduler

from ..core import artifacts, console, distributed
from ..core.artifacts import saved_steps
from ..core.contract import Result
from ..core.errors import UserError, as_os_error
from ..core.process import Interrupted, check_interrupted
from .loop import EarlyStop, Forward, Precision, StepLoop, TrainState, add_sums, call_model, mean_loss, reduce_sums, rows, to_device
from .options import TRACKERS, TrainOptions, cpu_processes, resolve_precision, resolve_threads
from .records import RECORD_FIELDS, MetricsLog, plot_curves

log = get_logger(__name__)

METRICS = "metrics.jsonl"
CURVES_PNG = "training_curves.png"
RUN_JSON = "run.json"
POSITION_JSON = "data_position.json"
TRACKING = "tracking"
WORK_FILES = (RUN_JSON, METRICS, "step_*", ".step_*.tmp", TRACKING)  # all the trainer writes in its work dir


@dataclasses.dataclass
class Summary:
    steps: int
    resumed_from: int
    precision: str
    processes: int
    train_seconds: float  # this session's training time, without evaluation and checkpoints
    tokens: int  # real (non-padding) tokens this session, all processes
    padding_fraction: float
    last_train: dict[str, float]
    last_eval: dict[str, float]
    best: dict[str, float] | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def arithmetic(self) -> str:
        """The precision in words for a report: accelerate's mixed_precision "no" reads as fp32."""
        return "fp32" if self.precision == "no" else f"mixed precision {self.precision}"


class Trainer:
    def __init__(self, options: TrainOptions, out: Path, *, run_config: dict[str, Any], name: str, phase: str = "",
                 work: Path | None = None, unused_parameters: bool = False) -> None:
        """`run_config`: what makes two runs the same run (config without logging fields, input
        fingerprints); checkpoints of a different run are never resumed. `phase` names one of several
        trainings of one stage (e.g. distillation's intermediate and prediction steps): each gets its own
        NAME.PHASE.checkpoints/, metrics_PHASE.jsonl and training_curves_PHASE.png. `work`: another
        checkpoint directory (it must be the same path on every process, e.g. `artifacts.work_dir`).
        `unused_parameters`: some trainable parameters get no gradient from the loss (a distilled student's
        head while only its layers are distilled): DDP is then told to find them each step
        (find_unused_parameters; without it a multi-process run fails in the first backward)."""
        self.options, self.out, self.name, self.phase = options, out, name, phase
        self.work = work or artifacts.work_dir(out, f"{phase}.checkpoints" if phase else "checkpoints")
        if distributed.is_main():  # before any work: a folder of the user's there is refused, never deleted later
            artifacts.claim_work_dir(self.work, WORK_FILES, name)
        self.metrics_name = f"metrics_{phase}.jsonl" if phase else METRICS
        self.curves_name = f"training_curves_{phase}.png" if phase else CURVES_PNG
        self.precision = resolve_precision(options.precision)
        self.tracker = None if options.report_to == "none" else options.report_to
        if self.tracker and not importlib.util.find_spec(TRACKERS[self.tracker]):
            raise UserError(f"{name}: report_to {self.tracker} needs the {TRACKERS[self.tracker]} package "
                            f"(pip install {TRACKERS[self.tracker]})")
        project = ProjectConfiguration(project_dir=str(self.work), logging_dir=str(self.work / TRACKING))
        # What accelerate keeps process-wide (AcceleratorState: mixed precision, dynamo backend, CPU or not) is the
        # same for every Accelerator of the package, so a second training in this process (a pipeline's next stage,
        # a test) finds the state it would have set and nothing needs the private reset; the run's precision and
        # compile are applied by this Trainer (loop.Precision, fit). The other arguments are this instance's own.
        self.accelerator = Accelerator(mixed_precision="no", dynamo_backend="no", cpu=cpu_processes(),
                                       project_config=project, log_with=self.tracker,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused_parameters)])
        if self.precision == "bf16" and self.accelerator.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"{name}: precision bf16: this GPU has no bf16 arithmetic; use fp16 (or auto) or fp32")
        self.amp = Precision(self.precision, self.accelerator.device)
        self.summary: Summary | None = None  # set by fit
        self._threads_before = torch.get_num_threads()
        self.run_config = {"config": run_config, "processes": self.accelerator.num_processes}
        self.threads = self._threads() if self.accelerator.device.type == "cpu" else None
        if self.threads:
            torch.set_num_threads(self.threads)  # for this block only: __exit__ restores what was there
        self.run_config["threads"] = self.threads
        self.backend = distributed.backend() or "none"
        # where and how it trains, for the manifest (readable after the accelerator state is gone)
        self.device = (f"{self.accelerator.device} x{self.accelerator.num_processes}, {self.precision}"
                       + (f", {self.threads} thread(s)" if self.threads else "")
                       + (f", {self.backend}" if self.accelerator.num_processes > 1 else ""))
        set_seed(options.seed)  # the model built next gets the same weights on every process and every rerun

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self._threads_before)  # what runs next in this process (e.g. predict) keeps its own

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def cleanup(self) -> list[Path]:
        """The checkpoint directory for the runner to remove once the artifact is published (unless kept)."""
        return [] if self.options.keep_checkpoints else [self.work]

    def secondary_result(self) -> Result:
        """What a non-main process returns after training: the main process evaluates, reports and publishes."""
        return Result(metrics={"steps": self.summary.steps if self.summary else 0}, cleanup=self.cleanup)

    def _threads(self) -> int:
        """The run's thread count (options.resolve_threads): decided by the main process, which reads what
        an earlier start of the same run recorded in run.json (its own, else another phase's of the same stage
        run: a rerun that resumes the first phase must train the next ones as the killed run would have), and
        the same on every process."""
        recorded = None
        if self.accelerator.is_main_process and self.options.resume:
            artifact = artifacts.final_path(self.out).name
            phases = sorted(self.work.parent.glob(f"{glob.escape(artifact)}.*checkpoints/{RUN_JSON}"))
            for run_file in [self.work / RUN_JSON, *phases]:
                try:
                    previous = json.loads(run_file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if {k: previous.get(k) for k in self.run_config} == self.run_config and previous.get("threads"):
                    recorded = previous["threads"]
                    break
        box = [resolve_threads(self.options.threads, recorded) if self.accelerator.is_main_process else 0]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(box)
        return int(box[0])

    def steps_per_epoch(self, n_examples: int) -> int:
        """Optimizer steps in one pass over `n_examples` (e.g. eval_steps for one evaluation an epoch)."""
        return max(1, self._batches_per_epoch(n_examples) // self.options.grad_accum)

    def total_steps(self, n_examples: int) -> int:
        per_epoch = self._batches_per_epoch(n_examples) / self.options.grad_accum
        return self.options.steps or max(1, math.ceil(self.options.epochs * per_epoch))

    def fit(self, model: torch.nn.Module, train: Any, *, collate: Callable[[Any], dict[str, torch.Tensor]],
            forward: Forward | None = None, transform: Callable | None = None, eval_data: Any = None,
            summarize: Callable[[dict[str, float]], dict[str, float]] | None = None,
            best_metric: str | None = None, greater_is_better: bool = True, patience: int = 0,
            eval_steps: int | None = None, lengths: Any = None,
            lr_scale: Callable[[str], float] | None = None) -> Summary:
        """Train `model` on `train` (a datasets.Dataset or any sized, indexable dataset) to the configured steps.

        collate: dataset rows -> tensors (a datasets.Dataset gives it a dict of columns, else a list of rows).
        transform(batch, rng): optional CPU-side change per batch with a numpy Generator seeded by the batch's
            position (e.g. dynamic masking): a resumed run sees exactly what the uninterrupted one would.
        forward(model, batch) -> dict of scalar tensors with "loss"; default `model(**batch).loss`. Every
            value is summed over batches (and processes) and handed to `summarize`, which turns the sums
            into metrics (default: mean loss). The same forward on `eval_data` gives evaluation metrics.
        best_metric / greater_is_better / patience: keep the weights of the best evaluation and restore
            them at the end; stop after `patience` evaluations without improvement (0 = never).
        eval_steps: evaluate every N steps instead of options.eval_every (once an epoch:
            `trainer.steps_per_epoch(len(train))`).
        lengths: one length per training example: batches then group similar lengths (dynamic padding
            wastes little) while their order stays random and resumable.
        lr_scale(parameter name) -> multiplier of the learning rate (e.g. layer-wise decay).
        """
        acc, o = self.accelerator, self.options
        per_epoch = self._batches_per_epoch(len(train))
        total = self.total_steps(len(train))
        every = o.eval_every if eval_steps is None else eval_steps
        save_every = o.save_every or every  # 0: with each evaluation, so a kill loses at most one interval
        optimizer = make_optimizer(model, o, lr_scale)
        scheduler = get_scheduler("constant_with_warmup" if o.schedule == "constant" else o.schedule, optimizer,
                                  num_warmup_steps=_warmup_steps(o.warmup, total), num_training_steps=total)
        model, optimizer = acc.prepare(model, optimizer)
        state = TrainState()
        acc.register_for_checkpointing(scheduler, state)  # our scheduler steps once per step, not once per process
        if self.amp.scaler is not None:  # fp16: the loss scale is part of where training stands
            acc.register_for_checkpointing(self.amp.scaler)
        stopper = EarlyStop(best_metric, greater_is_better, patience, acc)
        resumed = self._resume(state, stopper)
        self._header(len(train), total, resumed)
        metrics_log = MetricsLog(self.work / METRICS, self.is_main, keep_until=state.step)
        if self.tracker:
            acc.init_trackers(self.name, config=_flat(self.run_config["config"]))
        # compiled for the training steps only: checkpoints, the best weights and evaluation use the module itself,
        # whose state_dict keys then stay those of an eager run (a compiled module's carry "_orig_mod.")
        stepped = torch.compile(model) if o.compile else model
        loop = StepLoop(acc, o, self.amp, stepped, optimizer, scheduler, train, collate, forward or call_model, transform,
                        summarize or mean_loss, per_epoch, None if lengths is None else np.asarray(lengths))

        def evaluate() -> dict[str, float]:
            return self.evaluate(model, eval_data, collate, forward, transform, summarize)

        if eval_data is not None and state.step == 0:  # where the curve starts
            self._log(metrics_log, {"split": "eval", "step": 0, **evaluate()})
        model.train()  # from_pretrained returns eval mode: without this, dropout would stay off after a resume
        progress = console.progress(total=total, initial=state.step, desc=self.name, unit="step", disable=not self.is_main)
        try:
            while state.step < total and not stopper.stop(state):
                check_interrupted()
                loop.step(state)
                progress.update(1)
                if state.step % o.log_every == 0 or state.step == total:
                    self._log(metrics_log, {"split": "train", **loop.flush(state)})
                if eval_data is not None and ((every and state.step % every == 0) or state.step == total):
                    loop.last_eval = evaluate()
                    self._log(metrics_log, {"split": "eval", "step": state.step, **loop.last_eval})
                    stopper.update(state, loop.last_eval, acc.unwrap_model(model))
                if save_every and state.step % save_every == 0 and state.step < total:
                    self._save_checkpoint(state, per_epoch, stopper)
        except Interrupted as exc:  # the CLI's line says where training stood and what a rerun resumes from
            saved = saved_steps(self.work)
            exc.step, exc.checkpoint = state.step, int(saved[-1].name.split("_")[1]) if saved else 0
            raise
        finally:
            progress.close()
        saved = saved_steps(self.work)
        if save_every and save_every <= total and state.step and (not saved or saved[-1].name != f"step_{state.step:06d}"):
            # the final step too: an interrupt during the stage's work after training (evaluating, writing) then
            # costs a rerun that work only, not the steps since the last periodic checkpoint
            self._save_checkpoint(state, per_epoch, stopper)
        if state.step == resumed and not loop.last_train:  # resumed at the final step: nothing trained this session
            loop.last_train, loop.last_eval = _last_logged(metrics_log.records())
        best = stopper.restore(state, acc.unwrap_model(model))
        self._finish(metrics_log)
        total_counts = loop.total
        padding = 1 - total_counts["tokens"] / total_counts["slots"] if total_counts["slots"] else 0.0
        self.summary = Summary(state.step, resumed, self.precision, acc.num_processes, total_counts["seconds"],
                               total_counts["tokens"] * acc.num_processes, padding, loop.last_train, loop.last_eval, best)
        return self.summary

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, data: Any, collate: Callable, forward: Forward | None = None,
                 transform: Callable | None = None, summarize: Callable | None = None) -> dict[str, float]:
        """Metrics on `data`: each process takes every n-th batch, sums are added up across processes.
        Transforms draw from a fixed seed, so evaluations at different steps see the same masks."""
        acc, o = self.accelerator, self.options
        model = acc.unwrap_model(model)  # not through DDP: its forward syncs buffers, and shards may differ in batches
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        starts = range(acc.process_index * o.batch_size, len(data), o.batch_size * acc.num_processes)
        for i, start in enumerate(starts):
            batch = collate(rows(data, list(range(start, min(start + o.batch_size, len(data))))))
            if transform is not None:
                batch = transform(batch, np.random.default_rng([o.seed, 1, acc.process_index, i]))
            with self.amp.autocast():
                add_sums(sums, (forward or call_model)(model, to_device(batch, acc.device)))
        model.train()
        return (summarize or mean_loss)(reduce_sums(acc, sums))

    def save_pretrained(self, model: Any, tokenizer: Any = None) -> None:
        """Save a HF model (unwrapped) and tokenizer into the artifact, from the main process."""
        self.accelerator.wait_for_everyone()
        if self.is_main:
            model.save_pretrained(str(self.out), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(self.out))
        self.accelerator.wait_for_everyone()

    def _batches_per_epoch(self, n_examples: int) -> int:
        global_batch = self.options.batch_size * self.accelerator.num_processes
        if n_examples < global_batch:
            raise UserError(f"{self.name}: {n_examples} training examples do not fill one batch of {global_batch} "
                            f"(batch_size {self.options.batch_size} x {self.accelerator.num_processes} processes); "
                            "lower batch_size or add data")
        return n_examples // global_batch  # the incomplete last batch is left out: every step sees full batches

    def _header(self, examples: int, total: int, resumed: int) -> None:
        """What this run will do, once, from the main process: the terminal (as HF's no_trainer scripts
        print "***** Running training *****") and stage.log."""
        if not self.is_main:
            return
        o, processes = self.options, self.accelerator.num_processes
        lines = [f"***** {self.name}: training{' (' + self.phase + ')' if self.phase else ''} *****",
                 f"  examples {examples:,}; batch {o.batch_size} per process x {o.grad_accum} accumulation x {processes} "
                 f"process(es) = {o.batch_size * o.grad_accum * processes} per step",
                 f"  steps {total:,}" + (f" (resuming at step {resumed})" if resumed else ""),
                 f"  precision {'fp32' if self.precision == 'no' else self.precision}; device {self.accelerator.device}"
                 + (f"; threads {self.threads}" if self.threads else ""),
                 f"  processes {processes}; backend {self.backend}"]
        console.announce("\n".join(lines))

    def _resume(self, state: TrainState, stopper: EarlyStop) -> int:
        """Load the newest checkpoint of the same run, if any; returns the step resumed from (0 = fresh)."""
        acc = self.accelerator
        if acc.is_main_process:
            self.work.mkdir(parents=True, exist_ok=True)
            run_file = self.work / RUN_JSON
            previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else None
            same = previous == self.run_config
            if not same and previous is not None and self.options.resume and saved_steps(self.work):
                if not artifacts.discard_other_runs():
                    raise UserError(f"{self.name}: {self.work} holds checkpoints of a run with other settings "
                                    f"({_differences(previous, self.run_config)}); rerun with those settings to resume, "
                                    "or start over with --force (or --no-resume; in nlp-pipe run --set STEP.resume=false)")
                log.info(f"{self.name}: --force: checkpoints of a run with other settings in {self.work} discarded "
                         f"({_differences(previous, self.run_config)})", main_process_only=True)
            if not same or not self.options.resume:  # a fresh start: nothing of an earlier run may leak in
                for old in saved_steps(self.work):
                    shutil.rmtree(old)
                (self.work / METRICS).unlink(missing_ok=True)
                shutil.rmtree(self.work / TRACKING, ignore_errors=True)
            run_file.write_text(json.dumps(self.run_config, indent=2, ensure_ascii=False), encoding="utf-8")
        acc.wait_for_everyone()
        found = saved_steps(self.work)
        if not found:
            return 0
        acc.load_state(str(found[-1]))
        stopper.load(found[-1])
        log.info(f"resumed from {found[-1]} (step {state.step})", main_process_only=True)
        return state.step

    def _save_checkpoint(self, state: TrainState, per_epoch: int, stopper: EarlyStop) -> None:
        """accelerator.save_state (and the best weights so far) into a hidden directory renamed into place:
        a kill while saving leaves the previous checkpoint as the newest complete one."""
        acc = self.accelerator
        final = self.work / f"step_{state.step:06d}"
        tmp = self.work / f".{final.name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if acc.is_main_process:
                epoch, batch = divmod(state.micro_step, per_epoch)
                position = {"step": state.step, "micro_batches": state.micro_step, "epoch": epoch, "batch_in_epoch": batch}
                (tmp / POSITION_JSON).write_text(json.dumps(position), encoding="utf-8")
                stopper.save(tmp)
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
        except BaseException as exc:
            error = as_os_error(exc, self.work)  # before the cleanup below frees the space that ran out
            if acc.is_main_process:  # a failed save (disk full) leaves no half checkpoint behind
                shutil.rmtree(tmp, ignore_errors=True)
            if error is not None and error is not exc:
                raise error from exc
            raise
        if acc.is_main_process:
            for old in saved_steps(self.work)[:-self.options.checkpoint_limit]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _log(self, metrics_log: MetricsLog, record: dict[str, Any]) -> None:
        metrics_log.write(record)
        if self.tracker:
            self.accelerator.log({f"{record['split']}/{k}": v for k, v in record.items()
                                  if isinstance(v, (int, float)) and k != "step"}, step=record["step"])

    def _finish(self, metrics_log: MetricsLog) -> None:
        acc = self.accelerator
        for tracker in acc.trackers:  # not acc.end_training(): it also destroys the process group, which the
            tracker.finish()          # barrier below, a next phase and distributed.close() at exit still need
        acc.wait_for_everyone()
        if self.is_main:
            shutil.copy(self.work / METRICS, self.out / self.metrics_name)
            plot_curves(metrics_log.records(), self.out / self.curves_name, self.name)
            if (self.work / TRACKING).exists():
                shutil.copytree(self.work / TRACKING, self.out / TRACKING, dirs_exist_ok=True)


def make_optimizer(model: torch.nn.Module, options: TrainOptions,
                   lr_scale: Callable[[str], float] | None = None) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights (1-D parameters) get no weight decay, as in BERT. With `lr_scale`,
    each parameter's group gets lr x lr_scale(name) (the schedule then scales every group alike)."""
    grouped: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            grouped.setdefault((p.ndim >= 2, lr_scale(name) if lr_scale else 1.0), []).append(p)
    groups = [{"params": params, "weight_decay": options.weight_decay if decay else 0.0, "lr": options.lr * scale}
              for (decay, scale), params in sorted(grouped.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]
    try:  # the fused kernel (CPU and CUDA) measured ~15% faster per step on a 4x256 BERT on CPU
        return torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.999), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.999), eps=1e-6)


def _last_logged(records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """The last training and evaluation metrics metrics.jsonl holds, as fit's summary has them."""
    last: dict[str, dict[str, float]] = {"train": {}, "eval": {}}
    for record in records:
        if record.get("split") in last:
            last[record["split"]] = {k: v for k, v in record.items() if k != "split" and k not in RECORD_FIELDS}
    return last["train"], last["eval"]


def _warmup_steps(warmup: float, total: int) -> int:
    return int(warmup) if warmup >= 1 else int(round(warmup * total))


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two runs' run.json, in words: option values (a named file's content as 'edited'),
    the names of inputs whose content changed (their fingerprints say nothing to a reader)."""
    a = _flat({**old.get("config", {}), "processes": old.get("processes"), "threads": old.get("threads")})
    b = _flat({**new["config"], "processes": new["processes"], "threads": new["threads"]})
    a_inputs, b_inputs = old.get("config", {}).get("inputs") or {}, new["config"].get("inputs") or {}
    changed = [f"{k}: {'file edited' if str(b.get(k)).startswith('sha256:') else f'{a.get(k)} -> {b.get(k)}'}"
               for k in sorted(a.keys() | b.keys()) if k != "inputs" and a.get(k) != b.get(k)]
    inputs = sorted(k for k in a_inputs.keys() | b_inputs.keys() if a_inputs.get(k) != b_inputs.get(k))
    if inputs:
        changed.append(f"inputs changed: {', '.join(inputs)}")
    return "; ".join(changed[:4]) or "other settings"
