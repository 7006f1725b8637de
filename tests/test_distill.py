"""Stages `augment` and `distill` end to end on tiny models: general distillation gives a BertModel that
finetune loads; task distillation (from it, on augmented data) gives a classifier that predict and the
Auto classes load, with teacher/student figures and an int8 copy."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from conftest import assert_pipeline_agrees, build, fixture_lines, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.classifiers.decision import load_trained, log_odds
from nlp_pipe.classifiers.labels import LabelInfo
from nlp_pipe.models.int8 import load_int8
from nlp_pipe.models.tinybert import Distiller, soft_cross_entropy

STUDENT = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
FAST = dict(batch_size=8, lr=3e-3, precision="fp32", seed=1, speed_batch=4, speed_seq_len=32)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("distill")


@pytest.fixture(scope="module")
def student_shape(work):
    path = work / "student.json"
    path.write_text(json.dumps(STUDENT), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teacher(work, tiny_bert, seg_reviews):
    out = work / "teacher"
    build("finetune", out, {"checkpoint": tiny_bert, "train": seg_reviews}, epochs=6, batch_size=8, lr=3e-3,
          precision="fp32", patience=0, seed=1)
    return out


@pytest.fixture(scope="module")
def general(work, tiny_bert, seg_reviews, student_shape):
    out = work / "general"
    # 32-token blocks: the 160 short reviews fill 90 of them (a dozen steps an epoch; 128 would give 2)
    manifest = build("distill", out, {"teacher": tiny_bert, "corpus": [seg_reviews]}, mode="general",
                     student_shape=str(student_shape), epochs=2, max_seq_len=32, keep_checkpoints=True, **FAST)
    return out, manifest


def test_checkpoints_hold_what_trains_not_the_frozen_teacher(general, work):
    """Each checkpoint holds the student and the projections only (a BERT-base teacher would add ~400 MB each)."""
    from safetensors import safe_open

    saved = sorted((work / "general.checkpoints").glob("step_*/model*.safetensors"))
    assert saved
    for path in saved:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
        assert all(k.startswith(("student.", "projections.")) for k in keys), [k for k in keys if "teacher" in k][:3]
        assert any(k.startswith("projections.") for k in keys) and any(k.startswith("student.") for k in keys)


@pytest.fixture(scope="module")
def augmented(work, tiny_bert, seg_reviews):
    vectors = work / "w2v"
    build("word2vec", vectors, {"corpus": seg_reviews}, vector_size=16, min_count=1, epochs=1, workers=1)
    out = work / "aug"
    manifest = build("augment", out, {"corpus": seg_reviews, "mlm": tiny_bert, "vectors": vectors}, copies=2, p=0.4, top_k=3)
    return out, manifest


def test_general_student_is_a_bert_model_finetune_can_start_from(general, tmp_path, seg_reviews):
    out, manifest = general
    model = AutoModel.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 16)
    assert model.config.vocab_size == 21128
    metrics = manifest["metrics"]
    assert metrics["student_params"] < metrics["teacher_params"] and metrics["size_ratio"] > 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert {"embedding_loss", "hidden_loss", "attention_loss"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]  # the student moves toward the teacher
    clf = tmp_path / "clf"
    build("finetune", clf, {"checkpoint": out, "train": seg_reviews}, epochs=1, batch_size=8, precision="fp32")
    assert AutoModelForSequenceClassification.from_pretrained(clf).config.num_hidden_layers == 1


def test_augment_keeps_labels_and_marks_copies(augmented, seg_reviews):
    out, manifest = augmented
    table = datasets.load_from_disk(str(out / "dataset"))
    source = datasets.load_from_disk(str(seg_reviews / "dataset"))
    assert manifest["counts"]["rows_in"] == len(source) and len(table) == manifest["counts"]["rows_out"] > len(source)
    rows = table.to_list()
    for row in rows:
        assert row["label"] == source[row["source_row"]]["label"]
    originals = [r for r in rows if not r["augmented"]]
    assert [r["text"] for r in originals] == list(source["text"])
    assert 0.1 < manifest["metrics"]["replaced_fraction"] < 0.7


def test_task_distillation_from_the_general_student_with_augmented_data(work, teacher, general, augmented, seg_reviews):
    out = work / "task"
    manifest = build("distill", out, {"teacher": teacher, "train": seg_reviews, "augmented": augmented[0],
                                      "student": general[0]}, mode="task", epochs=1, prediction_epochs=3,
                     quantize="int8", **FAST)
    m = manifest["metrics"]
    assert m["augmented_rows"] > 0.7 * 112  # copies of the 7/10 train rows only, not of dev/test
    assert 0 < m["retention"] and 0 <= m["student_test_accuracy"] <= 1 and m["cpu_speedup"] > 0
    assert m["student_params"] < m["teacher_params"]
    assert set(m["vocabulary"]) == {"train", "dev"} and m["vocabulary"]["train"]["unk_share"] < 0.01
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 1 and model.config.id2label == {0: "neg", 1: "pos"}
    texts = ["质量很好，推荐", "太差了，不会再买"]
    probs = TextClassifier.load(out).predict(texts)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    int8 = load_int8(out)
    ids = torch.tensor([[101, 6574, 7030, 2523, 1962, 102]])
    with torch.inference_mode():
        close = (int8(input_ids=ids).logits - model.eval()(input_ids=ids).logits).abs().max().item()
    assert close < 0.5  # int8 linear layers: close to the float student, not equal
    result = run_cli("predict", out, "--int8", "--json", "--text", texts[0], "--text", texts[1])
    assert result.code == 0, result.err
    int8_probs = [[json.loads(line)["probabilities"][n] for n in ("neg", "pos")] for line in result.out.splitlines()]
    assert np.abs(np.array(int8_probs) - probs).max() < 0.1
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "retention" in report and "int8 student" in report
    assert (out / "training_curves_intermediate.png").exists() and (out / "training_curves_prediction.png").exists()
    assert not (work / "task.intermediate.checkpoints").exists() and not (work / "task.prediction.checkpoints").exists()
    assert json.loads((out / "labels.json").read_text(encoding="utf-8"))["threshold"] is None  # folded into the head
    assert_pipeline_agrees(out, fixture_lines("pos.txt")[:20] + fixture_lines("neg.txt")[:20])
    # the figures README promises in every classifier manifest, and the student's own dev threshold
    assert {"dev_accuracy", "test_accuracy", "test_unseen_accuracy", "baseline_test_unseen_accuracy", "threshold"} <= set(m)
    assert m["split"].startswith("split 7:1:2") and m["compared_on"] == "test" and "Per class (test)" in report


def test_the_teachers_soft_targets_are_its_trained_logits_not_its_folded_decision(teacher):
    """finetune folds its dev threshold into the head's bias; distillation takes it out again, so the student learns
    the teacher's probabilities and the threshold applies on top of the teacher alone."""
    folded_at = LabelInfo.load(teacher).threshold_folded
    assert folded_at is not None and abs(log_odds(folded_at)) > 1e-3  # else folding would change nothing
    model, _, threshold = load_trained(teacher)
    saved = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    batch = {"input_ids": torch.tensor([[101, 6574, 7030, 2523, 1962, 102], [101, 1922, 2345, 749, 102, 0]]),
             "attention_mask": torch.tensor([[1] * 6, [1] * 5 + [0]])}
    with torch.inference_mode():
        trained = saved(**batch).logits
        trained[:, 1] += log_odds(folded_at)  # the head before finetune folded the threshold into it
        student = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
        distiller = Distiller(model, student, mode="prediction").eval()
        targets = distiller.teacher(**batch).logits
        loss = distiller(**batch)["prediction_loss"]
        expected = soft_cross_entropy(student(**batch).logits, trained)
    assert threshold == folded_at
    torch.testing.assert_close(targets, trained, rtol=0, atol=1e-5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_augmented_data_of_another_corpus_is_refused(work, teacher, augmented, seg_news, tmp_path, fixtures):
    other = tmp_path / "seg_other"
    build("segment", other, {"corpus": [fixtures / "reviews.csv"]}, workers=1)
    result = run_cli("distill", "--mode", "task", "--teacher", teacher, "--train", other, "--augmented", augmented[0],
                     "--out", tmp_path / "x")
    assert result.code == 2 and "was not made from the train input" in result.err_lines[-1]


def test_augmented_data_of_part_of_the_train_input_is_refused(work, teacher, augmented, tmp_path, fixtures):
    """An augment of the first rows only (the train input grew since): the rows without copies would silently drop
    out of training (351 of about 1,050 rows trained in a user's run, exit 0)."""
    grown = tmp_path / "grown.tsv"
    grown.write_text((fixtures / "reviews.tsv").read_text(encoding="utf-8") + "pos\t新加的一行评论，服务很好。\n" * 30,
                     encoding="utf-8")
    train = tmp_path / "seg_grown"
    build("segment", train, {"corpus": [grown]}, workers=1)
    result = run_cli("distill", "--mode", "task", "--teacher", teacher, "--train", train, "--augmented", augmented[0],
                     "--out", tmp_path / "x")
    assert result.code == 2 and "holds no copy of" in result.err_lines[-1], result.err


def test_task_mode_needs_a_classifier_teacher(tiny_bert, seg_reviews, tmp_path):
    result = run_cli("distill", "--mode", "task", "--teacher", tiny_bert, "--train", seg_reviews, "--out", tmp_path / "x")
    assert result.code == 2 and "not a classifier" in result.err_lines[-1]


def test_a_preset_student_takes_the_teachers_attention_heads():
    from transformers import BertConfig

    from nlp_pipe.models.tinybert import student_for

    mini = BertConfig(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    shape = student_for(mini, "tinybert4")
    assert (shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.num_attention_heads) == (4, 312, 1200, 4)
    base = BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    assert student_for(base, "tinybert4").num_attention_heads == 12
    with pytest.raises(Exception, match="does not split"):
        student_for(BertConfig(hidden_size=280, num_attention_heads=7), "tinybert4")


def test_conflicting_student_options_are_refused(work, teacher, general, seg_reviews, tmp_path):
    """--student has its own shape: a --student-shape beside it was silently ignored."""
    result = run_cli("distill", "--mode", "task", "--teacher", teacher, "--train", seg_reviews, "--student", general[0],
                     "--student-shape", "tinybert6", "--out", tmp_path / "x")
    assert result.code == 2 and "Give one of them" in result.err_lines[-1], result.err


def test_general_distillation_trains_on_all_of_a_long_document(work, tiny_bert, student_shape, fixtures):
    """A document far longer than a block becomes several blocks that hold every one of its tokens (was: one
    example cut at max_seq_len, the rest never seen); the manifest and report say how much text was used. 3 s."""
    from transformers import AutoTokenizer

    news = [line for line in fixture_lines("news.txt") if line.strip()]
    documents = ["".join(news), *news[:3]]  # one document of ~1,400 characters and three sentences
    corpus = work / "long.txt"
    corpus.write_text("\n".join(documents) + "\n", encoding="utf-8")
    manifest = build("distill", work / "long", {"teacher": tiny_bert, "corpus": [corpus]}, mode="general",
                     student_shape=str(student_shape), steps=1, max_seq_len=32, eval_docs=0, num_proc=1, **FAST)
    m = manifest["metrics"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    tokens = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents)
    assert m["documents"] == 4 and m["text_tokens"] == tokens > 1000
    assert m["blocks"] >= tokens / 30  # [CLS] ... [SEP]: at most 30 tokens of text a block
    # each block: its text, [CLS], a closing [SEP], and at most one [SEP] more per document boundary
    assert tokens + 2 * m["blocks"] <= m["block_tokens"] <= tokens + 2 * m["blocks"] + len(documents)
    assert f"{tokens:,} tokens, every one of them in a block" in (work / "long" / "report.md").read_text(encoding="utf-8")


def test_general_distillation_of_no_text_names_distill(tiny_bert, tmp_path):
    """The corpus goes through pretraining's data path; its errors name the stage that was run. 1.3 s (the CLI in process)."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_cli("distill", "--mode", "general", "--teacher", tiny_bert, "--corpus", empty, "--steps", "1",
                     "--num-proc", "1", "--out", tmp_path / "x")
    assert result.code == 2 and result.err_lines[-1].startswith("error: distill: no text in"), result.err
