"""Stage `textcnn`: a TextCNN classifier on pretrained word vectors, on characters, or on both.

    nlp-pipe textcnn --train runs/seg_train --dev runs/seg_dev --test runs/seg_test \
        --vectors runs/word2vec --out runs/textcnn --mode static

Inputs are `segment` artifacts with labels (dev/test optional: without them the train data
is split 7:1:2, stratified) and a vectors artifact (`word2vec` or `import-vectors`; not needed with
`--input chars`). `--input chars` reads the raw characters through an embedding trained from scratch;
`--input both` adds that char stream beside the word stream (convolutions on each, features concatenated).
`--ngrams N` (default 3; 0 = off) adds a linear bag of the character 1..N-grams seen in at least
`--ngram-min-count` training texts, summed into the logits beside the convolutions (wide & deep): the
surface n-gram evidence a TF-IDF + LR model uses. With `--ngram-init lr` (default) the bag starts as
logistic regression fitted on its own features (at most 50 lbfgs iterations: 0.2 s on a binary set, ~10 s
with 10 classes) and the convolutions' output layer at zero, so training starts from that linear model
and the CNN learns what it misses; both then train jointly (the bag at `--ngram-lr-scale` times the lr).
Training runs on the shared Trainer (constant-lr Adam, one evaluation an epoch, early stopping
with the best epoch restored, checkpoints and exact resume after a kill, length-grouped batches).
Writes config.json + model.safetensors, vocab.txt (chars.txt for a char stream, ngrams.txt for the bag),
labels.json (with the F1-optimal threshold for binary tasks), segmenter.json, metrics.json, metrics.jsonl
and report.md with PNG plots; the report shows per-class F1, the test rows unseen in train, and the
TF-IDF + LR baseline fitted on the same split in the same run (`--no-baseline` skips it).
Load it with `nlp_pipe.TextClassifier.load(dir)` or `nlp-pipe predict dir --text ...`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..classifiers import fitting, tfidf
from ..classifiers.labels import LabelInfo
from ..classifiers.outcome import Probabilities, finish
from ..core import distributed, plots
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import (
    CHARS_TXT,
    CONFIG_JSON,
    LABELS_JSON,
    METRICS_JSON,
    NGRAMS_TXT,
    SEGMENTER_JSON,
    VOCAB_TXT,
    WEIGHTS,
    write_vocab,
)
from ..data.labelled import Splits, load_splits
from ..data.ngram_bag import MAX_N, NgramIndex, bag_matrix
from ..data.word_ids import StreamCollator, TextEncoder, TextIds, stream_batch, text_chars
from ..models.textcnn import TextCNN, TextCNNConfig
from ..text.segmenter import SegmenterSpec
from ..training.options import EVAL_EACH_EPOCH, run_identity, stage_defaults
from ..training.trainer import Trainer
from ..vectors.embedding import embedding_matrix
from ..vectors.store import load_keyed_vectors

NAME = "textcnn"
VERSION = 8  # 8: splits carved by scikit-learn (other rows than 7 for the same seed); the figures of classifiers/outcome
# 7: the bag starts from logistic regression on its own features (--ngram-init lr), lr x1
# 6: the character n-gram bag (--ngrams), on by default; defaults chosen on dev: words, non-static, 32 filters
# 5: --input chars/both (a char stream), --embedding-dropout, faster defaults chosen on dev
# 4: unseen-test figures, per-class F1 and the same-split TF-IDF + LR baseline in the report
DISTRIBUTED = True  # every process of `accelerate launch` trains; the main one writes the artifact
OUTPUTS = (CONFIG_JSON, WEIGHTS, VOCAB_TXT, LABELS_JSON, SEGMENTER_JSON, METRICS_JSON)
SPECIALS = ("[PAD]", "[UNK]")
_EVAL_BATCH = 256

INPUTS = {
    "train": Input("labelled training data (segment artifact)", kind="artifact", stages=("segment",)),
    "dev": Input("labelled dev data for early stopping and the threshold", kind="artifact", required=False, stages=("segment",)),
    "test": Input("labelled test data", kind="artifact", required=False, stages=("segment",)),
    "vectors": Input("word vectors (word2vec or import-vectors artifact); not needed with --input chars", kind="artifact",
                     required=False, stages=("word2vec", "import-vectors")),
}

# Adam at a constant lr, one evaluation an epoch, early stopping (Kim 2014's setting, defaults chosen on dev)
TRAINING = {"steps": 0, "epochs": 5.0, "batch_size": 100, "lr": 2e-3, "weight_decay": 0.0, "warmup": 0.0, "schedule": "constant",
            "max_grad_norm": 0.0, "eval_every": 0, "save_every": 0, "patience": 2}


@dataclasses.dataclass(frozen=True)
@stage_defaults(TRAINING, EVAL_EACH_EPOCH)
class Config(fitting.ClassifierOptions):
    mode: Literal["static", "non-static", "multichannel"] = option("non-static",
                                                                   "embeddings frozen (static), fine-tuned (non-static), or both channels "
                                                                       "(Kim 2014)")
    input: Literal["words", "chars", "both"] = option("words", "what the convolutions read: words (on the vectors), characters "
                                                      "(embedding trained from scratch) or both streams side by side")
    char_dim: int = option(64, "character embedding size (input chars or both)", min=1, max=4096)
    char_min_count: int = option(2, "characters seen fewer times in train map to [UNK]", min=1)
    char_max_len: int = option(0, "characters kept per text; 0 = the len_percentile of training lengths", min=0)
    ngrams: int = option(3, "longest character n-gram of the linear n-gram bag beside the convolutions (0 = no bag)",
                         min=0, max=MAX_N)
    ngram_min_count: int = option(2, "n-grams in fewer training texts than this are left out of the bag", min=1)
    ngram_max_vocab: int = option(1_000_000, "most frequent n-grams kept in the bag", min=1)
    ngram_init: Literal["lr", "zero"] = option("lr", "the bag's starting weights: logistic regression fitted on the bag's own "
                                               "features (the CNN then learns what it misses) or zero")
    ngram_c: float = option(4.0, "inverse L2 strength C of that logistic regression (--ngram-init lr)", min=1e-6)
    ngram_lr_scale: float = option(1.0, "the bag's learning rate as a multiple of --lr", min=0.0)
    embedding_dropout: float = option(0.2, "share of embedding vectors (whole positions) dropped while training", min=0.0, max=0.95)
    kernel_sizes: tuple[int, ...] = option((3, 4, 5), "convolution widths in tokens", min=1, max=64, min_items=1)
    filters: int = option(32, "filters per kernel size", min=1, max=4096)
    dropout: float = option(0.5, "dropout before the output layer", min=0.0, max=0.95)
    max_len: int = option(0, "words kept per text; 0 = the len_percentile of training lengths", min=0)
    len_percentile: float = option(95.0, "percentile of training text lengths used as max_len", min=1.0, max=100.0)
    max_vocab: int = option(200_000, "most frequent vector words kept in the model's vocabulary", min=1)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    words, chars = config.input in ("words", "both"), config.input in ("chars", "both")
    if words and not inputs["vectors"]:
        raise UserError(f"--input {config.input} reads words: pass --vectors (a word2vec or import-vectors artifact)")
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    tokens, matrix, vector_stats = list(SPECIALS), None, None
    if words:
        kv = load_keyed_vectors(inputs["vectors"][0])
        tokens += [w for w in kv.index_to_key[: config.max_vocab] if w not in SPECIALS]
        matrix, vector_stats = embedding_matrix(kv, tokens, seed=config.seed)
    char_tokens = _char_vocab(splits.train["text"], config.char_min_count) if chars else []
    max_len = _cut(config, config.max_len, [len(w) for w in splits.train["words"]], "words", out) if words else 0
    char_max_len = _cut(config, config.char_max_len, [len(text_chars(t)) for t in splits.train["text"]], "chars",
                        out) if chars else 0
    bag = NgramIndex.count(splits.train["text"], config.ngrams, config.ngram_min_count, config.ngram_max_vocab, SPECIALS[0]) \
        if config.ngrams else None
    ngram_tokens = bag.grams if bag is not None else []
    encoder = TextEncoder({w: i for i, w in enumerate(tokens)} if words else None,
                          {c: i for i, c in enumerate(char_tokens)} if chars else None, max_len, char_max_len,
                          bag)
    data = {name: encoder(ds["words"], ds["text"], splits.ids(ds))
            for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}
    model_config = TextCNNConfig(len(tokens) if words else 0, matrix.shape[1] if matrix is not None else 0,
                                 len(splits.labels), config.mode, config.kernel_sizes, config.filters, config.dropout,
                                 max_len, config.input, len(char_tokens), config.char_dim if chars else 0, char_max_len,
                                 config.embedding_dropout, len(ngram_tokens), config.ngrams if ngram_tokens else 0)
    vectors = torch.from_numpy(matrix) if matrix is not None else None
    idf = torch.from_numpy(bag.idf(len(splits.train))) if bag is not None else None
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model = _model(config, model_config, vectors, idf, data["train"])
        frozen_before = model.embedding.weight.detach().clone() if model.embedding is not None else None
        summary = _train(trainer, model, config, data["train"], data["dev"])
    folds = _cross_validate(config, model_config, vectors, idf, data, out) if config.folds else None  # every process trains
    if not trainer.is_main:
        return trainer.secondary_result()
    model = model.cpu().eval()
    if config.mode == "static" and model.embedding is not None and frozen_before is not None \
            and not torch.equal(frozen_before, model.embedding.weight):
        raise RuntimeError("static embeddings changed during training")  # the pretrained vectors must come out as they went in

    def save(info: LabelInfo) -> LabelInfo:
        _save(out, model, {VOCAB_TXT: tokens, CHARS_TXT: char_tokens, NGRAMS_TXT: ngram_tokens}, inputs["train"][0])
        return info

    done = finish(out, splits, lambda ds: _probabilities(model, encoder(ds["words"], ds["text"])), save, name="TextCNN",
                  baseline=config.baseline, cross_validation=folds)
    oov = {f"{name}{suffix}": round(stream.oov_rate, 4) for name, enc in data.items()
           for suffix, stream in zip(("", "_chars", "_ngrams"), enc.streams) if stream is not None}
    rows = sum(len(d) for d in data.values())
    figures = {"input": config.input, "max_len": max_len, "vocab": len(tokens),
               **({"char_max_len": char_max_len, "char_vocab": len(char_tokens)} if chars else {}),
               **({"ngram_vocab": len(ngram_tokens)} if ngram_tokens else {}), "oov_rate": oov,
               "vectors": vector_stats, "steps": summary.steps, "resumed_from_step": summary.resumed_from,
               "best_step": (summary.best or {}).get("step"), **done.figures}
    report = _report(config, splits, done.sections, summary, max_len, char_max_len, oov)
    return Result(Counts.of(rows), figures, report, {"device": trainer.device}, trainer.cleanup)


def _model(config: Config, model_config: TextCNNConfig, vectors: torch.Tensor | None, idf: torch.Tensor | None,
           train: TextIds) -> TextCNN:
    """A new TextCNN; with --ngram-init lr its bag starts as logistic regression fitted on `train`'s bag (every
    process of a launch fits the same one: lbfgs on the same rows is deterministic)."""
    model = TextCNN(model_config, vectors, idf)
    if idf is not None and train.ngrams is not None and config.ngram_init == "lr":
        features = bag_matrix(train.ngrams.ids, idf.numpy())
        # 50 lbfgs iterations: binary sets converge in a few (0.2 s on ChnSentiCorp); with 6-10 classes full
        # convergence took ~20 s for the same dev accuracy as 50 iterations' 8-10 s (docs/performance.md)
        coef, intercept = tfidf.fit_linear(features, train.labels, model_config.num_labels, config.ngram_c,
                                           max_iter=50, start_only=True)
        model.start_wide(torch.from_numpy(coef.T.astype(np.float32)), torch.from_numpy(intercept.astype(np.float32)))
    return model


def _char_vocab(texts: list[str], min_count: int) -> list[str]:
    """[PAD], [UNK], then the training texts' characters seen at least min_count times, most frequent first."""
    counts = Counter(ch for t in texts for ch in text_chars(t))
    return list(SPECIALS) + sorted((c for c, n in counts.items() if n >= min_count and c not in SPECIALS),
                                   key=lambda c: (-counts[c], c))


