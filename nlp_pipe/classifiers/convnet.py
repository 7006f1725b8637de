"""The TextCNN classifier made from its training data: what the `textcnn` stage builds, trains and saves.

    inputs = Inputs.build(options, splits.train, vectors_dir, out)   # vocabularies, cut lengths, n-gram bag
    data = inputs.encode_splits(splits)                              # {"train": TextIds, "dev": ..., "test": ...}
    model = new_model(options, inputs, len(splits.labels), data["train"])
    summary = fit(trainer, model, options, data["train"], data["dev"])
    probabilities(model, inputs.encode(splits.test))                 # [rows, classes]
    save(out, model, inputs, train_artifact)                         # what loaded.TextCNNClassifier reads back

`options` is the textcnn stage's Config (its input, vocabulary, length, n-gram and network fields). The inputs
are up to three streams (data/word_ids.py): word ids on the rows of the pretrained vectors, character ids
over the training text's characters, and a bag of the character n-grams seen in enough training texts.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..core import distributed, plots
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
from ..data.labelled import Splits
from ..data.ngram_bag import NgramIndex, bag_matrix
from ..data.word_ids import StreamCollator, TextEncoder, TextIds, stream_batch, text_chars
from ..models.textcnn import TextCNN, TextCNNConfig
from ..text.segmenter import SegmenterSpec
from ..training.trainer import Trainer
from ..vectors.embedding import embedding_matrix
from ..vectors.store import load_keyed_vectors
from . import fitting, tfidf
from .labels import LabelInfo

OUTPUTS = (CONFIG_JSON, WEIGHTS, VOCAB_TXT, LABELS_JSON, SEGMENTER_JSON, METRICS_JSON)  # in every textcnn artifact
SPECIALS = ("[PAD]", "[UNK]")
_EVAL_BATCH = 256


@dataclasses.dataclass
class Inputs:
    """What the network reads, made from the training split; `encode` turns texts into its TextIds."""

    tokens: list[str]  # the word vocabulary: [PAD], [UNK], then the vectors' most frequent words (vocab.txt)
    char_tokens: list[str]  # [PAD], [UNK], then the training text's characters (chars.txt); [] without a char stream
    max_len: int  # words kept per text (0: no word stream)
    char_max_len: int  # characters kept per text (0: no char stream)
    bag: NgramIndex | None  # the character n-grams of the bag (ngrams.txt)
    vectors: torch.Tensor | None  # the word vocabulary's rows of the vectors
    vector_stats: dict[str, Any] | None  # how many of them were found (embedding_matrix)
    idf: torch.Tensor | None  # the bag's n-grams' idf over the training texts
    encoder: TextEncoder

    @classmethod
    def build(cls, options: Any, train: datasets.Dataset, vectors: Path | None, out: Path) -> Inputs:
        """The inputs `options.input` asks for; a length cut at the len_percentile gets its histogram in `out`."""
        words, chars = options.input in ("words", "both"), options.input in ("chars", "both")
        if words and vectors is None:
            raise UserError(f"--input {options.input} reads words: pass --vectors (a word2vec or import-vectors artifact)")
        tokens, matrix, vector_stats = list(SPECIALS), None, None
        if words and vectors is not None:
            kv = load_keyed_vectors(vectors)
            tokens += [w for w in kv.index_to_key[: options.max_vocab] if w not in SPECIALS]
            matrix, vector_stats = embedding_matrix(kv, tokens, seed=options.seed)
        char_tokens = char_vocab(train["text"], options.char_min_count) if chars else []
        max_len = _cut(options, options.max_len, [len(w) for w in train["words"]], "words", out) if words else 0
        char_max_len = _cut(options, options.char_max_len, [len(text_chars(t)) for t in train["text"]], "chars",
                            out) if chars else 0
        bag = NgramIndex.count(train["text"], options.ngrams, options.ngram_min_count, options.ngram_max_vocab,
                               SPECIALS[0]) if options.ngrams else None
        encoder = TextEncoder({w: i for i, w in enumerate(tokens)} if words else None,
                              {c: i for i, c in enumerate(char_tokens)} if chars else None, max_len, char_max_len, bag)
        return cls(tokens, char_tokens, max_len, char_max_len, bag, torch.from_numpy(matrix) if matrix is not None else None,
                   vector_stats, torch.from_numpy(bag.idf(len(train))) if bag is not None else None, encoder)

    @property
    def ngram_tokens(self) -> list[str]:
        return self.bag.grams if self.bag is not None else []

    def encode(self, ds: datasets.Dataset, labels: np.ndarray | None = None) -> TextIds:
        return self.encoder(ds["words"], ds["text"], labels)

    def encode_splits(self, splits: Splits) -> dict[str, TextIds]:
        """train, dev and test (when there is one) with their class ids."""
        return {name: self.encode(ds, splits.ids(ds))
                for name, ds in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)) if ds is not None}

    def oov_rates(self, data: dict[str, TextIds]) -> dict[str, float]:
        """Share of tokens mapped to [UNK], per split and stream (words, _chars, _ngrams)."""
        return {f"{name}{suffix}": round(stream.oov_rate, 4) for name, enc in data.items()
                for suffix, stream in zip(("", "_chars", "_ngrams"), enc.streams) if stream is not None}

    def figures(self) -> dict[str, Any]:
        """The manifest's figures of the inputs."""
        return {"max_len": self.max_len, "vocab": len(self.tokens),
                **({"char_max_len": self.char_max_len, "char_vocab": len(self.char_tokens)} if self.char_max_len else {}),
                **({"ngram_vocab": len(self.ngram_tokens)} if self.ngram_tokens else {})}


