"""One inference interface for every classifier artifact (textcnn, baseline, finetune, distill).

    from nlp_pipe import TextClassifier
    clf = TextClassifier.load("runs/demo/textcnn")
    clf.predict(["质量很好，推荐", "太差了"])        # -> probabilities, shape [2, num_labels]
    clf.predict_labels(["质量很好，推荐"])          # -> [("pos", 0.97)]

Segmentation (with the training run's user dictionary), the training text's normalisation (labels.json
`halfwidth`), indexing, padding and batching happen inside; inference runs under torch.inference_mode.
An export (`nlp-pipe export`, classifiers/exported.py) loads through the same `TextClassifier.load` and runs
on onnxruntime: torch is imported only by the classes that run a PyTorch model, so serving an export
never imports it. Nothing here imports training code.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints.families import is_classifier
from ..core.errors import UserError
from ..core.files import CHARS_TXT, CONFIG_JSON, INT8_FILE, NGRAMS_TXT, VOCAB_TXT, read_vocab
from ..data.ngram_bag import NgramIndex
from ..data.word_ids import TextEncoder, stream_batch
from ..models.ngram import NgramModel
from ..text.encoding import unicode_text
from ..text.normalization import to_halfwidth
from ..text.segmenter import Segmenter, SegmenterSpec
from .labels import LabelInfo

EXPORT_JSON = "export.json"  # marks an `nlp-pipe export` directory


class TextClassifier:
    """A loaded classifier: `predict(texts)` gives per-class probabilities."""

    def __init__(self, labels: list[str], threshold: float | None, halfwidth: bool = False) -> None:
        self.labels = labels
        self.threshold = threshold  # binary tasks: probability of class 1 above which it is predicted
        self.halfwidth = halfwidth  # the training text was mapped to half-width: new text is too

    @staticmethod
    def load(directory: str | Path, int8: bool = False, compile: bool = False, threads: int | None = None) -> TextClassifier:
        """The classifier in `directory`; int8=True takes a distill artifact's model_int8.pt (CPU). compile=True
        runs a BERT classifier through torch.compile (inductor, dynamic shapes): the first batches pay the
        compiling (about 20 s on CPU), later ones ran 1.17x faster at batch 32 x 128 (docs/performance.md).
        `threads`: onnxruntime threads a model call of an export (None: one per core); PyTorch's are process-wide."""
        directory = Path(directory)
        config_path = directory / CONFIG_JSON
        if not directory.is_dir():
            raise UserError(f"{directory} does not exist" if not directory.exists() else
                            f"{directory} is a file; point to a textcnn, finetune or distill artifact directory")
        if (directory / EXPORT_JSON).exists():
            if int8 or compile:
                raise UserError(f"{directory} is an export: it runs the model it was exported with on onnxruntime "
                                "(export with --quantize int8 for an int8 one); --int8 and --compile apply to PyTorch artifacts")
            from .exported import load_export

            return load_export(directory, threads=threads)
        if not config_path.exists():
            raise UserError(f"{directory} is not a classifier artifact (no {CONFIG_JSON}); point to a textcnn, baseline, "
                            "finetune or distill output")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserError(f"{config_path} is not valid JSON ({exc})") from None
        if config.get("model_type") == "textcnn":
            if int8 or compile:
                raise UserError(f"{directory} is a TextCNN; " + ("int8 models come from distill --quantize int8" if int8 else
                                "--compile applies to BERT classifiers (a TextCNN is a few convolutions)"))
            return TextCNNClassifier(directory)
        if config.get("model_type") == "ngram-lr":
            if int8 or compile:
                raise UserError(f"{directory} is a TF-IDF + LR baseline (numpy): --int8 and --compile apply to BERT classifiers")
            return NgramClassifier(directory)
        if is_classifier(config.get("architectures")):
            return BertClassifier.from_dir(directory, int8, compile)
        raise UserError(f"{directory} holds a '{config.get('model_type')}' model, not a classifier (textcnn or *ForSequenceClassification)")

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities per class, in input order. Batches hold texts of similar length (padding is
        cut per batch), so a mixed list runs as fast as a sorted one."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        if batch_size < 1:  # range() would step backwards (every probability 0) or fail
            raise UserError(f"predict: batch size must be at least 1 (got {batch_size})")
        unencodable = next((i for i, t in enumerate(texts) if not unicode_text(t)), None)
        if unencodable is not None:  # a lone surrogate (bytes that were not UTF-8 on a command line): no tokenizer takes it
            raise UserError(f"predict: text {unencodable + 1} holds characters that are not valid Unicode text (a lone "
                            "surrogate, e.g. bytes that were not UTF-8); fix its encoding")
        if self.halfwidth:
            texts = [to_halfwidth(t) for t in texts]
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), batch_size):
            index = order[i:i + batch_size]
            probs[index] = self._probs([texts[j] for j in index])
        return probs

    def predict_labels(self, texts: Sequence[str], batch_size: int = 64) -> list[tuple[str, float]]:
        """(label, its probability) per text; binary tasks use the threshold chosen on dev."""
        return self.decide(self.predict(texts, batch_size))

    def decide(self, probs: np.ndarray) -> list[tuple[str, float]]:
        if self.threshold is not None and probs.shape[1] == 2:
            ids = (probs[:, 1] > self.threshold).astype(int)
        else:
            ids = probs.argmax(axis=1)
        return [(self.labels[i], float(p[i])) for i, p in zip(ids, probs)]

    def _probs(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def _require(directory: Path, *packages: str) -> None:
    """A PyTorch artifact needs torch (a BERT one transformers too); the [serve] extra alone runs exports only."""
    try:
        for package in packages:
            importlib.import_module(package)
    except ImportError:
        raise UserError(f"{directory} is a PyTorch artifact and this install cannot import {' and '.join(packages)}: "
                        f"export it (nlp-pipe export {directory} --out DIR) and use the export, or install "
                        f"{'them' if len(packages) > 1 else 'it'}") from None


class TextCNNClassifier(TextClassifier):
    """A textcnn artifact: its segmenter.json cuts the text as in training, its vocab.txt indexes the words
    (chars.txt the characters of a char stream, ngrams.txt the n-grams of an n-gram bag)."""

    def __init__(self, directory: Path) -> None:
        _require(directory, "torch")
        from ..models.textcnn import TextCNN

        meta = LabelInfo.load(directory)
        super().__init__(meta.labels, meta.threshold, meta.halfwidth)
        self.model = TextCNN.load(directory)
        self.encoder, self.segmenter = textcnn_text_pipeline(directory, dataclasses.asdict(self.model.config),
                                                             SegmenterSpec.load(directory))

    def _probs(self, texts: list[str]) -> np.ndarray:
        words = [self.segmenter.cut(t) for t in texts] if self.segmenter is not None else None
        encoded = self.encoder(words, texts)
        import torch

        with torch.inference_mode():
            logits = self.model(**stream_batch([encoded[i][0] for i in range(len(encoded))],
                                               max(self.model.config.kernel_sizes)))
        return torch.softmax(logits.float(), dim=-1).numpy()


def textcnn_text_pipeline(directory: Path, config: dict[str, Any], spec: SegmenterSpec) -> tuple[TextEncoder, Segmenter | None]:
    """A TextCNN's encoder (its vocab.txt, chars.txt, ngrams.txt as its config.json says) and, for word input,
    the segmenter of `spec`: shared by the PyTorch artifact and its export."""
    words, chars = config["input"] in ("words", "both"), config["input"] in ("chars", "both")
    index = lambda name: {t: i for i, t in enumerate(read_vocab(directory / name))}  # noqa: E731
    encoder = TextEncoder(index(VOCAB_TXT) if words else None, index(CHARS_TXT) if chars else None,
                          config["max_len"], config["char_max_len"],
                          NgramIndex(read_vocab(directory / NGRAMS_TXT), config["ngram_max"])
                          if config.get("ngram_vocab_size") else None)
    return encoder, Segmenter(spec) if words else None


class NgramClassifier(TextClassifier):
    """A baseline artifact (TF-IDF n-grams + logistic regression), predicted with numpy; word analyzers cut
    the text with the training run's segmenter.json."""

    def __init__(self, directory: Path, meta: LabelInfo | None = None, spec: SegmenterSpec | None = None) -> None:
        meta = meta or LabelInfo.load(directory)
        super().__init__(meta.labels, meta.threshold, meta.halfwidth)
        self.model = NgramModel.load(directory)
        self.segmenter = Segmenter(spec or SegmenterSpec.load(directory)) if self.model.config.uses_words else None

    def _probs(self, texts: list[str]) -> np.ndarray:
        words = [self.segmenter.cut(t) for t in texts] if self.segmenter is not None else None
        return self.model.probabilities(texts, words)


class BertClassifier(TextClassifier):
    """A *ForSequenceClassification model with its tokenizer; texts longer than max_len are cut as in training."""

    def __init__(self, model: Any, tokenizer: Any, labels: list[str], threshold: float | None, max_len: int,
                 halfwidth: bool = False) -> None:
        super().__init__(labels, threshold, halfwidth)
        self.model, self.tokenizer, self.max_len = model.eval(), tokenizer, max_len
        self.device = next(model.parameters()).device

    @classmethod
    def from_dir(cls, directory: Path, int8: bool = False, compile: bool = False) -> BertClassifier:
        _require(directory, "torch", "transformers")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..models.int8 import load_int8

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        if int8 and not (directory / INT8_FILE).exists():
            raise UserError(f"{directory} has no {INT8_FILE} (distill --quantize int8 writes one); for an int8 model of "
                            f"this classifier, export it: nlp-pipe export {directory} --out DIR --quantize int8")
        model: Any = load_int8(directory) if int8 else AutoModelForSequenceClassification.from_pretrained(str(directory))
        meta = LabelInfo.find(directory)
        id2label = model.config.id2label
        max_len = (meta.max_seq_len if meta else None) or min(model.config.max_position_embeddings, 512)
        if torch.cuda.is_available() and not int8:  # int8 dynamic quantisation runs on CPU only
            model = model.cuda()
        if compile:
            model = torch.compile(model.eval(), dynamic=True)  # batches differ in length: one graph for all
        return cls(model, tokenizer, [id2label[i] for i in range(len(id2label))], meta.threshold if meta else None, max_len,
                   meta.halfwidth if meta else False)

    def _probs(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(texts, truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()
