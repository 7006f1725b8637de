"""Stage `extract`: batched, length-sorted features equal the model run on one text at a time, in input order."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from conftest import build, lines, run_cli

# very different lengths (the last is cut at 128 tokens) in an order that length sorting changes
TEXTS = ["这家酒店的服务很好，房间干净，早餐也不错，下次还会再来。" * 3, "好", "价格¥5999，性能不错！iPhone 12 Pro 和 MacBook。",
         "差评", "今天天气很好，我们去公园散步。" * 20, "物流很快"]


@pytest.fixture(scope="module")
def reference(tiny_bert):
    """Hidden states of each text on its own: no batch, no padding."""
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()

    def states(text, layer=-1):
        with torch.no_grad():
            out = model(**tokenizer([text], truncation=True, max_length=128, return_tensors="pt"), output_hidden_states=True)
        return (out.last_hidden_state if layer == -1 else out.hidden_states[layer])[0].numpy()

    return states


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def extract(tmp_path, tiny_bert, corpus, name="out", **config):
    out = tmp_path / name
    manifest = build("extract", out, {"checkpoint": tiny_bert, "corpus": corpus}, **{"batch_size": 4, **config})
    return out, manifest


def index(out):
    return [json.loads(line) for line in lines(out / "index.jsonl")]


def test_cls_matches_one_text_at_a_time_in_input_order(tmp_path, tiny_bert, corpus, reference):
    out, manifest = extract(tmp_path, tiny_bert, corpus)
    features = np.load(out / "features.npy")
    assert features.shape == (len(TEXTS), 32) and features.dtype == np.float32
    for row, text in zip(features, TEXTS):
        np.testing.assert_allclose(row, reference(text)[0], atol=1e-5)
    assert [r["text"] for r in index(out)] == TEXTS and [r["row"] for r in index(out)] == list(range(len(TEXTS)))
    assert manifest["metrics"]["truncated"] == 1 and manifest["metrics"]["rows"] == len(TEXTS)
    assert 0 <= manifest["metrics"]["unk_share"] < 0.01 and manifest["metrics"]["truncated_share"] > 0
    assert "np.load" in (out / "report.md").read_text(encoding="utf-8")


def test_mean_excludes_padding(tmp_path, tiny_bert, corpus, reference):
    out, _ = extract(tmp_path, tiny_bert, corpus, pooling="mean")
    features = np.load(out / "features.npy")
    for row, text in zip(features, TEXTS):
        np.testing.assert_allclose(row, reference(text).mean(0), atol=1e-5)


def test_tokens_offsets_follow_index(tmp_path, tiny_bert, corpus, reference):
    out, manifest = extract(tmp_path, tiny_bert, corpus, pooling="tokens")
    features, offsets = np.load(out / "features.npy"), np.load(out / "offsets.npy")
    counts = [r["tokens"] for r in index(out)]
    assert offsets.dtype == np.int64 and offsets[0] == 0 and list(np.diff(offsets)) == counts
    assert features.shape == (sum(counts), 32) and max(counts) == 128 and manifest["metrics"]["tokens"] == sum(counts)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(features[offsets[i]:offsets[i + 1]], reference(text), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_dataset_format_equals_npy(tmp_path, tiny_bert, corpus, pooling):
    npy, _ = extract(tmp_path, tiny_bert, corpus, "npy", pooling=pooling, normalize=True)
    ds_out, _ = extract(tmp_path, tiny_bert, corpus, "ds", pooling=pooling, normalize=True, output_format="dataset")
    table = datasets.load_from_disk(str(ds_out / "dataset"))
    assert table["text"] == TEXTS and "label" not in table.column_names
    features = np.load(npy / "features.npy")
    if pooling == "tokens":
        offsets = np.load(npy / "offsets.npy")
        for i, row in enumerate(table["features"]):
            np.testing.assert_array_equal(np.array(row, dtype=np.float32), features[offsets[i]:offsets[i + 1]])
    else:
        np.testing.assert_array_equal(np.array(table["features"], dtype=np.float32), features)
        np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert not (ds_out / "features.npy").exists()


def test_empty_lines_dropped_and_counted(tmp_path, tiny_bert, reference):
    path = tmp_path / "gaps.txt"
    path.write_text("好\n\n   \n物流很快\n\n差评\n", encoding="utf-8")
    out, manifest = extract(tmp_path, tiny_bert, path)
    assert manifest["counts"] == {"rows_in": 6, "rows_out": 3, "dropped": {"empty": 3}}
    rows = index(out)
    assert [r["text"] for r in rows] == ["好", "物流很快", "差评"] and {r["source"] for r in rows} == {"gaps.txt"}
    for row, record in zip(np.load(out / "features.npy"), rows):
        np.testing.assert_allclose(row, reference(record["text"])[0], atol=1e-5)


def test_segment_artifact_corpus_keeps_labels(tmp_path, tiny_bert, seg_reviews):
    out, manifest = extract(tmp_path, tiny_bert, seg_reviews, batch_size=32)
    source = datasets.load_from_disk(str(seg_reviews / "dataset"))
    rows = index(out)
    assert len(rows) == len(source) == 160 == manifest["counts"]["rows_out"]
    assert [r["text"] for r in rows] == source["text"] and [r["label"] for r in rows] == source["label"]
    assert {r["source"] for r in rows} == {seg_reviews.name} and np.load(out / "features.npy").shape == (160, 32)


def test_layer_zero_is_the_embedding_output(tmp_path, tiny_bert, corpus, reference):
    out, _ = extract(tmp_path, tiny_bert, corpus, pooling="tokens", layer=0)
    features, offsets = np.load(out / "features.npy"), np.load(out / "offsets.npy")
    for i, text in enumerate(TEXTS):
        expected = reference(text, layer=0)
        assert not np.allclose(expected, reference(text))  # layer 0 really differs from the last layer
        np.testing.assert_allclose(features[offsets[i]:offsets[i + 1]], expected, atol=1e-5)


def test_cli_help_and_bad_checkpoint(tmp_path, tiny_bert, corpus):
    assert run_cli("extract", "--help").code == 0
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_bytes((tiny_bert / "config.json").read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(no_tokenizer, "has no tokenizer"), (empty, "has no config.json and no tokenizer")]
    for checkpoint, message in cases:
        bad = run_cli("extract", "--checkpoint", checkpoint, "--corpus", corpus, "--out", tmp_path / "bad")
        assert bad.code == 2 and len(bad.err_lines) == 1, bad.err
        assert bad.err_lines[0].startswith("error: ") and message in bad.err_lines[0] and str(checkpoint) in bad.err_lines[0]
    bad = run_cli("extract", "--checkpoint", tiny_bert, "--corpus", corpus, "--layer", "3", "--out", tmp_path / "bad")
    assert bad.code == 2 and "out of range" in bad.err_lines[-1], bad.err
