"""Stage `finetune` on a tiny random BERT and 160 real labelled reviews: it learns, saves a directory the
Auto classes load with the same predictions as `nlp-pipe predict`, and resumes exactly after a kill."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import assert_pipeline_agrees, build, die_after_first_checkpoint, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.classifiers.fitting import layer_decay
from nlp_pipe.data.bert_inputs import Collator, auto_max_len, encode, tokenize
from nlp_pipe.data.labelled import load_splits
from nlp_pipe.metrics.scores import confusion_sums
from nlp_pipe.metrics.scores import summarize as classification_summary
from nlp_pipe.training.loop import BatchOrder
from nlp_pipe.training.trainer import make_optimizer

# a random 2x32 BERT learns the reviews' sentiment characters in a few epochs at a high learning rate
SETTINGS = dict(epochs=8, batch_size=8, lr=3e-3, warmup=0.1, precision="fp32", patience=0, seed=1)


def records(artifact, split):
    rows = [json.loads(line) for line in (artifact / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["split"] == split]


@pytest.fixture(scope="module")
def finetuned(tiny_bert, seg_reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "clf"
    return out, build("finetune", out, {"checkpoint": tiny_bert, "train": seg_reviews}, **SETTINGS)


def test_loss_falls_and_dev_beats_the_majority_class(finetuned, seg_reviews):
    out, manifest = finetuned
    train = records(out, "train")
    assert np.mean([r["loss"] for r in train[-3:]]) < 0.8 * np.mean([r["loss"] for r in train[:3]])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    dev_gold = metrics["dev"]["confusion_matrix"]
    majority = max(sum(row) for row in dev_gold) / sum(map(sum, dev_gold))
    assert metrics["dev"]["accuracy"] > majority
    assert manifest["metrics"]["split"].startswith("split 7:1:2")
    assert 0 <= manifest["metrics"]["padding_fraction"] < 0.25  # length-grouped batches
    # the figures README promises in every classifier manifest (only textcnn wrote test_unseen_accuracy before)
    assert {"dev_accuracy", "test_macro_f1", "test_unseen_accuracy", "baseline_test_unseen_accuracy"} <= set(manifest["metrics"])
    assert "Per class (test)" in (out / "report.md").read_text(encoding="utf-8")
    assert {"training_curves.png", "confusion_matrix.png", "labels.json", "report.md"} <= {p.name for p in out.iterdir()}


def test_artifact_loads_with_auto_classes_and_predicts_as_the_cli(finetuned, seg_reviews, tmp_path):
    out, _ = finetuned
    meta = json.loads((out / "labels.json").read_text(encoding="utf-8"))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(2)] == meta["labels"]
    texts = ["质量很好，非常满意，推荐购买！", "太差了", "一般般吧，" * 60, "物流快"]
    with torch.inference_mode():
        batch = tokenizer(texts, truncation=True, max_length=meta["max_seq_len"], padding=True, return_tensors="pt")
        expected = torch.softmax(model(**batch).logits, -1).numpy()
    clf = TextClassifier.load(out)
    np.testing.assert_allclose(clf.predict(texts), expected, atol=1e-5)
    np.testing.assert_allclose(clf.predict(texts, batch_size=1), expected, atol=1e-5)  # batching changes nothing
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = run_cli("predict", out, "--file", file, "--json")
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [r["label"] for r in rows] == [label for label, _ in clf.predict_labels(texts)]
    np.testing.assert_allclose([[r["probabilities"][n] for n in meta["labels"]] for r in rows], expected, atol=1e-5)


def test_a_split_with_test_given_is_labelled_as_the_train_dev_split_it_is(seg_reviews):
    """--test without --dev carves dev alone out of train: 7:1 (87.5/12.5), not 7:1:2."""
    splits = load_splits(seg_reviews, None, seg_reviews, 3)
    assert splits.origin == "split 7:1 (train:dev) from train (stratified, seed 3); test given"
    assert len(splits.dev) / (len(splits.train) + len(splits.dev)) == pytest.approx(1 / 8, abs=0.02)
    assert load_splits(seg_reviews, None, None, 3).origin == "split 7:1:2 (train:dev:test) from train (stratified, seed 3)"


def test_the_dev_threshold_is_folded_so_pipeline_and_argmax_decide_as_predict(finetuned, seg_reviews):
    out, manifest = finetuned
    meta = json.loads((out / "labels.json").read_text(encoding="utf-8"))
    assert meta["threshold"] is None and 0 < meta["threshold_folded"] < 1
    assert manifest["metrics"]["threshold"] == meta["threshold_folded"]
    splits = load_splits(seg_reviews, None, None, SETTINGS["seed"])
    test_texts = list(splits.test["text"])
    labels = [label for label, _ in TextClassifier.load(out).predict_labels(test_texts)]
    folded_accuracy = np.mean([a == b for a, b in zip(labels, splits.test["label"])])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert folded_accuracy == pytest.approx(metrics["test"]["accuracy"])  # argmax of the folded head = thresholded
    assert_pipeline_agrees(out, test_texts + list(splits.dev["text"]) + ["一般般吧，" * 200])


def test_resume_after_a_kill_continues_exactly(tiny_bert, seg_reviews, tmp_path, monkeypatch):
    inputs = {"checkpoint": tiny_bert, "train": seg_reviews}
    settings = {**SETTINGS, "epochs": 2, "eval_every": 4, "log_every": 2}
    build("finetune", tmp_path / "whole", inputs, **settings)
    die_after_first_checkpoint(monkeypatch)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        build("finetune", out, inputs, **settings)
    assert (tmp_path / "killed.checkpoints" / "step_000004").is_dir() and not out.exists()
    monkeypatch.undo()
    manifest = build("finetune", out, inputs, **settings)
    assert manifest["metrics"]["resumed_from_step"] == 4
    for split in ("train", "eval"):
        whole, resumed = records(tmp_path / "whole", split), records(out, split)
        assert [r["step"] for r in resumed] == [r["step"] for r in whole]
        numbers = lambda r: {k: v for k, v in r.items() if k not in ("split", "step_s", "tokens_per_s")}  # noqa: E731
        for a, b in zip(whole, resumed):
            assert numbers(a) == pytest.approx(numbers(b), rel=1e-4), (split, a["step"])
    assert not (tmp_path / "killed.checkpoints").exists()


def test_cross_validation_reports_every_fold(tiny_bert, seg_reviews, tmp_path):
    out = tmp_path / "cv"
    manifest = build("finetune", out, {"checkpoint": tiny_bert, "train": seg_reviews}, **{**SETTINGS, "epochs": 1, "folds": 2})
    cv = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["cross_validation"]
    assert len(cv["accuracy"]["folds"]) == 2 and 0 <= cv["accuracy"]["mean"] <= 1
    assert not [p for p in out.iterdir() if p.name.startswith(".fold")]
    assert "2-fold cross-validation" in (out / "report.md").read_text(encoding="utf-8")
    assert manifest["stage"] == "finetune"


def test_bad_checkpoint_is_a_one_line_error(seg_reviews, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("finetune", "--checkpoint", empty, "--train", seg_reviews, "--out", tmp_path / "x")
    assert result.code == 2 and len(result.err_lines) == 1 and "config.json" in result.err_lines[0]


def test_layer_decay_scales_learning_rates_by_depth():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3,
                                                     num_attention_heads=2, intermediate_size=16))
    scale = layer_decay(3, 0.5)
    assert scale("bert.encoder.layer.2.output.dense.weight") == 0.5
    assert scale("bert.encoder.layer.0.attention.self.query.weight") == 0.125
    assert scale("bert.embeddings.word_embeddings.weight") == 0.0625
    assert scale("classifier.weight") == 1.0 and layer_decay(3, 1.0) is None
    options = type("O", (), {"lr": 1.0, "weight_decay": 0.01})()
    optimizer = make_optimizer(model, options, scale)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.0625
    assert lr_of[id(named["classifier.weight"])] == 1.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_length_grouped_batches_cover_each_example_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1000)
    order = BatchOrder(1000, 10, seed=3, processes=1, rank=0, per_epoch=100, lengths=lengths)
    batches = [order.indices(k) for k in range(100)]
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.2 * np.mean([np.ptp(lengths[rng.permutation(1000)[:10]]) for _ in range(50)])
    again = BatchOrder(1000, 10, seed=3, processes=1, rank=0, per_epoch=100, lengths=lengths)
    assert again.indices(57) == batches[57]  # the position alone decides: resumable
    assert BatchOrder(1000, 10, seed=3, processes=1, rank=0, per_epoch=100, lengths=lengths).indices(157) != batches[57]
    two = [BatchOrder(1000, 5, seed=3, processes=2, rank=r, per_epoch=100, lengths=lengths).indices(7) for r in (0, 1)]
    assert sorted(two[0] + two[1]) == sorted(batches[7])  # one global batch of similar lengths split over the ranks


def test_summed_confusion_counts_give_sklearns_figures():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 3).float()
    sums = {"loss": 1.0, "batches": 1.0}
    for part in range(4):  # summed over batches as the Trainer does
        s = slice(part * 50, (part + 1) * 50)
        for k, v in confusion_sums(logits[s], torch.as_tensor(gold[s]), 3).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    mine = classification_summary(sums, 3)
    assert mine["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert mine["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))


def test_collator_pads_to_the_longest_row_rounded_up_to_8(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    pad = tokenizer.pad_token_id
    batch = Collator(tokenizer)({"input_ids": [[101, 5, 102], [101, 102]], "label": [1, 0]})
    assert batch["input_ids"].tolist() == [[101, 5, 102] + [pad] * 5, [101, 102] + [pad] * 6]
    assert batch["attention_mask"].tolist() == [[1] * 3 + [0] * 5, [1] * 2 + [0] * 6] and batch["labels"].tolist() == [1, 0]
    assert Collator(tokenizer)({"input_ids": [list(range(1, 9))]})["input_ids"].shape == (1, 8)  # already a multiple
    assert auto_max_len(np.array([10, 20, 30, 1000]), 50, 512) == 32 and auto_max_len(np.array([2000]), 95, 512) == 512
    assert Counter(batch["labels"].tolist()) == {1: 1, 0: 1}


def test_bf16_training_saves_what_it_evaluates(tiny_bert, seg_reviews, tmp_path):
    """accelerate wraps the trained module's forward in autocast; the metrics and the reload check must see the
    fp32 model that is saved (this failed with 8e-4 probability differences before the forward was restored)."""
    manifest = build("finetune", tmp_path / "bf16", {"checkpoint": tiny_bert, "train": seg_reviews},
                     **{**SETTINGS, "epochs": 1, "precision": "bf16"})
    assert manifest["metrics"]["reload_check"].endswith("(max diff 0.0e+00)")


def test_unknown_characters_under_the_tokenizer_are_reported_with_the_fix(seg_reviews, tmp_path):
    """A checkpoint whose vocabulary lacks most characters of the data: the [UNK] share is measured per split
    and a notice names `expand`; a full vocabulary (the shared tiny BERT) stays below the notice."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    small = tmp_path / "small_vocab_bert"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"的了是很好不差一"]) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(small)
    BertTokenizer(vocab=str(vocab)).save_pretrained(small)
    manifest = build("finetune", tmp_path / "clf", {"checkpoint": small, "train": seg_reviews}, steps=2, batch_size=8,
                     precision="fp32")
    shares = manifest["metrics"]["vocabulary"]
    assert set(shares) == {"train", "dev", "test"} and all(0.5 < f["unk_share"] < 1 for f in shares.values())
    notices = manifest["reading"]["notices"]
    assert len(notices) == 3 and all("[UNK]" in n and "nlp-pipe expand" in n for n in notices)
    assert "[UNK] tokens" in (tmp_path / "clf" / "report.md").read_text(encoding="utf-8")


