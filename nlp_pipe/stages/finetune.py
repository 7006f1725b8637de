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
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..checkpoints import families, loading
from ..classifiers import baseline as classical
from ..classifiers.decision import save_with_decision
from ..classifiers.labels import LabelInfo
from ..classifiers.loaded import BertClassifier
from ..classifiers.results import Evaluation, check_saved, final_metrics, fold_summary, scores_table, write_classifier_files
from ..core import artifacts
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, LABELS_JSON, METRICS_JSON, WEIGHTS
from ..data import bert_inputs
from ..data.labelled import Splits, load_splits, stratified_folds
from ..metrics.scores import confusion_sums, summarize
from ..training.options import TrainOptions, run_identity
from ..training.trainer import Trainer

NAME = "finetune"
VERSION = 1
DISTRIBUTED = True
OUTPUTS = (CONFIG_JSON, WEIGHTS, LABELS_JSON, METRICS_JSON)
_LAYER = re.compile(r"\.layer\.(\d+)\.")

INPUTS = {
    "checkpoint": Input("a BERT-family model directory (pretrain, expand, distill, finetune artifact or any local HF model)",
                        kind="any", stages=("pretrain", "expand", "distill", "finetune"), hub=True),
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
    baseline: bool = option(True, "also fit the TF-IDF + LR baseline on the same split and report its scores beside these")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or at least 2")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    checkpoint = inputs["checkpoint"][0]
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    tokenizer = _tokenizer(checkpoint)
    limit = min(512, _max_positions(checkpoint))
    lengths = bert_inputs.token_lengths(tokenizer, splits.train["text"])
    max_len = min(config.max_seq_len, limit) if config.max_seq_len else bert_inputs.auto_max_len(lengths, config.len_percentile, limit)
    tokenizer.model_max_length = max_len  # saved with it: pipeline(..., truncation=True) then cuts as training did
    encoded = {name: bert_inputs.encode(ds, tokenizer, splits.labels, max_len)
               for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model, head = _model(checkpoint, splits.labels, config)
        loading.check_vocabulary(tokenizer, model, NAME, checkpoint)
        summary = _train(trainer, model, config, encoded["train"][0], encoded["dev"][0], tokenizer.pad_token_id, len(splits.labels))
        trainer.save_pretrained(model, tokenizer)
    folds = _cross_validate(config, checkpoint, splits, tokenizer, max_len, out) if config.folds else None  # every process trains
    if not trainer.is_main:
        return trainer.secondary_result()
    classifier = BertClassifier(model.float(), tokenizer, splits.labels, None, max_len)
    metrics, threshold = final_metrics(_probabilities(classifier), splits)
    if folds is not None:
        metrics["cross_validation"] = folds
    truncated = {name: enc.truncated for name, (_, enc) in encoded.items()}
    counts = Counts()
    counts.rows_in = counts.rows_out = sum(len(ds) for ds, _ in encoded.values())
    vocabulary = bert_inputs.coverage({name: enc for name, (_, enc) in encoded.items()}, checkpoint, NAME, counts)
    write_classifier_files(out, save_with_decision(out, classifier.model, LabelInfo(splits.labels, threshold, max_len)), metrics)
    check = check_saved(out, *_sample(classifier, splits))
    summary_metrics = {"labels": len(splits.labels), "max_seq_len": max_len, "steps": summary.steps,
                       "resumed_from_step": summary.resumed_from, "best_step": (summary.best or {}).get("step"),
                       "padding_fraction": round(summary.padding_fraction, 4), "tokens_per_s": round(summary.tokens_per_s, 1),
                       "truncated": truncated, "vocabulary": vocabulary, "split": splits.origin, "head": head,
                       "reload_check": check,
                       **{f"{s}_{k}": v for s in ("dev", "test") if s in metrics for k, v in metrics[s].items()
                          if k in ("accuracy", "macro_f1")}, **({"threshold": threshold} if threshold is not None else {})}
    report = classical.beside(_report(config, splits, metrics, summary, max_len, vocabulary, model), summary_metrics, metrics,
                              splits, "BERT", config.baseline)
    return Result(counts, summary_metrics, report, {"device": trainer.device},
                  trainer.cleanup)


def _probabilities(classifier: BertClassifier):
    return lambda ds: classifier.predict(list(ds["text"]))


def _sample(classifier: BertClassifier, splits: Splits) -> tuple[list[str], np.ndarray]:
    """A few dev texts and the trained model's probabilities for them, for the reload check."""
    texts = list(splits.dev.select(range(min(16, len(splits.dev))))["text"])
    return texts, classifier.predict(texts)


def _train(trainer: Trainer, model: Any, config: Config, train, dev, pad_id: int, num_labels: int):
    every = config.eval_every or trainer.steps_per_epoch(len(train))

    def forward(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        return {"loss": loss, **confusion_sums(logits, batch["labels"], num_labels)}

    return trainer.fit(model, train, collate=bert_inputs.Collator(pad_id), forward=forward,
                       eval_data=dev.select(np.argsort(dev["length"], kind="stable")),
                       summarize=lambda sums: summarize(sums, num_labels),
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
    loading.require(checkpoint, NAME)
    families.require(checkpoint, NAME)
    tokenizer = loading.load_tokenizer(checkpoint)
    if tokenizer.pad_token_id is None:
        raise UserError(f"finetune: the tokenizer in {checkpoint} has no padding token")
    return tokenizer


def _max_positions(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / CONFIG_JSON).read_text(encoding="utf-8")).get("max_position_embeddings", 512))


def _model(checkpoint: Path, labels: list[str], config: Config) -> tuple[Any, str]:
    """The checkpoint with a classification head for `labels`; says whether the head is new or kept."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = AutoConfig.from_pretrained(str(checkpoint))
    kept = base.architectures and any(a.endswith("ForSequenceClassification") for a in base.architectures) \
        and [base.id2label.get(i) for i in range(len(base.id2label))] == labels
    extra = {} if config.dropout < 0 else {"classifier_dropout": config.dropout}
    # quiet: "newly initialised classifier" is the point of fine-tuning
    model = loading.load_model(AutoModelForSequenceClassification, checkpoint, num_labels=len(labels),
                                   id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                                   ignore_mismatched_sizes=True, **extra)
    return model, "kept from the checkpoint" if kept else "new (random)"


def _cross_validate(config: Config, checkpoint: Path, splits: Splits, tokenizer: Any, max_len: int, out: Path) -> dict:
    """Mean and standard deviation of held-out scores over K stratified folds of train+dev, each fold a fresh
    model from the checkpoint (a tenth of its training part for early stopping). Under `accelerate launch` every
    process trains each fold (its checkpoint directory is beside the artifact, the same path on every
    process); the main one scores the held-out part."""
    import datasets

    pooled = datasets.concatenate_datasets([splits.train, splits.dev])
    gold = splits.ids(pooled)
    results = []
    fold_config = dataclasses.replace(config, save_every=10**9, resume=False)  # folds are short: no checkpoints
    for k, (train_idx, held_idx) in enumerate(stratified_folds(gold, config.folds, config.seed)):
        inner_train, inner_dev = stratified_folds(gold[train_idx], 9, config.seed)[0]
        part = pooled.select(train_idx)
        train, _ = bert_inputs.encode(part.select(inner_train), tokenizer, splits.labels, max_len)
        dev, _ = bert_inputs.encode(part.select(inner_dev), tokenizer, splits.labels, max_len)
        fold_out = out / f".fold{k}"
        with Trainer(fold_config, fold_out, run_config={"fold": k}, name=f"{NAME} fold {k + 1}/{config.folds}",
                     work=artifacts.work_dir(out, f"fold{k}.checkpoints")) as trainer:
            main = trainer.is_main
            if main:
                fold_out.mkdir()
            model, _ = _model(checkpoint, splits.labels, config)
            _train(trainer, model, fold_config, train, dev, tokenizer.pad_token_id, len(splits.labels))
        if not main:
            continue
        held = pooled.select(held_idx)
        classifier = BertClassifier(model.float(), tokenizer, splits.labels, None, max_len)
        results.append(Evaluation(classifier.predict(list(held["text"])), gold[held_idx]).metrics(None))
        log.info("fold %d/%d: accuracy %.4f, macro_f1 %.4f", k + 1, config.folds, results[-1]["accuracy"], results[-1]["macro_f1"])
        for path in (fold_out, trainer.work):
            shutil.rmtree(path, ignore_errors=True)
    return fold_summary(results) if results else {}


def _report(config: Config, splits: Splits, metrics: dict, summary: Any, max_len: int, vocabulary: dict, model: Any) -> str:
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    best = summary.best or {}
    lines = ["## Fine-tuning",
             f"{type(model).__name__}: {c.num_hidden_layers} layers x {c.hidden_size} hidden, {params:,} parameters; "
             f"labels {', '.join(splits.labels)}; data {splits.origin}.",
             f"{summary.steps} steps{f' (resumed at step {summary.resumed_from})' if summary.resumed_from else ''}, "
             f"best dev {config.monitor} at step {best.get('step', '-')}; max_seq_len {max_len}; padding "
             f"{summary.padding_fraction:.1%}, {summary.tokens_per_s:,.0f} real tokens/s, {summary.arithmetic}.",
             bert_inputs.coverage_line(vocabulary),
             "", *scores_table(metrics)]
    lines += ["", "![training curves](training_curves.png)", "", "![confusion matrix](confusion_matrix.png)"]
    return "\n".join(lines)
