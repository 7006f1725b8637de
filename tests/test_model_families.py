"""The Chinese model families users fine-tune, each as a tiny random model of its model_type, through the stages.

BERT-architecture checkpoints (bert-base-chinese, RoBERTa-wwm-ext, MacBERT, RBT3) are model_type bert;
ERNIE 3.0, ALBERT, ELECTRA discriminators and MegatronBERT are their own types. The table these tests
check is nlp_pipe/checkpoints/families.py (and README's model families table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, assert_pipeline_agrees, build, fixture_lines, run_cli
from nlp_pipe.checkpoints.families import ALL, SUPPORTED
from nlp_pipe.core.errors import UserError

FAST = {"batch_size": 8, "precision": "fp32", "seed": 1}


def make(model_type: str, out: Path) -> Path:
    import torch
    import transformers as T

    torch.manual_seed(0)
    shape = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128)
    if model_type in ("albert", "electra"):
        shape["embedding_size"] = 16 if model_type == "albert" else 32
    config = T.AutoConfig.for_model(model_type, **shape)
    # a discriminator for ELECTRA (what Chinese ELECTRA checkpoints publish for fine-tuning), an MLM otherwise
    cls = T.ElectraForPreTraining if model_type == "electra" else T.AutoModelForMaskedLM._model_mapping[type(config)]
    cls(config).save_pretrained(out)
    T.BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt")).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=ALL)
def family(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, make(request.param, tmp_path_factory.mktemp(request.param) / "model")


def test_finetune_and_extract_take_every_family(family, seg_reviews, tmp_path):
    kind, model = family
    manifest = build("finetune", tmp_path / "clf", {"checkpoint": model, "train": seg_reviews}, steps=3, **FAST)
    assert manifest["metrics"]["steps"] == 3 and "TextClassifier.load reloads it" in manifest["metrics"]["reload_check"]
    config = json.loads((tmp_path / "clf" / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == kind and config["architectures"][0].endswith("ForSequenceClassification")
    assert json.loads((tmp_path / "clf" / "labels.json").read_text(encoding="utf-8"))["threshold_folded"] is not None
    assert_pipeline_agrees(tmp_path / "clf", fixture_lines("pos.txt")[:20] + fixture_lines("neg.txt")[:20])
    build("extract", tmp_path / "feats", {"checkpoint": model, "corpus": [seg_reviews]}, pooling="mean")
    features = np.load(tmp_path / "feats" / "features.npy")
    assert features.shape == (160, 32) and np.isfinite(features).all()


def test_expand_grows_every_family(family, tmp_path):
    kind, model = family
    words = tmp_path / "words.txt"
    words.write_text("机器学习\n性价比\n", encoding="utf-8")
    manifest = build("expand", tmp_path / "big", {"checkpoint": model, "words": [words]})
    assert manifest["metrics"]["vocab_size_after"] == 21130 and "bit-identical" in manifest["metrics"]["reload_check"]


def test_pretrain_init_where_an_mlm_head_exists(family, seg_reviews, tmp_path):
    kind, model = family
    inputs = {"corpus": [seg_reviews], "init": model}
    settings = {**FAST, "steps": 2, "batch_size": 4, "max_seq_len": 32, "eval_docs": 0, "sentence_task": "none"}
    if kind not in SUPPORTED["pretrain"]:
        with pytest.raises(UserError, match=f"'{kind}' model; pretrain takes bert, ernie"):
            build("pretrain", tmp_path / "pre", inputs, **settings)
        return
    manifest = build("pretrain", tmp_path / "pre", inputs, **settings)
    assert manifest["metrics"]["steps"] == 2 and "AutoModelForMaskedLM reloads it" in manifest["metrics"]["reload_check"]


def test_distill_teacher_where_attention_scores_are_exposed(family, seg_reviews, tmp_path):
    kind, model = family
    shape = tmp_path / "student.json"
    shape.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                 "intermediate_size": 64}), encoding="utf-8")
    inputs = {"teacher": model, "corpus": [seg_reviews]}
    settings = dict(mode="general", student_shape=str(shape), steps=2, speed_batch=2, speed_seq_len=16, **FAST)
    if kind not in SUPPORTED["distill"]:
        result = run_cli("distill", "--teacher", model, "--corpus", seg_reviews, "--mode", "general", "--steps", "1",
                         "--student-shape", shape, "--out", tmp_path / "d")
        assert result.code == 2 and f"'{kind}' model; distill takes" in result.err, result
        return
    manifest = build("distill", tmp_path / "d", inputs, **settings)
    assert manifest["metrics"]["steps"] == 2 and np.isfinite(manifest["metrics"]["train_attention_loss"])
