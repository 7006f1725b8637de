"""Stage `finetune`: a BERT-family checkpoint + labelled data -> a sequence classifier.

    nlp-pipe finetune --checkpoint runs/bert --train runs/seg_train --dev runs/seg_dev --test runs/seg_test \
        --out runs/clf --epochs 3 --lr 5e-5
    accelerate launch --multi_gpu -m nlp_pipe finetune ...      # several GPUs (bf16 autocast by default)

Inputs as for `textcnn`: labelled `segment` artifacts, dev and test optional (without them train is
split 7:1:2, stratified). The checkpoint is any local directory AutoModelForSequenceClassification
and AutoTokenizer load: a pretrain, expand or distill artifact, another finetune artifact, or a
downloaded model. Writes a HuggingFace directory (config with id2label, weights, tokenizer) plus
labels.json (labels, max_seq_len, the F1-optimal threshold for binary tasks), metrics.json,
metrics.jsonl, training_curves.png, confusion_matrix.png. `nlp-pipe predict DIR` and
`nlp_pipe.TextClassifier.load(DIR)` use it; so does AutoModelForSequenceClassification.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .. import checkpoints, plots
from ..config import option
from ..data import classification as cls_data
from ..data.labelled import Splits, best_threshold, load_splits, stratified_folds
from ..errors import UserError
from ..fit import Evaluation
from ..predict import BertClassifier
from ..training import TrainOptions, Trainer, run_identity
from . import Input, Result

NAME = "finetune"
VERSION = 1
DISTRIBUTED = True
_LAYER = re.compile(r"\.layer\.(\d+)\.")

INPUTS = {
    "checkpoint": Input("a BERT-family model directory (pretrain, expand, distill, finetune artifact or any local HF model)",
                        kind="any", stages=("pretrain", "expand", "distill", "finetune")),
    "train": Input("labelled training data (segment artifact)", kind="artifact", stages=("segment",)),
    "dev": Input("labelled dev data for early stopping and the threshold", kind="artifact", required=False, stages=("segment",)),
    "test": Input("labelled test data", kind="artifact", required=False, stages=("segment",)),
}

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Config(TrainOptions):
    steps: int = option(0, "optimizer steps; 0 = from epochs", min=0)
    epochs: float = option(3.0, "passes over the training data (when steps = 0)", min=0.0)
    batch_size: int = option(32, "texts per process per micro-batch", min=1)
    lr: float = option(5e-5, "peak learning rate of the top layer and the classifier (AdamW)", min=0.0)
    warmup: float = option(0.1, "warmup: a fraction of the steps (< 1) or a number of steps (>= 1)", min=0.0)
    layer_decay: float = option(1.0, "layer-wise learning-rate decay: layer i of L gets lr x decay^(L-i), embeddings "
                                     "decay^(L+1) (1 = off; 0.8-0.95 is usual)", min=0.01, max=1.0)
    max_seq_len: int = option(0, "tokens per text, [CLS]/[SEP] included; 0 = the len_percentile of training lengths", min=0, max=512)
    len_percentile: float = option(95.0, "percentile of training token lengths used when max_seq_len = 0", min=1.0, max=100.0)
    dropout: float = option(-1.0, "classifier dropout; -1 = the checkpoint's hidden dropout", min=-1.0, max=0.95)
    eval_every: int = option(0, "evaluate on dev every N steps; 0 = once an epoch", min=0)
    save_every: int = option(0, "checkpoint every N steps; 0 = at each evaluation (a rerun after a kill resumes)", min=0)
    patience: int = option(3, "stop after this many evaluations without dev improvement (0 = never)", min=0)
    monitor: Literal["macro_f1", "accuracy", "loss"] = option("macro_f1", "dev figure for early stopping and the best checkpoint")
    folds: int = option(0, "K-fold cross-validation on train+dev, reported beside the model (0 = off)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or at least 2")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    checkpoint = inputs["checkpoint"][0]
    if config.folds and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("finetune: --folds runs in one process; launch it without accelerate launch")
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    tokenizer = _tokenizer(checkpoint)
    limit = min(512, _max_positions(checkpoint))
    lengths = cls_data.token_lengths(tokenizer, splits.train["text"])
    max_len = min(config.max_seq_len, limit) if config.max_seq_len else cls_data.auto_max_len(lengths, config.len_percentile, limit)
    encoded = {name: cls_data.encode(ds, tokenizer, splits.labels, max_len)
               for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model, head = _model(checkpoint, splits.labels, config)
        summary = _train(trainer, model, config, encoded["train"][0], encoded["dev"][0], tokenizer.pad_token_id, len(splits.labels))
        trainer.save_pretrained(model, tokenizer)
        is_main, device = trainer.is_main, f"{trainer.accelerator.device}, {summary.precision}, {summary.processes} process(es)"
    cleanup = [] if config.keep_checkpoints else [trainer.work]
    if not is_main:
        return Result(metrics={"steps": summary.steps}, cleanup=cleanup)
    classifier = BertClassifier(model.float(), tokenizer, splits.labels, None, max_len)
    metrics, threshold = final_metrics(classifier, splits)
    if config.folds:
        metrics["cross_validation"] = _cross_validate(config, checkpoint, splits, tokenizer, max_len, out)
    truncated = {name: enc.truncated for name, (_, enc) in encoded.items()}
    write_classifier_files(out, splits, max_len, threshold, metrics)
    check = check_saved(out, classifier, splits)
    summary_metrics = {"labels": len(splits.labels), "max_seq_len": max_len, "steps": summary.steps,
                       "resumed_from_step": summary.resumed_from, "best_step": (summary.best or {}).get("step"),
                       "padding_fraction": round(summary.padding_fraction, 4), "tokens_per_s": round(summary.tokens_per_s, 1),
                       "truncated": truncated, "split": splits.origin, "head": head, "reload_check": check,
                       **{f"{s}_{k}": v for s in ("dev", "test") if s in metrics for k, v in metrics[s].items()
                          if k in ("accuracy", "macro_f1")}, **({"threshold": threshold} if threshold is not None else {})}
    rows = sum(len(ds) for ds, _ in encoded.values())
    return Result({"rows_in": rows, "rows_out": rows, "dropped": {}}, summary_metrics,
                  _report(config, splits, metrics, summary, max_len, truncated, model), {"device": device}, cleanup)


def _train(trainer: Trainer, model: Any, config: Config, train, dev, pad_id: int, num_labels: int):
    per_epoch = trainer.steps_per_epoch(len(train))
    every = config.eval_every or per_epoch
    if not config.save_every:  # checkpoint with each evaluation: a kill loses at most one evaluation interval
        trainer.options = dataclasses.replace(trainer.options, save_every=every)

    def forward(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        return {"loss": loss, **cls_data.confusion_sums(logits, batch["labels"], num_labels)}

    return trainer.fit(model, train, collate=cls_data.Collator(pad_id), forward=forward, eval_data=dev.select(np.argsort(dev["length"], kind="stable")),
                       summarize=lambda sums: cls_data.classification_summary(sums, num_labels),
                       best_metric=config.monitor, greater_is_better=config.monitor != "loss", patience=config.patience,
                       eval_steps=every, lengths=train["length"],
                       lr_scale=_layer_decay(model.config.num_hidden_layers, config.layer_decay))


def _layer_decay(layers: int, decay: float):
    """Deeper layers learn faster: the head and pooler at lr, layer i at lr x decay^(layers - i), embeddings lowest."""
    if decay == 1.0:
        return None

    def scale(name: str) -> float:
        if (match := _LAYER.search(name)) is not None:
            return decay ** (layers - int(match.group(1)))
        return decay ** (layers + 1) if ".embeddings." in f".{name}" else 1.0

    return scale


def _tokenizer(checkpoint: Path) -> Any:
    checkpoints.require(checkpoint, NAME)
    tokenizer = checkpoints.load_tokenizer(checkpoint)
    if tokenizer.pad_token_id is None:
        raise UserError(f"finetune: the tokenizer in {checkpoint} has no padding token")
    return tokenizer


def _max_positions(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 512))


def _model(checkpoint: Path, labels: list[str], config: Config) -> tuple[Any, str]:
    """The checkpoint with a classification head for `labels`; says whether the head is new or kept."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = AutoConfig.from_pretrained(str(checkpoint))
    kept = base.architectures and any(a.endswith("ForSequenceClassification") for a in base.architectures) \
        and [base.id2label.get(i) for i in range(len(base.id2label))] == labels
    extra = {} if config.dropout < 0 else {"classifier_dropout": config.dropout}
    # quiet: "newly initialised classifier" is the point of fine-tuning
    model = checkpoints.load_model(AutoModelForSequenceClassification, checkpoint, num_labels=len(labels),
                                   id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                                   ignore_mismatched_sizes=True, **extra)
    return model, "kept from the checkpoint" if kept else "new (random)"