def test_a_full_vocabulary_gets_no_unknown_notice(finetuned):
    _, manifest = finetuned
    assert all(f["unk_share"] < 0.01 for f in manifest["metrics"]["vocabulary"].values())
    assert not manifest.get("reading", {}).get("notices")


def test_one_tokenizer_pass_gives_the_lengths_and_the_ids_of_a_truncating_call(tiny_bert, seg_reviews):
    """encode tokenises once: the lengths that choose max_len and the ids equal tokenizer(texts) untruncated and
    tokenizer(texts, truncation=True, max_length=max_len)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ds = load_splits(seg_reviews, None, None, 1).train
    texts = list(ds["text"])
    encoded, found = encode(ds, tokenizer, sorted(set(ds["label"])), None, 10.0, 512)
    full = np.array([len(x) for x in tokenizer(texts)["input_ids"]])
    assert found.max_len == auto_max_len(full, 10.0, 512) < full.max()
    assert encoded["input_ids"] == tokenizer(texts, truncation=True, max_length=found.max_len)["input_ids"]
    assert found.truncated == int((full > found.max_len).sum()) > 0
    for max_len in (8, 13):
        ids, cut = tokenize(tokenizer, [*texts, "", "a b c " * 20], max_len)
        assert ids == tokenizer([*texts, "", "a b c " * 20], truncation=True, max_length=max_len)["input_ids"]
        assert cut == [len(x) > max_len for x in tokenizer([*texts, "", "a b c " * 20])["input_ids"]]


def test_stage_training_defaults_are_data_on_the_inherited_fields():
    """A stage's TRAINING mapping sets its defaults of TrainOptions fields: same flags, types, ranges and order."""
    import dataclasses

    from nlp_pipe.core import config as configs
    from nlp_pipe.stages import distill, finetune, textcnn
    from nlp_pipe.training.options import TrainOptions, stage_defaults

    base = [f.name for f in configs.fields(TrainOptions)]
    for stage in (finetune, textcnn, distill):
        fields = {f.name: f for f in configs.fields(stage.Config)}
        assert [n for n in fields if n in base] == base, stage.NAME  # inherited fields keep their place
        assert {n: fields[n].default for n in stage.TRAINING} == stage.TRAINING
        assert stage.Config().lr == stage.TRAINING.get("lr", 1e-4)
    assert configs.fields(finetune.Config)[base.index("eval_every")].help.endswith("0 = once an epoch")
    with pytest.raises(configs.UserError, match="lr = -1.0 is below its minimum"):  # the range comes along
        configs.build(finetune.Config, {"lr": -1}, "finetune")
    with pytest.raises(TypeError, match="not inherited option fields"):
        stage_defaults({"learning_rate": 1.0})(type("Config", (TrainOptions,), {}))
    assert textcnn.Config().patience == textcnn.TRAINING["patience"] != finetune.Config().patience  # a ClassifierOptions field too
    assert dataclasses.fields(TrainOptions)[base.index("lr")].default == 1e-4  # the base is untouched