def char_vocab(texts: list[str], min_count: int) -> list[str]:
    """[PAD], [UNK], then the training texts' characters seen at least min_count times, most frequent first."""
    counts = Counter(ch for t in texts for ch in text_chars(t))
    return list(SPECIALS) + sorted((c for c, n in counts.items() if n >= min_count and c not in SPECIALS),
                                   key=lambda c: (-counts[c], c))


def _cut(options: Any, fixed: int, lengths: list[int], unit: str, out: Path) -> int:
    """Tokens kept per text: `fixed`, or the len_percentile of the training lengths (histogram plotted)."""
    cut = fixed or max(max(options.kernel_sizes), int(np.ceil(np.percentile(lengths, options.len_percentile))))
    if distributed.is_main():  # the other processes of a launch have no artifact directory
        name = "length_histogram.png" if unit == "words" or options.input == "chars" else "char_length_histogram.png"
        plots.histogram(lengths, cut, out / name, f"{unit} per text",
                        f"training lengths (cut at {options.len_percentile:g}th percentile)" if not fixed else "training lengths")
    return cut


def new_model(options: Any, inputs: Inputs, num_labels: int, train: TextIds) -> TextCNN:
    """A new TextCNN on `inputs`; with --ngram-init lr its bag starts as logistic regression fitted on `train`'s bag
    (every process of a launch fits the same one: lbfgs on the same rows is deterministic)."""
    config = TextCNNConfig(len(inputs.tokens) if inputs.max_len else 0,
                           inputs.vectors.shape[1] if inputs.vectors is not None else 0, num_labels, options.mode,
                           options.kernel_sizes, options.filters, options.dropout, inputs.max_len, options.input,
                           len(inputs.char_tokens), options.char_dim if inputs.char_max_len else 0, inputs.char_max_len,
                           options.embedding_dropout, len(inputs.ngram_tokens), options.ngrams if inputs.ngram_tokens else 0)
    model = TextCNN(config, inputs.vectors, inputs.idf)
    if inputs.idf is not None and train.ngrams is not None and options.ngram_init == "lr":
        features = bag_matrix(train.ngrams.ids, inputs.idf.numpy())
        # 50 lbfgs iterations: binary sets converge in a few (0.2 s on ChnSentiCorp); with 6-10 classes full
        # convergence took ~20 s for the same dev accuracy as 50 iterations' 8-10 s (docs/performance.md)
        coef, intercept = tfidf.fit_linear(features, train.labels, num_labels, options.ngram_c, max_iter=50, start_only=True)
        model.start_wide(torch.from_numpy(coef.T.astype(np.float32)), torch.from_numpy(intercept.astype(np.float32)))
    return model


def fit(trainer: Trainer, model: TextCNN, options: Any, train: TextIds, dev: TextIds) -> Any:
    """`fitting.fit` on the streams, the bag at ngram_lr_scale x lr; static embeddings must come out as they went in."""
    before = model.embedding.weight.detach().clone() if options.mode == "static" and model.embedding is not None else None
    summary = fitting.fit(trainer, model, options, train, dev, num_labels=model.config.num_labels,
                          collate=StreamCollator(max(options.kernel_sizes)),
                          logits=lambda m, batch: m(batch.get("input_ids"), batch.get("char_ids"), batch.get("ngram_ids")),
                          lengths=train.lengths, dev_lengths=dev.lengths,
                          lr_scale=lambda name: options.ngram_lr_scale if name.startswith("wide.") else 1.0)
    if before is not None and model.embedding is not None and not torch.equal(before, model.embedding.weight.detach().cpu()):
        raise RuntimeError("static embeddings changed during training")  # the pretrained vectors must come out as they went in
    return summary


@torch.inference_mode()
def probabilities(model: TextCNN, data: TextIds) -> np.ndarray:
    """Class probabilities of every row, in batches of similar length."""
    probs = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    order = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(order), _EVAL_BATCH):
        index = order[start:start + _EVAL_BATCH]
        logits = model(**stream_batch([data[i][0] for i in index], max(model.config.kernel_sizes)))
        probs[index] = torch.softmax(logits.float(), dim=-1).numpy()
    return probs


def save(out: Path, model: TextCNN, inputs: Inputs, train_artifact: Path, info: LabelInfo) -> LabelInfo:
    """The model and what its loader needs beside it (outcome.finish's `save`): the vocabularies, and the
    segmenter spec of the training data (predict cuts new text exactly as the training data was cut)."""
    model.save(out)
    for name, tokens in {VOCAB_TXT: inputs.tokens, CHARS_TXT: inputs.char_tokens, NGRAMS_TXT: inputs.ngram_tokens}.items():
        if tokens or name == VOCAB_TXT:  # vocab.txt always (one home for the word list, [PAD] [UNK] alone when unused)
            write_vocab(out / name, tokens)
    SegmenterSpec.load(train_artifact).save(out)
    return info
