"""Stage `export`: a classifier as an ONNX graph plus its whole text pipeline, runnable without torch.

    nlp-pipe export runs/distill --out runs/distill_onnx --quantize int8
    nlp-pipe serve runs/distill_onnx

The model input is a finetune, distill, textcnn or baseline artifact. BERT classifiers and TextCNNs become
model.onnx (torch.onnx, dynamic batch and sequence axes; `--quantize int8` adds model_int8.onnx from
onnxruntime's dynamic quantisation and serves it); the baseline keeps its numpy model (exported.py says
why). Beside it: labels.json (labels, threshold, training max_len, text normalisation), tokenizer.json or
the vocabularies, segmenter.json with the jieba dictionary and user dictionary it cuts with (hashes in
export.json). Parity with the PyTorch artifact is measured before publishing, on `--texts` (a segment
artifact or a text file) or else the dev data named in the model's manifest: identical labels and
max |delta p| <= 1e-4 for fp32 or the export fails; int8's agreement and delta are reported; texts/s of both.
Load it with `nlp_pipe.TextClassifier.load(dir)`, `nlp-pipe predict dir` or `nlp-pipe serve dir`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..checkpoints.families import is_classifier
from ..classifiers.exported import EXPORT_FORMAT, MODEL_INT8_ONNX, MODEL_ONNX, load_export
from ..classifiers.labels import LabelInfo
from ..classifiers.loaded import EXPORT_JSON, TextClassifier
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, LABELS_JSON
from ..core.manifest import installed_versions, read_manifest
from ..text.corpus import read_texts
from ..text.formats import ReadOptions

NAME = "export"
# 2: a BERT's model_int8.onnx takes input_ids alone (one unpadded text a call: no mask, 0.9x the time);
# 3: its last layer computes the [CLS] row alone (0.82x the time)
VERSION = 3
OUTPUTS = (EXPORT_JSON, LABELS_JSON)
POSITIONAL = "model"  # `nlp-pipe export ARTIFACT --out DIR`
# what made the graph and what runs it, recorded in export.json (/metadata shows them)
EXPORT_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "jieba", "numba", "rjieba", "numpy")
FP32_MAX_DELTA = 1e-4

INPUTS = {
    "model": Input("classifier to export: a finetune, distill, textcnn or baseline artifact, or a Hugging Face "
                   "*ForSequenceClassification directory", kind="any", stages=("finetune", "distill", "textcnn", "baseline")),
    "texts": Input("texts for the parity check: a segment artifact or a text file (default: the model's dev data)",
                   kind="any", required=False, stages=("segment",)),
}


@dataclasses.dataclass(frozen=True)
class Config:
    quantize: Literal["none", "int8"] = option("none", "int8: also write model_int8.onnx (onnxruntime dynamic quantisation) "
                                                       "and serve it")
    parity_texts: int = option(500, "texts the parity check runs (the first N)", min=1)
    batch_size: int = option(32, "texts per batch when timing PyTorch and onnxruntime", min=1)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    from ..classifiers import onnx_export

    source = inputs["model"][0]
    kind = _kind(source)
    if config.quantize == "int8" and kind == "ngram-lr":
        raise UserError(f"export: {source} is a TF-IDF + LR baseline, exported as its numpy model; --quantize int8 "
                        "applies to BERT and TextCNN classifiers")
    texts, origin = _parity_texts(source, inputs["texts"][0] if inputs["texts"] else None, config.parity_texts)
    t0 = time.perf_counter()
    if kind == "bert":
        info = onnx_export.export_bert(source, out, one_text=config.quantize == "int8")
    else:
        info = {"textcnn": onnx_export.export_textcnn, "ngram-lr": onnx_export.export_baseline}[kind](source, out)
    export_s = time.perf_counter() - t0
    meta = LabelInfo.load(source)
    meta.save(out)
    if config.quantize == "int8":
        onnx_export.quantize_int8(out)
    info = {"format": EXPORT_FORMAT, **info, "runtime": info.get("runtime", "onnxruntime"),
            "model": MODEL_INT8_ONNX if config.quantize == "int8" else (None if kind == "ngram-lr" else MODEL_ONNX),
            "quantize": config.quantize, "halfwidth": meta.halfwidth, "source": _source(source),
            "versions": installed_versions(EXPORT_PACKAGES)}
    (out / EXPORT_JSON).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")

    reference = TextClassifier.load(source)
    ref_probs, ref_rate = _timed(reference, texts, config.batch_size)
    fp32_probs, fp32_rate = _timed(load_export(out, fp32=True), texts, config.batch_size)
    parity = _compare(reference, ref_probs, fp32_probs)
    if parity["labels_differ"] or parity["max_abs_delta"] > FP32_MAX_DELTA:
        raise UserError(f"export: the exported model disagrees with {source} on {len(texts)} texts ({parity['labels_differ']} "
                        f"labels differ, max |delta p| {parity['max_abs_delta']:.2e}, allowed {FP32_MAX_DELTA}); not published: "
                        "this model does not export faithfully, please report it")
    metrics: dict[str, Any] = {"kind": kind, "parity_texts": len(texts), "fp32_labels_identical": parity["labels_identical"],
                               "fp32_max_abs_delta": parity["max_abs_delta"], _reference_key(kind): round(ref_rate, 1),
                               f"{info['runtime']}_fp32_texts_per_s": round(fp32_rate, 1), "export_s": round(export_s, 2)}
    if config.quantize == "int8":
        int8_probs, int8_rate = _timed(load_export(out), texts, config.batch_size)
        q = _compare(reference, ref_probs, int8_probs)
        metrics |= {"int8_label_agreement": q["agreement"], "int8_max_abs_delta": q["max_abs_delta"],
                    "onnxruntime_int8_texts_per_s": round(int8_rate, 1)}
    info["parity"] = metrics
    (out / EXPORT_JSON).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return Result(Counts.of(len(texts)), metrics,
                  _report(source, kind, info, metrics, origin))


def _kind(source: Path) -> str:
    try:
        config = json.loads((source / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"export: {source} has no readable {CONFIG_JSON}; point to a finetune, distill, textcnn or "
                        "baseline artifact") from None
    if config.get("model_type") in ("textcnn", "ngram-lr"):
        return str(config["model_type"])
    if is_classifier(config.get("architectures")):
        return "bert"
    raise UserError(f"export: {source} holds a '{config.get('model_type')}' model, not a classifier")


def _parity_texts(source: Path, given: Path | None, limit: int) -> tuple[list[str], str]:
    """The first `limit` texts of `given`, else of the dev (or test) data the model's manifest names."""
    candidates = [given] if given is not None else []
    if given is None:
        inputs = (read_manifest(source) or {}).get("inputs", {})
        candidates = [Path(p) for role in ("dev", "test", "train") for p in (inputs.get(role) or {}).get("paths", [])]
    for path in candidates:
        if path.exists():
            texts = [text for text, _, _ in read_texts([path], ReadOptions(format="txt"), Counts(), "export")][:limit]
            if texts:
                return texts, str(path)
    if given is not None:
        raise UserError(f"export: --texts {given} has no texts to check the export against; give a text file (one text "
                        "a line) or a segment artifact")
    raise UserError(f"export: no texts to check the export against: the data named in {source}/manifest.json is gone; "
                    "pass --texts (a segment artifact or a text file)")


