"""`nlp-pipe export`: every classifier kind as an export that the one loader runs on onnxruntime (or numpy), with
the same labels as its PyTorch artifact, and without torch or transformers importable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import build, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.classifiers.exported import load_export
from nlp_pipe.core.errors import UserError

# texts none of the fixtures hold: the export must agree on text it was not checked on
UNSEEN = ["物流很快，包装也结实，下次还来", "客服态度恶劣，再也不买了", "ＡＢＣ牌子的耳机音质一般般", "还行吧", "差",
          "这本书的内容非常精彩，值得反复阅读，强烈推荐给大家", "电池续航太短，充一次电用不了半天"]

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is forbidden on the serving path")
sys.meta_path.insert(0, Block())
from nlp_pipe.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def classifiers(tiny_bert, seg_reviews, tmp_path_factory) -> dict[str, Path]:
    """A finetune (BERT), a word+char TextCNN with its n-gram bag and a word-n-gram baseline, tiny (~15 s in all)."""
    work = tmp_path_factory.mktemp("export")
    build("finetune", work / "finetune", {"checkpoint": tiny_bert, "train": seg_reviews}, steps=30, batch_size=8, lr=3e-3,
          precision="fp32")  # trained enough that its probabilities depend on the text (a 2-step model hardly does)
    build("word2vec", work / "w2v", {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=8, workers=1)
    build("textcnn", work / "textcnn", {"train": seg_reviews, "vectors": work / "w2v"}, input="both", epochs=1, filters=4,
          batch_size=16, baseline=False)
    build("baseline", work / "baseline", {"train": seg_reviews}, analyzer="char+word", min_df=1)
    return {name: work / name for name in ("finetune", "textcnn", "baseline")}


@pytest.mark.parametrize("kind,quantize", [("finetune", "int8"), ("textcnn", "int8"), ("baseline", "none")])
def test_export_gives_the_artifacts_labels_on_unseen_texts(classifiers, tmp_path, kind, quantize):
    source = classifiers[kind]
    out = tmp_path / "export"
    result = run_cli("-q", "export", source, "--out", out, "--quantize", quantize)
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    m = manifest["metrics"]
    assert m["fp32_labels_identical"] is True and m["fp32_max_abs_delta"] <= 1e-4 and m["parity_texts"] > 100
    assert manifest["inputs"]["model"]["fingerprints"] == [json.loads((source / "manifest.json").read_text())["fingerprint"]]
    assert "Parity on" in (out / "report.md").read_text(encoding="utf-8")
    reference = TextClassifier.load(source)
    fp32 = load_export(out, fp32=True)
    expected = reference.predict(UNSEEN)
    assert [label for label, _ in fp32.predict_labels(UNSEEN)] == [label for label, _ in reference.decide(expected)]
    assert np.abs(fp32.predict(UNSEEN) - expected).max() <= 1e-4
    served = TextClassifier.load(out)  # the int8 graph where one was made
    assert np.abs(served.predict(UNSEEN) - expected).max() < (0.05 if quantize == "int8" else 1e-6)
    if kind == "finetune":  # int8 BERT: a text's probabilities do not depend on the texts batched with it
        assert np.array_equal(served.predict(UNSEEN, batch_size=1), served.predict(UNSEEN))
        # one unpadded text a call: its graph takes input_ids alone (no mask to build and add), the one-text
        # graph it was quantised from is not published (sabotaged: quantised from model.onnx, this failed)
        assert served.inputs == ["input_ids"] and not (out / "model_one_text.onnx").exists()  # type: ignore[attr-defined]
        # and its last layer works on the [CLS] row alone, the one row the pooler reads (sabotaged: the whole
        # one-text model traced, this failed)
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        rows = _rows_of_width(out / "model_int8.onnx", 7, config["intermediate_size"])
        assert sorted(set(rows)) == [1, 7] and rows.count(1) == rows.count(7) // (config["num_hidden_layers"] - 1)
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert info["model"] == ("model_int8.onnx" if quantize == "int8" else None)
    if kind != "finetune":  # word-level models ship their cut: spec, jieba dictionary and user dictionary, hashed
        seg = info["segmenter"]
        assert (out / seg["dictionary"]).stat().st_size > 1_000_000 and len(seg["dictionary_sha256"]) == 64
        assert (out / "segmenter.json").exists() and (out / seg["userdict"]).exists()


def _rows_of_width(graph: Path, tokens: int, width: int) -> list[int]:
    """Rows of each [batch, rows, width] float tensor the graph computes for one text of `tokens` ids."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    model.graph.output.extend(v for v in inferred if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input_ids": np.arange(101, 101 + tokens, dtype=np.int64)[None]})
    return [int(o.shape[1]) for o in outputs if o.ndim == 3 and o.shape[2] == width]


