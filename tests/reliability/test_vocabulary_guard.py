"""Every stage that loads a model with a tokenizer refuses a tokenizer whose ids outgrew the model's embedding rows
(`tokenizer.add_tokens` without `resize_token_embeddings`): one line naming both sizes and `nlp-pipe expand`, exit 2,
nothing published. In-process, each case well under a second after the shared fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, build, run_cli

NEW_WORDS = ["新词甲", "新词乙", "新词丙"]


def grown_tokenizer(source: Path, out: Path) -> Path:
    """A copy of `source` whose tokenizer has three added tokens and whose model was not resized."""
    from transformers import AutoTokenizer

    shutil.copytree(source, out)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    tokenizer.add_tokens(NEW_WORDS)
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def grown_mlm(tiny_bert, tmp_path_factory) -> Path:
    return grown_tokenizer(tiny_bert, tmp_path_factory.mktemp("guard") / "grown_mlm")


@pytest.fixture(scope="module")
def resized(grown_mlm, tmp_path_factory) -> Path:
    """grown_mlm done right: the model resized to its tokenizer (a teacher whose tokenizer a smaller student lacks)."""
    from transformers import BertForMaskedLM

    out = tmp_path_factory.mktemp("guard") / "resized"
    shutil.copytree(grown_mlm, out)
    model = BertForMaskedLM.from_pretrained(str(out))
    model.resize_token_embeddings(21131)
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def grown_classifier(tiny_bert, tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification (labels 0/1, as a finetune artifact of reviews has) with a grown tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("guard") / "grown_classifier"
    labels = {"id2label": {0: "0", 1: "1"}, "label2id": {"0": 0, "1": 1}}
    BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2, **labels).save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    tokenizer.add_tokens(NEW_WORDS)
    tokenizer.save_pretrained(str(out))
    return out


def args(case: str, seg_reviews: Path, mlm: Path, classifier: Path, resized: Path, plain: Path, tmp: Path) -> list:
    words = tmp / "words.txt"
    words.write_text("深度学习\n", encoding="utf-8")
    vectors = tmp / "w2v"
    if case == "augment":
        build("word2vec", vectors, {"corpus": seg_reviews}, min_count=1, epochs=1, vector_size=8, workers=1)
    student = tmp / "student.json"
    student.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                   "intermediate_size": 32}), encoding="utf-8")
    common = ["--steps", "2", "--batch-size", "4", "--precision", "fp32"]
    return {
        "pretrain": ["pretrain", "--corpus", FIXTURES / "news.txt", "--init", mlm, "--max-seq-len", "64", *common],
        "finetune": ["finetune", "--checkpoint", mlm, "--train", seg_reviews, "--max-seq-len", "32", *common],
        "extract": ["extract", "--checkpoint", mlm, "--corpus", seg_reviews],
        "distill-general": ["distill", "--mode", "general", "--teacher", mlm, "--corpus", seg_reviews,
                            "--student-shape", student, *common],
        "distill-task-teacher": ["distill", "--mode", "task", "--teacher", classifier, "--train", seg_reviews,
                                 "--student-shape", student, *common],
        "distill-student": ["distill", "--mode", "general", "--teacher", resized, "--student", plain,
                            "--corpus", seg_reviews, *common],
        "augment": ["augment", "--corpus", seg_reviews, "--mlm", mlm, "--vectors", vectors],
        "expand": ["expand", "--checkpoint", mlm, "--words", words],
    }[case]


STAGES = ["pretrain", "finetune", "extract", "distill-general", "distill-task-teacher", "distill-student", "augment",
          "expand"]


@pytest.mark.parametrize("case", STAGES)
def test_tokenizer_past_the_embeddings_is_refused(case, tmp_path, seg_reviews, grown_mlm, grown_classifier, resized,
                                                   tiny_bert):
    out = tmp_path / "out"
    result = run_cli(*args(case, seg_reviews, grown_mlm, grown_classifier, resized, tiny_bert, tmp_path), "--out", out)
    assert result.code == 2, result.err[-2000:]
    line = result.err_lines[-1]
    assert "21,131 token ids" in line and "21,128 embedding rows" in line and "`nlp-pipe expand`" in line, line
    assert not out.exists()
