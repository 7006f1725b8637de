"""Running an export (`nlp-pipe export`) without torch or transformers: onnxruntime, tokenizers, jieba, numpy.

An export directory holds export.json (what it is and how to feed it), labels.json, the model (model.onnx,
or model_int8.onnx when exported with --quantize int8, the fp32 graph beside it) and the text pipeline:
tokenizer.json for BERT classifiers; config.json, vocab.txt / chars.txt / ngrams.txt, segmenter.json, the
jieba dictionary it was cut with (jieba_dict.txt) and its user dictionary for a TextCNN. A TF-IDF + LR
baseline is exported as its numpy model (config.json, ngrams.json, model.safetensors): its n-gram features
are computed in Python whatever runs the dot product, so an ONNX graph of one sparse matrix product would
add a runtime without removing any code; numpy runs it with the same loader and no torch.

`TextClassifier.load(export_dir)` comes here; nothing in this module imports torch or transformers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.files import CONFIG_JSON
from ..core.manifest import sha256_file
from ..data.word_ids import stream_arrays
from ..text.segmenter import SegmenterSpec
from .labels import LabelInfo
from .loaded import EXPORT_JSON, NgramClassifier, TextClassifier, textcnn_text_pipeline

EXPORT_FORMAT = 1
MODEL_ONNX = "model.onnx"
MODEL_INT8_ONNX = "model_int8.onnx"
TOKENIZER_JSON = "tokenizer.json"
JIEBA_DICT = "jieba_dict.txt"  # the main jieba dictionary the training text was cut with


def bundled_jieba_dict() -> Path:
    """The dict.txt that ships inside the installed jieba package (SegmenterSpec.dictionary None)."""
    import jieba

    return Path(os.path.dirname(jieba.__file__)) / "dict.txt"


def read_export_info(directory: Path) -> dict[str, Any]:
    path = directory / EXPORT_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); export the classifier again") from None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path}: export format {info.get('format') if isinstance(info, dict) else '?'} is not the "
                        f"{EXPORT_FORMAT} this nlp_pipe version reads; export the classifier again")
    return info


def export_segmenter_spec(directory: Path, info: dict[str, Any]) -> SegmenterSpec:
    """The export's segmenter.json with the dictionary it shipped: the installed jieba's own dict.txt when that
    is byte-identical (so a fast engine proven on it can cut), else the export's copy. Either way the text is
    cut with the dictionary of training, whatever jieba version this machine has."""
    spec = SegmenterSpec.load(directory)
    seg = info.get("segmenter") or {}
    shipped = directory / seg.get("dictionary", JIEBA_DICT)
    if not shipped.is_file():
        raise UserError(f"{directory} lacks {shipped.name}, the jieba dictionary of its segmenter; export it again")
    same_as_bundled = spec.dictionary is None and seg.get("dictionary_sha256") == sha256_file(bundled_jieba_dict())
    return spec if same_as_bundled else dataclasses.replace(spec, dictionary=str(shipped))


def _session(path: Path, threads: int | None) -> Any:
    """An onnxruntime session on `threads` intra-op threads (None: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(f"{path} does not exist; export the classifier again")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle intra-op threads sleep instead of spinning: a server shares its cores with its own event loop
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    # onnxruntime 1.32's fused SkipLayerNormalization kernel took 17% of an int8 TinyBERT-4 call; Add +
    # LayerNormalization give the same logits in 0.85x the time (docs/performance.md, Serving)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["SkipLayerNormFusion"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxBertClassifier(TextClassifier):
    """A BERT classifier's ONNX graph with its tokenizer.json (tokenizers alone: the same fast tokenizer
    transformers wraps), cutting texts at the training max_len."""

    def __init__(self, directory: Path, info: dict[str, Any], meta: LabelInfo, model_file: str, threads: int | None) -> None:
        from tokenizers import Tokenizer

        super().__init__(meta.labels, meta.threshold, meta.halfwidth)
        self.session = _session(directory / model_file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_JSON))
        self.tokenizer.enable_truncation(int(info["max_len"]))
        # int8 (onnxruntime's dynamic quantisation) scales each activation by the range of the whole batch, so a
        # text's probabilities depended on the texts beside it (24 of 200 labels of a weak student moved between
        # batches of 64 and 4, and served records differed from `predict --json`'s): one text a model call,
        # tokenized together. Against 4 texts a call: 1.05x the texts per CPU second for a TinyBERT-4 at max_len 128
        # (no padding), 0.96x at max_len 64 (docs/performance.md, Serving). Exports since export VERSION 2 take
        # input_ids alone there (`_feed` gives a graph the inputs it declares)
        self.one_by_one = model_file == MODEL_INT8_ONNX
        if self.one_by_one:  # each text runs at its own length: nothing to pad (tokenizer.json may ask for it)
            self.tokenizer.no_padding()
        else:
            self.tokenizer.enable_padding(pad_id=int(info["pad_id"]), pad_token=str(info["pad_token"]))

    def _probs(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch_fast(texts)  # no character offsets: 0.6x the time of encode_batch
        if self.one_by_one:
            return softmax(np.concatenate([self.session.run(None, self._feed([e]))[0] for e in encodings]))
        return softmax(self.session.run(None, self._feed(encodings))[0])

    def _feed(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        arrays = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                  "token_type_ids": [e.type_ids for e in encodings]}
        return {name: np.asarray(arrays[name], dtype=np.int64) for name in self.inputs}


class OnnxTextCNNClassifier(TextClassifier):
    """A TextCNN's ONNX graph with its vocabularies and segmenter, fed the padded id streams PyTorch is fed."""

    def __init__(self, directory: Path, info: dict[str, Any], meta: LabelInfo, model_file: str, threads: int | None) -> None:
        super().__init__(meta.labels, meta.threshold, meta.halfwidth)
        config = json.loads((directory / CONFIG_JSON).read_text(encoding="utf-8"))
        words = config["input"] in ("words", "both")
        spec = export_segmenter_spec(directory, info) if words else SegmenterSpec()
        self.encoder, self.segmenter = textcnn_text_pipeline(directory, config, spec)
        self.min_len = max(config["kernel_sizes"])
        self.session = _session(directory / model_file, threads)

    def _probs(self, texts: list[str]) -> np.ndarray:
        words = [self.segmenter.cut(t) for t in texts] if self.segmenter is not None else None
        encoded = self.encoder(words, texts)
        feed = stream_arrays([encoded[i][0] for i in range(len(encoded))], self.min_len)
        return softmax(self.session.run(None, feed)[0])


def load_export(directory: Path, fp32: bool = False, threads: int | None = None) -> TextClassifier:
    """The classifier of an export directory; `fp32` runs model.onnx even when the export's model is int8;
    `threads`: onnxruntime threads a call (None: one per core)."""
    info = read_export_info(directory)
    meta = LabelInfo.load(directory)
    model_file = MODEL_ONNX if fp32 else str(info.get("model") or MODEL_ONNX)
    if info["kind"] == "bert":
        return OnnxBertClassifier(directory, info, meta, model_file, threads)
    if info["kind"] == "textcnn":
        return OnnxTextCNNClassifier(directory, info, meta, model_file, threads)
    if info["kind"] == "ngram-lr":
        spec = export_segmenter_spec(directory, info) if info.get("segmenter") else None
        return NgramClassifier(directory, meta, spec)
    raise UserError(f"{directory / EXPORT_JSON} names model kind '{info['kind']}', which this nlp_pipe version cannot run")