def _cut(config: Config, fixed: int, lengths: list[int], unit: str, out: Path) -> int:
    """Tokens kept per text: `fixed`, or the len_percentile of the training lengths (histogram plotted)."""
    cut = fixed or max(max(config.kernel_sizes), int(np.ceil(np.percentile(lengths, config.len_percentile))))
    if distributed.is_main():  # the other processes of a launch have no artifact directory
        name = "length_histogram.png" if unit == "words" or config.input == "chars" else "char_length_histogram.png"
        plots.histogram(lengths, cut, out / name, f"{unit} per text",
                        f"training lengths (cut at {config.len_percentile:g}th percentile)" if not fixed else "training lengths")
    return cut


def _train(trainer: Trainer, model: TextCNN, config: Config, train: TextIds, dev: TextIds):
    return fitting.fit(trainer, model, config, train, dev, num_labels=model.config.num_labels,
                       collate=StreamCollator(max(config.kernel_sizes)),
                       logits=lambda m, batch: m(batch.get("input_ids"), batch.get("char_ids"), batch.get("ngram_ids")),
                       lengths=train.lengths, dev_lengths=dev.lengths,
                       lr_scale=lambda name: config.ngram_lr_scale if name.startswith("wide.") else 1.0)


@torch.inference_mode()
def _probabilities(model: TextCNN, data: TextIds) -> np.ndarray:
    """Class probabilities of every row, in batches of similar length."""
    probs = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    order = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(order), _EVAL_BATCH):
        index = order[start:start + _EVAL_BATCH]
        logits = model(**stream_batch([data[i][0] for i in index], max(model.config.kernel_sizes)))
        probs[index] = torch.softmax(logits.float(), dim=-1).numpy()
    return probs