def test_a_saved_tokenizer_with_padding_and_truncation_on_encodes_real_tokens_only(tiny_bert, tmp_path):
    """A finetune artifact's tokenizer.json keeps the padding and truncation transformers switched on while
    predicting; the classifier inputs (finetune again, distill's teacher, extract) must still be each text's own
    tokens, cut at the max_len asked for: they were padded to the longest text with [PAD] counted as real."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = ["好", "这家酒店的服务很好，房间也很干净，下次还来", "一般般吧"]
    expected = [tokenizer(t, truncation=True, max_length=12)["input_ids"] for t in texts]
    tokenizer(texts, padding=True, truncation=True, max_length=6)  # as predicting did before the artifact was saved
    saved = tmp_path / "tok"
    tokenizer.save_pretrained(str(saved))
    assert json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))["padding"] is not None  # the case at hand
    reloaded = AutoTokenizer.from_pretrained(str(saved))
    ids, cut = tokenize(reloaded, texts, 12)
    assert ids == expected and cut == [False, True, False]


@pytest.mark.parametrize("stage", ["finetune", "distill"])
def test_a_checkpoint_whose_tokenizer_has_no_padding_token_is_refused_in_one_line(stage, tiny_bert, seg_reviews, tmp_path):
    """Every stage reading a checkpoint pads its batches: a tokenizer without a padding token is named, before any
    training (distill's teacher had no such check: it failed in the collator)."""
    import shutil

    from transformers import AutoTokenizer

    from nlp_pipe.core.errors import UserError

    checkpoint = tmp_path / "no_pad"
    shutil.copytree(tiny_bert, checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(str(checkpoint))
    assert AutoTokenizer.from_pretrained(str(checkpoint)).pad_token_id is None
    inputs = {"checkpoint" if stage == "finetune" else "teacher": checkpoint, "train": seg_reviews}
    with pytest.raises(UserError, match=f"^{stage}: the tokenizer in .*no_pad has no padding token$"):
        build(stage, tmp_path / "out", inputs, **SETTINGS)


def test_a_classifier_checkpoint_for_other_labels_gets_a_new_head(finetuned, tmp_path):
    """Fine-tuning a classifier on other labels of the same count: transformers loads the old head (same shape),
    which would start the new classes as the old ones while the manifest said "new (random)"; it is drawn anew.
    The same labels keep it."""
    from nlp_pipe.classifiers.decision import head_layer
    from nlp_pipe.classifiers.fitting import bert_classifier

    out, _ = finetuned
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    old = json.loads((out / "config.json").read_text(encoding="utf-8"))["id2label"]
    labels = [old[str(i)] for i in range(len(old))]
    kept, said = bert_classifier(out, labels, tokenizer, "finetune")
    assert said == "kept from the checkpoint"
    other, said = bert_classifier(out, ["x", "y"], tokenizer, "finetune")
    assert said == "new (random)" and other.config.id2label == {0: "x", 1: "y"}
    assert not torch.equal(head_layer(other).weight, head_layer(kept).weight)
    assert float(head_layer(other).bias.detach().abs().max()) == 0.0