def _timed(clf: TextClassifier, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    clf.predict(texts[:batch_size], batch_size)  # warm-up: first-call allocations, lazy dictionary loads
    t0 = time.perf_counter()
    probs = clf.predict(texts, batch_size)
    return probs, len(texts) / max(time.perf_counter() - t0, 1e-9)


def _compare(reference: TextClassifier, expected: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    a = [label for label, _ in reference.decide(expected)]
    b = [label for label, _ in reference.decide(got)]
    differ = sum(x != y for x, y in zip(a, b))
    return {"labels_differ": differ, "labels_identical": differ == 0, "agreement": round(1 - differ / max(len(a), 1), 6),
            "max_abs_delta": float(np.abs(expected - got).max()) if len(a) else 0.0}


def _source(source: Path) -> dict[str, Any]:
    manifest = read_manifest(source) or {}
    return {"path": str(source.resolve()), "stage": manifest.get("stage"), "fingerprint": manifest.get("fingerprint")}


def _reference_key(kind: str) -> str:
    """The metric of the source artifact's texts/s: a baseline's runs on numpy, the others' on PyTorch."""
    return "artifact_texts_per_s" if kind == "ngram-lr" else "pytorch_texts_per_s"


def _report(source: Path, kind: str, info: dict[str, Any], m: dict[str, Any], origin: str) -> str:
    runtime = info["runtime"]
    rows = [f"| PyTorch artifact ({source.name}) | {m[_reference_key(kind)]} | - | - |",
            f"| {runtime} fp32 | {m[f'{runtime}_fp32_texts_per_s']} | {'yes' if m['fp32_labels_identical'] else 'NO'} | "
            f"{m['fp32_max_abs_delta']:.2e} |"]
    if "int8_label_agreement" in m:
        rows.append(f"| onnxruntime int8 | {m['onnxruntime_int8_texts_per_s']} | {m['int8_label_agreement']:.2%} agree | "
                    f"{m['int8_max_abs_delta']:.2e} |")
    seg = info.get("segmenter")
    lines = [f"## Export of a {kind} classifier", f"Source {source} (fingerprint {info['source']['fingerprint']}); serves "
             f"{info.get('model') or 'its numpy model'} on {runtime}.", "",
             f"Parity on {m['parity_texts']} texts of {origin}:", "",
             "| model | texts/s | labels identical | max abs delta p |", "| --- | --- | --- | --- |", *rows]
    if seg:
        lines += ["", f"Segmenter: {seg['engine']} (HMM {seg['hmm']}, {seg['mode']} mode), dictionary {seg['dictionary_origin']} "
                  f"(sha256 {seg['dictionary_sha256'][:12]}), {seg['userdict_words']} user-dictionary words."]
    if info.get("halfwidth"):
        lines += ["", "Texts are mapped to half-width before classification, as the training text was."]
    return "\n".join(lines)
