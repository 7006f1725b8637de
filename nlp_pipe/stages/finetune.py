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
from pathlib import Path
from typing import Any

from ..classifiers import fitting
from ..classifiers.outcome import BERT_OUTPUTS, Probabilities, bert_probabilities, finish_bert
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..data import bert_inputs
from ..data.labelled import Splits, load_splits
from ..training.options import EVAL_EACH_EPOCH, run_identity, stage_defaults
from ..training.trainer import Trainer

NAME = "finetune"
VERSION = 4  # 2: scikit-learn splits, pad to 8, every classifier's figures (unseen test, per class, baseline) from classifiers/outcome
# 3: a checkpoint whose tokenizer.json kept padding and truncation on (a finetune artifact) is encoded without them
# 4: a classifier checkpoint trained for other labels (same count) starts from a new head, not the old labels' one
DISTRIBUTED = True
OUTPUTS = BERT_OUTPUTS

INPUTS = {
    "checkpoint": Input("a BERT-family model directory (pretrain, expand, distill, finetune artifact or any local HF model)",
                        kind="any", stages=("pretrain", "expand", "distill", "finetune"), hub=True),
    "train": Input("labelled training data (segment artifact)", kind="artifact", stages=("segment",)),
    "dev": Input("labelled dev data for early stopping and the threshold", kind="artifact", required=False, stages=("segment",)),
    "test": Input("labelled test data", kind="artifact", required=False, stages=("segment",)),
}

TRAINING = {"steps": 0, "epochs": 3.0, "lr": 5e-5, "eval_every": 0, "save_every": 0}
TRAINING_HELP = {"lr": "peak learning rate of the top layer and the classifier (AdamW; see layer_decay)", **EVAL_EACH_EPOCH}


@dataclasses.dataclass(frozen=True)
@stage_defaults(TRAINING, TRAINING_HELP)
class Config(fitting.ClassifierOptions):
    layer_decay: float = option(1.0, "layer-wise learning-rate decay: layer i of L gets lr x decay^(L-i), embeddings "
                                     "decay^(L+1) (1 = off; 0.8-0.95 is usual)", min=0.01, max=1.0)
    max_seq_len: int = option(0, "tokens per text, [CLS]/[SEP] included; 0 = the len_percentile of training lengths", min=0, max=512)
    len_percentile: float = option(95.0, "percentile of training token lengths used when max_seq_len = 0", min=1.0, max=100.0)
    dropout: float = option(-1.0, "classifier dropout; -1 = the checkpoint's hidden dropout", min=-1.0, max=0.95)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    checkpoint = inputs["checkpoint"][0]
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    tokenizer, encoded = fitting.bert_encoded(checkpoint, splits, NAME, config.max_seq_len, config.len_percentile)
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model, head = fitting.bert_classifier(checkpoint, splits.labels, tokenizer, NAME, config.dropout)
        summary = fitting.fit_bert(trainer, model, config, encoded["train"], encoded["dev"], tokenizer,
                                   fitting.layer_decay(model.config.num_hidden_layers, config.layer_decay))
    folds = _cross_validate(config, checkpoint, splits, tokenizer, encoded.max_len, out) if config.folds else None
    if not trainer.is_main:
        return trainer.secondary_result()
    done = finish_bert(out, splits, model, tokenizer, encoded.max_len, name="BERT", baseline=config.baseline,
                       cross_validation=folds)
    counts = Counts()
    counts.rows_in = counts.rows_out = encoded.rows
    vocabulary = encoded.coverage(checkpoint, NAME, counts)
    figures = {"max_seq_len": encoded.max_len, "steps": summary.steps, "resumed_from_step": summary.resumed_from,
               "best_step": (summary.best or {}).get("step"), "padding_fraction": round(summary.padding_fraction, 4),
               "tokens_per_s": round(summary.tokens_per_s, 1),
               "truncated": {name: enc.truncated for name, enc in encoded.encodings.items()},
               "vocabulary": vocabulary, "head": head, **done.figures}
    return Result(counts, figures, _report(config, splits, done.sections, summary, encoded.max_len, vocabulary, model),
                  {"device": trainer.device}, trainer.cleanup)


def _cross_validate(config: Config, checkpoint: Path, splits: Splits, tokenizer: Any, max_len: int, out: Path) -> dict:
    """K-fold scores of train+dev, each fold a fresh model from the checkpoint (classifiers/fitting.py)."""
    import datasets

    def train_fold(trainer: Trainer, options: Config, train: datasets.Dataset, dev: datasets.Dataset) -> Probabilities:
        encode = lambda ds: bert_inputs.encode(ds, tokenizer, splits.labels, max_len)[0]  # noqa: E731
        model, _ = fitting.bert_classifier(checkpoint, splits.labels, tokenizer, NAME, config.dropout)
        fitting.fit_bert(trainer, model, options, encode(train), encode(dev), tokenizer,
                         fitting.layer_decay(model.config.num_hidden_layers, config.layer_decay))
        return bert_probabilities(model.float().eval(), tokenizer, splits.labels, max_len)

    pooled = datasets.concatenate_datasets([splits.train, splits.dev])
    return fitting.cross_validate(config, out, NAME, pooled, splits.ids(pooled), train_fold)


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
