"""Stage `textcnn`: a TextCNN classifier on frozen (or fine-tuned) pretrained word vectors.

    nlp-pipe textcnn --train runs/seg_train --dev runs/seg_dev --test runs/seg_test \
        --vectors runs/word2vec --out runs/textcnn --mode static

Inputs are `segment` artifacts with labels (dev/test optional: without them the train data
is split 7:1:2, stratified) and a vectors artifact (`word2vec` or `import-vectors`).
Writes config.json + model.safetensors, vocab.txt, labels.json (with the F1-optimal threshold
for binary tasks), segmenter.json, metrics.json and report.md with PNG plots. Load it with
`nlp_pipe.TextClassifier.load(dir)` or `nlp-pipe predict dir --text ...`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import plots
from ..config import option
from ..data.labelled import Splits, best_threshold, load_splits, stratified_folds
from ..errors import UserError
from ..models.textcnn import TextCNN, TextCNNConfig
from ..fit import TrainSettings, encode, evaluate, fit
from ..vectors import embedding_matrix, load_keyed_vectors
from . import Input, Result

NAME = "textcnn"
VERSION = 2  # 2: max-pooling ignores windows in padding
SPECIALS = ("[PAD]", "[UNK]")

INPUTS = {
    "train": Input("labelled training data (segment artifact)", kind="artifact", stages=("segment",)),
    "dev": Input("labelled dev data for early stopping and the threshold", kind="artifact", required=False, stages=("segment",)),
    "test": Input("labelled test data", kind="artifact", required=False, stages=("segment",)),
    "vectors": Input("word vectors (word2vec or import-vectors artifact)", kind="artifact", stages=("word2vec", "import-vectors")),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    mode: Literal["static", "non-static", "multichannel"] = option("static", "embeddings frozen (static), fine-tuned (non-static), or both channels (Kim 2014)")
    kernel_sizes: tuple[int, ...] = option((3, 4, 5), "convolution widths in words", min=1)
    filters: int = option(100, "filters per kernel size", min=1)
    dropout: float = option(0.5, "dropout before the output layer", min=0.0, max=0.95)
    max_len: int = option(0, "words kept per text; 0 = the len_percentile of training lengths", min=0)
    len_percentile: float = option(95.0, "percentile of training text lengths used as max_len", min=1.0, max=100.0)
    max_vocab: int = option(200_000, "most frequent vector words kept in the model's vocabulary", min=1)
    batch_size: int = option(50, "texts per batch", min=1)
    lr: float = option(1e-3, "Adam learning rate", min=0.0)
    epochs: int = option(20, "maximum epochs", min=1)
    patience: int = option(3, "stop after this many epochs without dev improvement", min=1)
    monitor: Literal["macro_f1", "accuracy", "loss"] = option("macro_f1", "dev figure for early stopping and the best checkpoint")
    folds: int = option(0, "K-fold cross-validation on train+dev (0 = off); the saved model still uses the normal split", min=0)
    seed: int = option(42, "seed for splits, initialisation and shuffling")

    def __post_init__(self) -> None:
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or at least 2")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    torch.manual_seed(config.seed)
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    kv = load_keyed_vectors(inputs["vectors"][0])
    tokens = list(SPECIALS) + [w for w in kv.index_to_key[: config.max_vocab] if w not in SPECIALS]
    matrix, vector_stats = embedding_matrix(kv, tokens, seed=config.seed)
    index = {w: i for i, w in enumerate(tokens)}
    lengths = [len(w) for w in splits.train["words"]]
    max_len = config.max_len or max(max(config.kernel_sizes), int(np.ceil(np.percentile(lengths, config.len_percentile))))
    plots.histogram(lengths, max_len, out / "length_histogram.png", "words per text", f"training lengths (cut at {config.len_percentile:g}th percentile)" if not config.max_len else "training lengths")
    data = {name: encode(ds["words"], index, max_len) for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}
    ids = {name: splits.ids(ds) for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}
    model_config = TextCNNConfig(len(tokens), matrix.shape[1], len(splits.labels), config.mode, config.kernel_sizes,
                                 config.filters, config.dropout, max_len)
    settings = TrainSettings(config.batch_size, config.lr, config.epochs, config.patience, config.monitor, config.seed)
    model = TextCNN(model_config, torch.from_numpy(matrix))
    frozen_before = model.embedding.weight.detach().clone()
    history = fit(model, data["train"], ids["train"], data["dev"], ids["dev"], settings)
    if config.mode == "static":  # the pretrained vectors must come out exactly as they went in
        assert torch.equal(frozen_before, model.embedding.weight), "static embeddings changed during training"
    metrics, threshold = _final_metrics(model, data, ids, splits)
    if config.folds:
        metrics["cross_validation"] = _cross_validate(config, model_config, matrix, data, ids, settings)
    _save(out, model, tokens, splits, threshold, inputs["train"][0], metrics, history)
    oov = {name: round(enc.oov_rate, 4) for name, enc in data.items()}
    summary = {"labels": len(splits.labels), "max_len": max_len, "vocab": len(tokens), "oov_rate": oov,
               "vectors": vector_stats, "best_epoch": history.best_epoch, "split": splits.origin,
               **{f"{s}_{k}": v for s in ("dev", "test") if s in metrics for k, v in metrics[s].items() if k in ("accuracy", "macro_f1")}}
    return Result({"rows_in": sum(len(d.ids) for d in data.values()), "rows_out": sum(len(d.ids) for d in data.values()), "dropped": {}},
                  {**summary, **({"threshold": threshold} if threshold is not None else {})}, _report(config, splits, metrics, history, max_len, oov))


def _final_metrics(model, data, ids, splits: Splits) -> tuple[dict, float | None]:
    threshold = None
    dev = evaluate(model, data["dev"], ids["dev"], len(splits.labels))
    if len(splits.labels) == 2:
        threshold, _ = best_threshold(dev.probs[:, 1], ids["dev"])
    metrics = {"dev": dev.metrics(threshold)}
    if "test" in data:
        metrics["test"] = evaluate(model, data["test"], ids["test"], len(splits.labels)).metrics(threshold)
    return metrics, threshold


def _cross_validate(config: Config, model_config: TextCNNConfig, matrix, data, ids, settings) -> dict:
    """Mean and standard deviation of held-out metrics over K stratified folds of train+dev."""
    pooled = data["train"].concat(data["dev"])
    gold = np.concatenate([ids["train"], ids["dev"]])
    scores: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    for k, (train_idx, held_idx) in enumerate(stratified_folds(gold, config.folds, config.seed)):
        torch.manual_seed(config.seed + k)
        model = TextCNN(model_config, torch.from_numpy(matrix))
        inner_train, inner_dev = stratified_folds(gold[train_idx], 9, config.seed)[0]  # a tenth for early stopping
        train_part = pooled.select(train_idx)
        fit(model, train_part.select(inner_train), gold[train_idx][inner_train], train_part.select(inner_dev), gold[train_idx][inner_dev], settings)
        result = evaluate(model, pooled.select(held_idx), gold[held_idx], model_config.num_labels).metrics(None)
        for key in scores:
            scores[key].append(result[key])
        log.info("fold %d/%d: accuracy %.4f, macro_f1 %.4f", k + 1, config.folds, result["accuracy"], result["macro_f1"])
    return {key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": v} for key, v in scores.items()}


def _save(out: Path, model: TextCNN, tokens, splits: Splits, threshold, train_dir: Path, metrics, history) -> None:
    model.save(out)
    (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    (out / "labels.json").write_text(json.dumps({"labels": splits.labels, "threshold": threshold}, ensure_ascii=False, indent=2), encoding="utf-8")
    segmenter = train_dir / "segmenter.json"
    if not segmenter.exists():
        raise UserError(f"{train_dir} has no segmenter.json; re-run its segment stage with this nlp_pipe version")
    (out / "segmenter.json").write_text(segmenter.read_text(encoding="utf-8"), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history.rows), encoding="utf-8")
    plots.curves({"train loss": history.series("train_loss"), "dev loss": history.series("dev_loss"),
                  f"dev {history.monitor}": history.series(f"dev_{history.monitor}")}
                 if history.monitor != "loss" else {"train loss": history.series("train_loss"), "dev loss": history.series("dev_loss")},
                 out / "learning_curve.png", "epoch", "TextCNN learning curve")
    split = "test" if "test" in metrics else "dev"
    plots.confusion(metrics[split]["confusion_matrix"], splits.labels, out / "confusion_matrix.png", f"{split} confusion matrix")
    reloaded = TextCNN.load(out)  # check the saved model gives the same logits
    sample = torch.randint(0, len(tokens), (4, 16))
    with torch.inference_mode():
        assert torch.allclose(model.eval()(sample), reloaded(sample), atol=1e-5), "saved TextCNN does not reload identically"


def _report(config: Config, splits: Splits, metrics: dict, history, max_len: int, oov: dict) -> str:
    lines = ["## TextCNN", f"Mode {config.mode}, kernels {list(config.kernel_sizes)} x {config.filters} filters, "
             f"max_len {max_len} words; data {splits.origin}; best epoch {history.best_epoch} of {len(history.rows)}.",
             f"OOV rate (tokens mapped to [UNK]): " + ", ".join(f"{k} {v:.1%}" for k, v in oov.items()), "",
             "| split | accuracy | macro F1 |", "| --- | --- | --- |"]
    lines += [f"| {s} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for s, m in metrics.items() if s in ("dev", "test")]
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        lines += ["", f"{config.folds}-fold cross-validation: accuracy {cv['accuracy']['mean']:.4f} ± {cv['accuracy']['std']:.4f}, "
                  f"macro F1 {cv['macro_f1']['mean']:.4f} ± {cv['macro_f1']['std']:.4f}"]
    lines += ["", "Labels (class id: name): " + ", ".join(f"{i}: {n}" for i, n in enumerate(splits.labels)), "",
              "![learning curve](learning_curve.png)", "", "![confusion matrix](confusion_matrix.png)", "",
              "![lengths](length_histogram.png)"]
    return "\n".join(lines)
