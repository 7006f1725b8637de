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
import functools
from pathlib import Path
from typing import Literal

from ..classifiers import convnet, fitting
from ..classifiers.outcome import Probabilities, finish
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..data.labelled import Splits, load_splits
from ..data.ngram_bag import MAX_N
from ..data.word_ids import TextIds
from ..training.options import EVAL_EACH_EPOCH, run_identity, stage_defaults
from ..training.trainer import Trainer

NAME = "textcnn"
VERSION = 8  # 8: splits carved by scikit-learn (other rows than 7 for the same seed); the figures of classifiers/outcome
# 7: the bag starts from logistic regression on its own features (--ngram-init lr), lr x1
# 6: the character n-gram bag (--ngrams), on by default; defaults chosen on dev: words, non-static, 32 filters
# 5: --input chars/both (a char stream), --embedding-dropout, faster defaults chosen on dev
# 4: unseen-test figures, per-class F1 and the same-split TF-IDF + LR baseline in the report
DISTRIBUTED = True  # every process of `accelerate launch` trains; the main one writes the artifact
OUTPUTS = convnet.OUTPUTS

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
    splits = load_splits(inputs["train"][0], first("dev"), first("test"), config.seed)
    streams = convnet.Inputs.build(config, splits.train, first("vectors"), out)
    data = streams.encode_splits(splits)
    with Trainer(config, out, run_config=run_identity(config, inputs), name=NAME) as trainer:
        model = convnet.new_model(config, streams, len(splits.labels), data["train"])
        summary = convnet.fit(trainer, model, config, data["train"], data["dev"])
    folds = _cross_validate(config, streams, data, len(splits.labels), out) if config.folds else None  # every process trains
    if not trainer.is_main:
        return trainer.secondary_result()
    model = model.cpu().eval()
    done = finish(out, splits, lambda ds: convnet.probabilities(model, streams.encode(ds)),
                  functools.partial(convnet.save, out, model, streams, inputs["train"][0]), name="TextCNN",
                  baseline=config.baseline, cross_validation=folds)
    oov = streams.oov_rates(data)
    figures = {"input": config.input, **streams.figures(), "oov_rate": oov, "vectors": streams.vector_stats,
               "steps": summary.steps, "resumed_from_step": summary.resumed_from,
               "best_step": (summary.best or {}).get("step"), **done.figures}
    report = _report(config, splits, done.sections, summary, streams.max_len, streams.char_max_len, oov)
    return Result(Counts.of(sum(len(d) for d in data.values())), figures, report, {"device": trainer.device}, trainer.cleanup)


def _cross_validate(config: Config, streams: convnet.Inputs, data: dict[str, TextIds], num_labels: int, out: Path) -> dict:
    """K-fold scores of train+dev, each fold a fresh TextCNN (classifiers/fitting.py)."""

    def train_fold(trainer: Trainer, options: Config, train: TextIds, dev: TextIds) -> Probabilities:
        model = convnet.new_model(config, streams, num_labels, train)
        convnet.fit(trainer, model, options, train, dev)
        return lambda held: convnet.probabilities(model.cpu().eval(), held)

    pooled = data["train"].concat(data["dev"])
    return fitting.cross_validate(config, out, NAME, pooled, pooled.labels, train_fold)


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