def test_an_export_runs_where_torch_and_transformers_cannot_be_imported(classifiers, tmp_path):
    """`nlp-pipe predict EXPORT --json` in a fresh process whose import system refuses torch and transformers."""
    rows = {}
    for kind in ("finetune", "textcnn", "baseline"):
        out = tmp_path / kind
        build("export", out, {"model": classifiers[kind]}, quantize="int8" if kind != "baseline" else "none")
        args = ["predict", str(out), "--json", *[a for t in UNSEEN for a in ("--text", t)]]
        proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[kind] = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["label"] for r in rows[kind]] == [label for label, _ in TextClassifier.load(out).predict_labels(UNSEEN)]
    assert len(rows) == 3
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "predict", str(classifiers["baseline"]), "--text", "好"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0  # the baseline artifact itself never needed torch either
    for kind in ("finetune", "textcnn"):  # a PyTorch artifact there: one line saying to export it, not a traceback
        proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "predict", str(classifiers[kind]), "--text", "好"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "is a PyTorch artifact" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_predict_refuses_a_lone_surrogate_and_flags_that_do_not_apply(classifiers):
    """Bytes that were not UTF-8 on the command line reach Python as lone surrogates: a tokenizer's TypeError
    traceback before; `--compile` on a baseline was silently ignored."""
    for kind in ("finetune", "baseline"):
        with pytest.raises(UserError, match="text 2 holds characters that are not valid Unicode"):
            TextClassifier.load(classifiers[kind]).predict(["好", "\udcff好"])
    result = run_cli("predict", classifiers["baseline"], "--compile", "--text", "好")
    assert result.code == 2 and "apply to BERT classifiers" in result.err, result.err


def test_export_refuses_what_it_cannot_export_in_one_line(classifiers, seg_reviews, tmp_path):
    result = run_cli("export", seg_reviews, "--out", tmp_path / "x")
    assert result.code == 2 and len(result.err_lines) == 1, result
    result = run_cli("export", classifiers["baseline"], "--out", tmp_path / "x", "--quantize", "int8")
    assert result.code == 2 and "numpy model" in result.err and len(result.err_lines) == 1, result
    result = run_cli("export", classifiers["baseline"], "--model", classifiers["baseline"], "--out", tmp_path / "x")
    assert result.code == 2 and "once" in result.err, result
    (tmp_path / "empty.txt").write_bytes(b"")
    result = run_cli("export", classifiers["baseline"], "--out", tmp_path / "x", "--texts", tmp_path / "empty.txt")
    assert result.code == 2 and f"--texts {tmp_path / 'empty.txt'} has no texts" in result.err, result
    assert len(result.err_lines) == 1 and "manifest.json" not in result.err, result  # the model's dev data is there
    assert not (tmp_path / "x").exists()


def test_the_training_texts_halfwidth_mapping_is_applied_by_every_loader(tmp_path):
    """segment --halfwidth trains on half-width text; labels.json records it and TextClassifier, `nlp-pipe predict`,
    the export and so the server map new text alike, so full-width input gets the half-width input's probabilities.
    (On e59cf84 the mapping was not recorded: ＧＯＯＤ reached the model as n-grams it never saw.)"""
    rows = ["label\ttext"] + [f"pos\tＧＯＯＤ ｉｔｅｍ {i}号" for i in range(20)] + [f"neg\tＢＡＤ ｉｔｅｍ {i}号" for i in range(20)]
    (tmp_path / "data.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    build("segment", tmp_path / "seg", {"corpus": [tmp_path / "data.tsv"]}, workers=1, halfwidth=True)
    build("baseline", tmp_path / "clf", {"train": tmp_path / "seg"}, min_df=1)
    assert json.loads((tmp_path / "clf" / "labels.json").read_text(encoding="utf-8"))["halfwidth"] is True
    build("export", tmp_path / "export", {"model": tmp_path / "clf"})
    for directory in (tmp_path / "clf", tmp_path / "export"):
        clf = TextClassifier.load(directory)
        full, half = clf.predict(["ＧＯＯＤ", "ＢＡＤ"]), clf.predict(["GOOD", "BAD"])
        assert np.array_equal(full, half) and [label for label, _ in clf.decide(full)] == ["pos", "neg"]
    result = run_cli("predict", tmp_path / "export", "--text", "ＧＯＯＤ", "--json")
    assert result.code == 0 and json.loads(result.out)["label"] == "pos", result
