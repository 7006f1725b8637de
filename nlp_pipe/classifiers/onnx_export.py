"""Writing a classifier artifact as an export (classifiers/exported.py runs it): the ONNX graph and its text pipeline.

The graph comes from torch.onnx's TorchScript exporter (`dynamo=False`), with dynamic batch and sequence
axes. The dynamo exporter (torch.export + onnxscript) also exports these models with torch 2.13, but
specialises on the example's shapes unless every dimension is declared with torch.export.Dim, and a TextCNN's
"at least the widest kernel" padding rule becomes a guard; the tracer records the shape arithmetic as graph
ops, which is what a padded batch of any length needs (checked by the parity measured on every export).
optimum's exporter needs transformers < 4.58, so it cannot export transformers 5 models.
int8 is onnxruntime's dynamic quantisation (weights int8, activations quantised per batch).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.files import CHARS_TXT, CONFIG_JSON, NGRAMS_JSON, NGRAMS_TXT, SEGMENTER_JSON, USERDICT_TXT, VOCAB_TXT, WEIGHTS
from ..core.manifest import sha256_file
from ..text.segmenter import SegmenterSpec
from .exported import JIEBA_DICT, MODEL_INT8_ONNX, MODEL_ONNX, TOKENIZER_JSON, bundled_jieba_dict
from .labels import LabelInfo

OPSET = 17
_BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONE_TEXT_ONNX = "model_one_text.onnx"  # written and quantised within one export, never published


class _Positional(torch.nn.Module):
    """The model called with its inputs by name, from the positional tensors the tracer passes; its one output
    is the logits tensor (not a transformers ModelOutput)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, tensors)))
        return out if isinstance(out, torch.Tensor) else out.logits


class _GatherBag(torch.nn.Module):
    """nn.EmbeddingBag(mode="sum", padding_idx=0) as a gather and a weighted sum. torch.onnx cannot export an
    EmbeddingBag with padding_idx, and without it exports a Loop over bags; the TextCNN's per-sample weights
    are 0 at padding already, so the plain weighted sum is the same bag."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, ids: torch.Tensor, per_sample_weights: torch.Tensor) -> torch.Tensor:
        return (self.weight[ids] * per_sample_weights.unsqueeze(-1)).sum(dim=1)


class _ClsLastLayer(torch.nn.Module):
    """A BertForSequenceClassification for one text whose last layer works on the [CLS] row alone: the pooler
    reads only that row, and past the last layer's keys and values every op is row by row, so its query,
    attention, output projection, feed-forward and LayerNorms for the other rows were wasted (without them an
    int8 TinyBERT-4 call takes 0.82x the time). transformers' own cross-attention module (query from one
    tensor, keys and values from another) runs it with the layer's weights: the same logits (max |delta| 3e-8
    in fp32)."""

    def __init__(self, model: Any) -> None:
        from transformers.models.bert.modeling_bert import BertAttention

        super().__init__()
        self.model: Any = model
        last = model.bert.encoder.layer[-1]
        self.attention = BertAttention(model.config, is_cross_attention=True)
        self.attention.load_state_dict(last.attention.state_dict())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        bert = self.model.bert
        hidden = bert.embeddings(input_ids=input_ids)
        for layer in bert.encoder.layer[:-1]:
            hidden = layer(hidden)
        cls = hidden[:, :1]
        attended = self.attention(cls, encoder_hidden_states=hidden)[0]
        pooled = bert.pooler(bert.encoder.layer[-1].feed_forward_chunk(attended))
        return self.model.classifier(self.model.dropout(pooled))


def _one_text_model(model: torch.nn.Module) -> torch.nn.Module:
    """What ONE_TEXT_ONNX traces: a plain BERT classifier with its last layer cut to the [CLS] row, other
    architectures as they are."""
    from transformers import BertForSequenceClassification

    plain = type(model) is BertForSequenceClassification and not model.config.is_decoder
    return _ClsLastLayer(model) if plain else model


def _export(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path, dynamic: dict[str, dict[int, str]]) -> None:
    wrapped = _Positional(model, list(example)).eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice and tracer warnings about
        warnings.simplefilter("ignore")  # Python branches on shapes, which the parity check covers
        torch.onnx.export(wrapped, tuple(example.values()), str(path), input_names=list(example), output_names=["logits"],
                          dynamic_axes=dynamic | {"logits": {0: "batch"}}, opset_version=OPSET, dynamo=False)


def export_bert(source: Path, out: Path, one_text: bool = False) -> dict[str, Any]:
    """model.onnx (logits) and tokenizer.json of a *ForSequenceClassification artifact; export.json's fields.
    `one_text`: also ONE_TEXT_ONNX, the graph of one unpadded single-sentence text, which `quantize_int8` turns
    into model_int8.onnx (int8 runs one text a call: exported.OnnxBertClassifier)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    # eager attention: the sdpa path traces its mask handling into Where/IsNaN over every [batch, heads, len, len]
    # score tensor, 18% of an int8 TinyBERT-4 call; eager is the same function (parity below) at 0.85x the time
    model = AutoModelForSequenceClassification.from_pretrained(str(source), attn_implementation="eager").eval()
    meta = LabelInfo.find(source)
    max_len = (meta.max_seq_len if meta else None) or min(model.config.max_position_embeddings, 512)
    batch = tokenizer(["示例文本一", "第二条示例文本比较长一些"], padding=True, return_tensors="pt")
    example = {name: batch[name] for name in _BERT_INPUTS if name in tokenizer.model_input_names and name in batch}
    _export(model, example, out / MODEL_ONNX, {name: {0: "batch", 1: "sequence"} for name in example})
    if one_text:
        # input_ids alone: with no padding the mask is all ones and a single sentence's token types all zeros,
        # which is what the model assumes without them; the graph then neither builds nor adds a mask to
        # every layer's scores: the same logits (max |delta| 0.0) in 0.9x the time of an int8 TinyBERT-4 call.
        # Its last layer computes the [CLS] row alone: 0.82x the time again (docs/performance.md, Serving)
        _export(_one_text_model(model), {"input_ids": example["input_ids"][:1]}, out / ONE_TEXT_ONNX,
                {"input_ids": {0: "batch", 1: "sequence"}})
    tokenizer.backend_tokenizer.save(str(out / TOKENIZER_JSON))
    return {"kind": "bert", "inputs": list(example), "max_len": int(max_len), "pad_id": int(tokenizer.pad_token_id),
            "pad_token": str(tokenizer.pad_token), "architecture": type(model).__name__,
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size}


