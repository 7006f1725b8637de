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

from ..checkpoints import loading
from ..classifiers.loaded import BertClassifier, is_classifier
from ..classifiers.outcome import Evaluation, finish_bert, fold_summary
from ..core import artifacts
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, LABELS_JSON, METRICS_JSON, WEIGHTS
from ..data import bert_inputs
from ..data.labelled import Splits, load_splits, stratified_folds
from ..metrics.scores import confusion_sums, summarize
from ..training.options import EVAL_EACH_EPOCH, TrainOptions, run_identity, stage_defaults
from ..training.trainer import Trainer

NAME = "finetune"
VERSION = 3  # 2: scikit-learn splits, pad to 8, every classifier's figures (unseen test, per class, baseline) from classifiers/outcome
# 3: a checkpoint whose tokenizer.json kept padding and truncation on (a finetune artifact) is encoded without them
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


TRAINING = {"steps": 0, "epochs": 3.0, "lr": 5e-5, "eval_every": 0, "save_every": 0}
TRAINING_HELP = {"lr": "peak learning rate of the top layer and the classifier (AdamW; see layer_decay)", **EVAL_EACH_EPOCH}


@dataclasses.dataclass(frozen=True)
@stage_defaults(TRAINING, TRAINING_HELP)
class Config(TrainOptions):
    layer_decay: float = option(1.0, "layer-wise learning-rate decay: layer i of L gets lr x decay^(L-i), embeddings "
                                     "decay^(L+1) (1 = off; 0.8-0.95 is usual)", min=0.01, max=1.0)
    max_seq_len: int = option(0, "tokens per text, [CLS]/[SEP] included; 0 = the len_percentile of training lengths", min=0, max=512)
    len_percentile: float = option(95.0, "percentile of training token lengths used when max_seq_len = 0", min=1.0, max=100.0)
    dropout: float = option(-1.0, "classifier dropout; -1 = the checkpoint's hidden dropout", min=-1.0, max=0.95)
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
    encoded = {"train": bert_inputs.encode(splits.train, tokenizer, splits.labels, min(config.max_seq_len, limit) or None,
                                           config.len_percentile, limit)}  # max_len from the same pass when not given
    max_len = encoded["train"][1].max_len
    tokenizer.model_max_length = max_len  # saved with it: pipeline(..., truncation=True) then cuts as training did
    encoded |= {name: bert_inputs.encode(ds, tokenizer, splits.labels, max_len)
                for name, ds in (("dev", splits.dev), ("test", splits.test)) if ds is not None}
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model, head = _model(checkpoint, splits.labels, config)
        loading.check_vocabulary(tokenizer, model, NAME, checkpoint)
        summary = _train(trainer, model, config, encoded["train"][0], encoded["dev"][0], tokenizer, len(splits.labels))
    folds = _cross_validate(config, checkpoint, splits, tokenizer, max_len, out) if config.folds else None  # every process trains
    if not trainer.is_main:
        return trainer.secondary_result()
    done = finish_bert(out, splits, model, tokenizer, max_len, name="BERT", baseline=config.baseline, cross_validation=folds)
    counts = Counts()
    counts.rows_in = counts.rows_out = sum(len(ds) for ds, _ in encoded.values())
    vocabulary = bert_inputs.coverage({name: enc for name, (_, enc) in encoded.items()}, checkpoint, NAME, counts)
    figures = {"max_seq_len": max_len, "steps": summary.steps, "resumed_from_step": summary.resumed_from,
               "best_step": (summary.best or {}).get("step"), "padding_fraction": round(summary.padding_fraction, 4),
               "tokens_per_s": round(summary.tokens_per_s, 1), "truncated": {name: enc.truncated for name, (_, enc) in encoded.items()},
               "vocabulary": vocabulary, "head": head, **done.figures}
    return Result(counts, figures, _report(config, splits, done.sections, summary, max_len, vocabulary, model),
                  {"device": trainer.device}, trainer.cleanup)


def _train(trainer: Trainer, model: Any, config: Config, train, dev, tokenizer: Any, num_labels: int):
    every = config.eval_every or trainer.steps_per_epoch(len(train))

    def forward(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        return {"loss": loss, **confusion_sums(logits, batch["labels"], num_labels)}

    return trainer.fit(model, train, collate=bert_inputs.Collator(tokenizer), forward=forward,
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
    tokenizer = loading.checked_tokenizer(checkpoint, NAME)
    if tokenizer.pad_token_id is None:
        raise UserError(f"finetune: the tokenizer in {checkpoint} has no padding token")
    return tokenizer


def _max_positions(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / CONFIG_JSON).read_text(encoding="utf-8")).get("max_position_embeddings", 512))


def _model(checkpoint: Path, labels: list[str], config: Config) -> tuple[Any, str]:
    """The checkpoint with a classification head for `labels`; says whether the head is new or kept."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = AutoConfig.from_pretrained(str(checkpoint))
    kept = is_classifier(base.architectures) and [base.id2label.get(i) for i in range(len(base.id2label))] == labels
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
            _train(trainer, model, fold_config, train, dev, tokenizer, len(splits.labels))
        if not main:
            continue
        held = pooled.select(held_idx)
        classifier = BertClassifier(model.float(), tokenizer, splits.labels, None, max_len)
        results.append(Evaluation(classifier.predict(list(held["text"])), gold[held_idx]).metrics(None))
        log.info("fold %d/%d: accuracy %.4f, macro_f1 %.4f", k + 1, config.folds, results[-1]["accuracy"], results[-1]["macro_f1"])
        for path in (fold_out, trainer.work):
            shutil.rmtree(path, ignore_errors=True)
    return fold_summary(results) if results else {}


def _report(config: Config, splits: Splits, sections: list[str], summary: Any, max_len: int, vocabulary: dict, model: Any) -> str:
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    best = summary.best or {}
    lines = ["## Fine-tuning",
             f"{type(model).__name__}: {c.num_hidden_layers} layers x {c.hidden_size} hidden, {params:,} parameters; "
             f"labels {', '.join(splits.labels)}; data {splits.origin}.",
             f"{summary.steps} steps{f' (resumed at step {summary.resumed_from})' if summary.resumed_from else ''}, "
             f"best dev {config.monitor} at step {best.get('step', '-')}; max_seq_len {max_len}; padding "
             f"{summary.padding_fraction:.1%}, {summary.tokens_per_s:,.0f} real tokens/s, {summary.arithmetic}.",
             bert_inputs.coverage_line(vocabulary), "", *sections,
             "", "![training curves](training_curves.png)", "", "![confusion matrix](confusion_matrix.png)"]
    return "\n".join(lines)