def final_metrics(classifier: BertClassifier, splits: Splits) -> tuple[dict, float | None]:
    """Dev and test scores of the best weights with the offline metrics; binary tasks get the dev F1-optimal threshold."""
    dev_eval = evaluate_split(classifier, splits, splits.dev)
    threshold = best_threshold(dev_eval.probs[:, 1], dev_eval.gold)[0] if len(splits.labels) == 2 else None
    metrics = {"dev": dev_eval.metrics(threshold)}
    if splits.test is not None:
        test_eval = evaluate_split(classifier, splits, splits.test)
        metrics["test"] = test_eval.metrics(threshold)
        if threshold is not None:
            metrics["test_argmax"] = test_eval.metrics(None)
    return metrics, threshold


def evaluate_split(classifier: BertClassifier, splits: Splits, ds) -> Evaluation:
    probs = classifier.predict(list(ds["text"]))
    gold = splits.ids(ds)
    loss = float(-np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None)).mean()) if len(gold) else 0.0
    return Evaluation(probs, gold, loss)


def _cross_validate(config: Config, checkpoint: Path, splits: Splits, tokenizer: Any, max_len: int, out: Path) -> dict:
    """Mean and standard deviation of held-out scores over K stratified folds of train+dev, each fold a fresh
    model from the checkpoint (a tenth of its training part for early stopping)."""
    import datasets

    pooled = datasets.concatenate_datasets([splits.train, splits.dev])
    gold = splits.ids(pooled)
    scores: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    fold_config = dataclasses.replace(config, save_every=10**9, resume=False)
    for k, (train_idx, held_idx) in enumerate(stratified_folds(gold, config.folds, config.seed)):
        inner_train, inner_dev = stratified_folds(gold[train_idx], 9, config.seed)[0]
        part = pooled.select(train_idx)
        train, _ = cls_data.encode(part.select(inner_train), tokenizer, splits.labels, max_len)
        dev, _ = cls_data.encode(part.select(inner_dev), tokenizer, splits.labels, max_len)
        fold_out = out / f".fold{k}"
        fold_out.mkdir()
        with Trainer(fold_config, fold_out, run_config={"fold": k}, name=f"{NAME} fold {k + 1}/{config.folds}") as trainer:
            model, _ = _model(checkpoint, splits.labels, config)
            _train(trainer, model, fold_config, train, dev, tokenizer.pad_token_id, len(splits.labels))
        held = pooled.select(held_idx)
        result = evaluate_split(BertClassifier(model.float(), tokenizer, splits.labels, None, max_len), splits, held).metrics(None)
        for key in scores:
            scores[key].append(result[key])
        log.info("fold %d/%d: accuracy %.4f, macro_f1 %.4f", k + 1, config.folds, result["accuracy"], result["macro_f1"])
        _remove_tree(fold_out, trainer.work)
    return {key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": v} for key, v in scores.items()}


def _remove_tree(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def write_classifier_files(out: Path, splits: Splits, max_len: int, threshold: float | None, metrics: dict) -> None:
    meta = {"labels": splits.labels, "threshold": threshold, "max_seq_len": max_len}
    (out / "labels.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    split = "test" if "test" in metrics else "dev"
    plots.confusion(metrics[split]["confusion_matrix"], splits.labels, out / "confusion_matrix.png", f"{split} confusion matrix")


def check_saved(out: Path, classifier: BertClassifier, splits: Splits) -> str:
    """The artifact, reloaded as users load it, gives the trained model's probabilities."""
    from ..predict import TextClassifier

    texts = list(splits.dev.select(range(min(16, len(splits.dev))))["text"])
    diff = float(np.abs(TextClassifier.load(out).predict(texts) - classifier.predict(texts)).max())
    if diff > 1e-4:
        raise AssertionError(f"the saved classifier's probabilities differ from the trained model's by {diff}")
    return f"TextClassifier.load reloads it; probabilities match (max diff {diff:.1e})"


def _report(config: Config, splits: Splits, metrics: dict, summary: Any, max_len: int, truncated: dict, model: Any) -> str:
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    best = summary.best or {}
    lines = ["## Fine-tuning",
             f"{type(model).__name__}: {c.num_hidden_layers} layers x {c.hidden_size} hidden, {params:,} parameters; "
             f"labels {', '.join(splits.labels)}; data {splits.origin}.",
             f"{summary.steps} steps{f' (resumed at step {summary.resumed_from})' if summary.resumed_from else ''}, "
             f"best dev {config.monitor} at step {best.get('step', '-')}; max_seq_len {max_len} "
             f"(texts cut: {', '.join(f'{k} {v}' for k, v in truncated.items())}); padding {summary.padding_fraction:.1%}, "
             f"{summary.tokens_per_s:,.0f} real tokens/s, {summary.precision}.",
             "", "| split | accuracy | macro F1 |", "| --- | --- | --- |"]
    lines += [f"| {s} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for s, m in metrics.items() if s in ("dev", "test")]
    if "test_argmax" in metrics:
        lines.append(f"| test (argmax, no threshold) | {metrics['test_argmax']['accuracy']:.4f} | {metrics['test_argmax']['macro_f1']:.4f} |")
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        lines += ["", f"{config.folds}-fold cross-validation: accuracy {cv['accuracy']['mean']:.4f} ± {cv['accuracy']['std']:.4f}, "
                  f"macro F1 {cv['macro_f1']['mean']:.4f} ± {cv['macro_f1']['std']:.4f}"]
    lines += ["", "![training curves](training_curves.png)", "", "![confusion matrix](confusion_matrix.png)"]
    return "\n".join(lines)