def export_textcnn(source: Path, out: Path) -> dict[str, Any]:
    """model.onnx of a TextCNN artifact (inputs: the id streams it reads), with its vocabularies and segmenter."""
    from ..data.word_ids import stream_arrays
    from ..models.textcnn import TextCNN

    model = TextCNN.load(source)
    if model.wide is not None:
        model.wide = _GatherBag(model.wide.weight)  # type: ignore[assignment]
    config = model.config
    streams = {"input_ids": config.input in ("words", "both"), "char_ids": config.input in ("chars", "both"),
               "ngram_ids": bool(config.ngram_vocab_size)}
    width = max(config.kernel_sizes) + 3
    rng = np.random.default_rng(0)
    vocab = {"input_ids": config.vocab_size, "char_ids": config.char_vocab_size, "ngram_ids": config.ngram_vocab_size}
    rows: list[Any] = [tuple(rng.integers(1, max(2, vocab[k]), size=width - i) if used else None for k, used in streams.items())
                       for i in range(2)]
    example = {k: torch.from_numpy(v) for k, v in stream_arrays(rows, max(config.kernel_sizes)).items()}
    _export(model.eval(), example, out / MODEL_ONNX, {name: {0: "batch", 1: f"{name}_length"} for name in example})
    for name in (CONFIG_JSON, VOCAB_TXT, CHARS_TXT, NGRAMS_TXT):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    info: dict[str, Any] = {"kind": "textcnn", "inputs": list(example), "input": config.input, "max_len": config.max_len}
    if streams["input_ids"]:
        info["segmenter"] = copy_segmenter(source, out)
    return info


def export_baseline(source: Path, out: Path) -> dict[str, Any]:
    """The baseline's numpy model files (see classifiers/exported.py for why not ONNX) and, for word n-grams, its segmenter."""
    for name in (CONFIG_JSON, NGRAMS_JSON, WEIGHTS):
        shutil.copyfile(source / name, out / name)
    config = json.loads((source / CONFIG_JSON).read_text(encoding="utf-8"))
    info: dict[str, Any] = {"kind": "ngram-lr", "runtime": "numpy", "analyzer": config.get("analyzer")}
    if config.get("analyzer", "char") != "char":
        info["segmenter"] = copy_segmenter(source, out)
    return info


def copy_segmenter(source: Path, out: Path) -> dict[str, Any]:
    """segmenter.json, the main jieba dictionary it cuts with (jieba's bundled dict.txt unless the spec names
    one) and its user dictionary as a `word freq` file, each with its sha256 for export.json."""
    spec = SegmenterSpec.load(source)
    spec.save(out)
    dictionary = Path(spec.dictionary) if spec.dictionary else bundled_jieba_dict()
    shutil.copyfile(dictionary, out / JIEBA_DICT)
    (out / USERDICT_TXT).write_text("".join(f"{w} {f}\n" if f is not None else f"{w}\n" for w, f in spec.userdict),
                                    encoding="utf-8")
    return {"spec": SEGMENTER_JSON, "engine": spec.engine, "engine_version": spec.engine_version, "hmm": spec.hmm,
            "mode": spec.mode, "dictionary": JIEBA_DICT, "dictionary_sha256": sha256_file(out / JIEBA_DICT),
            "dictionary_origin": "jieba bundled dict.txt" if spec.dictionary is None else Path(spec.dictionary).name,
            "userdict": USERDICT_TXT, "userdict_sha256": sha256_file(out / USERDICT_TXT), "userdict_words": len(spec.userdict)}


def quantize_int8(out: Path) -> None:
    """model_int8.onnx from ONE_TEXT_ONNX where `export_bert` wrote one (then removed), else from model.onnx:
    int8 weights for MatMul/Gemm (and the TextCNN's convolutions)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # its "consider pre-processing" hint goes to the root logger
    one_text = out / ONE_TEXT_ONNX
    try:
        graph = one_text if one_text.is_file() else out / MODEL_ONNX
        quantize_dynamic(str(graph), str(out / MODEL_INT8_ONNX), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        one_text.unlink(missing_ok=True)