def _cross_validate(config: Config, model_config: TextCNNConfig, vectors: torch.Tensor | None, idf: torch.Tensor | None,
                    data: dict[str, TextIds], out: Path) -> dict:
    """K-fold scores of train+dev, each fold a fresh TextCNN (classifiers/fitting.py)."""

    def train_fold(trainer: Trainer, options: Config, train: TextIds, dev: TextIds) -> Probabilities:
        model = _model(config, model_config, vectors, idf, train)
        _train(trainer, model, options, train, dev)
        return lambda held: _probabilities(model.cpu().eval(), held)

    pooled = data["train"].concat(data["dev"])
    return fitting.cross_validate(config, out, NAME, pooled, pooled.labels, train_fold)


def _save(out: Path, model: TextCNN, vocabularies: dict[str, list[str]], train_dir: Path) -> None:
    model.save(out)
    for name, tokens in vocabularies.items():
        if tokens or name == VOCAB_TXT:  # vocab.txt always (one home for the word list, [PAD] [UNK] alone when unused)
            write_vocab(out / name, tokens)
    SegmenterSpec.load(train_dir).save(out)  # predict cuts new text exactly as the training data was cut


def _report(config: Config, splits: Splits, sections: list[str], summary, max_len: int, char_max_len: int, oov: dict) -> str:
    best = summary.best or {}
    cut = ", ".join(([f"max_len {max_len} words"] if max_len else []) + ([f"{char_max_len} characters"] if char_max_len else []))
    streams = {"words": f"words (mode {config.mode})", "chars": f"characters (embedding {config.char_dim}, from scratch)",
               "both": f"words (mode {config.mode}) and characters (embedding {config.char_dim}, from scratch)"}
    start = f"started from logistic regression on its features, C={config.ngram_c:g}" if config.ngram_init == "lr" else "started at 0"
    bag = (f", plus a linear bag of character 1-{config.ngrams}-grams (in >= {config.ngram_min_count} training texts; "
           f"{start}; lr x{config.ngram_lr_scale:g})" if config.ngrams else "")
    lines = ["## TextCNN", f"Input {streams[config.input]}, kernels {list(config.kernel_sizes)} x {config.filters} filters"
             f"{' per stream' if config.input == 'both' else ''}{bag}, embedding dropout {config.embedding_dropout:g}, {cut}; "
             f"data {splits.origin}; {summary.steps} steps, best dev {config.monitor} at step {best.get('step', '-')}; "
             f"{summary.arithmetic}.",
             "OOV rate (tokens mapped to [UNK]): " + ", ".join(f"{k} {v:.1%}" for k, v in oov.items()), "",
             *sections]
    lines += ["", "Labels (class id: name): " + ", ".join(f"{i}: {n}" for i, n in enumerate(splits.labels)), "",
              "![training curves](training_curves.png)", "", "![confusion matrix](confusion_matrix.png)", "",
              "![lengths](length_histogram.png)"]
    if config.input == "both":
        lines += ["", "![character lengths](char_length_histogram.png)"]
    return "\n".join(lines)
