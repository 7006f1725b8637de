"""Models learn: each stage trained on a small fixture with a planted signal (made here, seeded) must reach a
stated bar on held-out data, where chance or a broken trainer does not.

- classification: a text's label is set by one planted word (5 words per label) among 6 filler words; TextCNN
  (characters, no n-gram bag, so the convolutions must learn it) and the TF-IDF baseline reach >= 0.9 held-out
  accuracy (chance 0.5; shuffled training labels or zeroed gradients stay near it);
- word2vec: words of 3 groups share their group's contexts only; the stage's own similarity evaluation (pairs
  scored 1 within a group, 0 across) must give >= 0.95 of the Spearman a perfect split reaches (0.77 with these
  ties), and each word's nearest planted word is from its group;
- pretraining: documents each written in one of 6 four-character "topics"; the MLM loss on held-out documents must
  fall below 0.9 x the fixture's unigram entropy (computed here from the tokens), the loss of the best predictor
  that ignores context;
- task distillation: a student given the teacher's soft labels on many unlabelled texts agrees with the teacher on
  >= 0.85 of held-out texts and beats the same student fine-tuned on the few labelled texts alone.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from conftest import FIXTURES, build

POS = ["满意", "推荐", "喜欢", "超值", "舒服"]
NEG = ["失望", "糟糕", "退货", "难用", "后悔"]
FILLER = ["房间", "手机", "快递", "价格", "服务", "屏幕", "包装", "早餐", "电池", "颜色", "尺寸", "声音", "我们", "这个",
          "今天", "感觉", "东西", "朋友", "质量", "外观", "老板", "下午", "商场", "窗户"]


def planted_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text): 6 filler words and one label word at a random place; labels alternate."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(FILLER, k=6)
        words.insert(rng.randrange(7), rng.choice(POS if label == "pos" else NEG))
        rows.append((label, "".join(words) + "。"))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("planted")
    splits = {"train": planted_texts(200, 1), "dev": planted_texts(40, 2), "test": planted_texts(100, 3)}
    out = {}
    for name, rows in splits.items():
        out[name] = d / f"seg_{name}"
        build("segment", out[name], {"corpus": [write_tsv(d / f"{name}.tsv", rows)]}, workers=1)
    return out


def test_textcnn_learns_the_planted_words(planted, tmp_path):
    manifest = build("textcnn", tmp_path / "cnn", dict(planted), input="chars", ngrams=0, epochs=5, filters=16, batch_size=16, lr=5e-3,
                     seed=1, baseline=False)
    assert manifest["metrics"]["test_accuracy"] >= 0.9, manifest["metrics"]


def test_baseline_learns_the_planted_words(planted, tmp_path):
    manifest = build("baseline", tmp_path / "baseline", dict(planted), seed=1, min_df=1)
    assert manifest["metrics"]["test_accuracy"] >= 0.9, manifest["metrics"]


GROUPS = {"fruit": ["苹果", "香蕉", "葡萄", "西瓜"], "animal": ["老虎", "狮子", "熊猫", "猴子"],
          "vehicle": ["汽车", "火车", "飞机", "轮船"]}
CONTEXTS = {"fruit": [["我", "吃", "了", "{}"], ["{}", "很", "甜"], ["一", "斤", "{}", "多少", "钱"]],
            "animal": [["动物园", "里", "有", "{}"], ["{}", "在", "跑"], ["喂", "{}", "吃", "肉"]],
            "vehicle": [["坐", "{}", "去", "北京"], ["{}", "开", "得", "快"], ["买", "了", "一", "辆", "{}"]]}


def test_word2vec_recovers_the_planted_groups(tmp_path):
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        group = rng.choice(list(GROUPS))
        template = rng.choice(CONTEXTS[group])
        lines.append(" ".join(w.format(rng.choice(GROUPS[group])) for w in template))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    words = [(g, w) for g, ws in GROUPS.items() for w in ws]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{a} {b} {int(ga == gb)}\n" for i, (ga, a) in enumerate(words) for gb, b in words[i + 1:]),
                     encoding="utf-8")
    manifest = build("word2vec", tmp_path / "w2v", {"corpus": str(corpus), "similarity": str(pairs)}, vector_size=16,
                     window=3, min_count=1, epochs=10, workers=1, seed=1)
    from scipy import stats

    gold = [int(ga == gb) for i, (ga, _) in enumerate(words) for gb, _ in words[i + 1:]]
    ceiling = stats.spearmanr(gold, [g + 1e-6 * i for i, g in enumerate(gold)])[0]  # every in-group pair above every other
    assert manifest["metrics"]["similarity_spearman"] >= 0.95 * ceiling, (manifest["metrics"], ceiling)
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(str(tmp_path / "w2v" / "vectors.kv"))
    group_of = {w: g for g, w in words}
    nearest = {w: max((o for o in group_of if o != w), key=lambda o: kv.similarity(w, o)) for w in group_of}
    assert all(group_of[nearest[w]] == group_of[w] for w in group_of), nearest


TOPICS = ["春夏秋冬", "东南西北", "金木水火", "山川河海", "花草树木", "日月星云"]


def test_pretraining_lowers_mlm_loss_below_the_unigram_entropy(tmp_path, monkeypatch):
    """Each document draws its characters from one of 6 topics of 4: context (the other characters of the block)
    says the topic, so a model that reads it can reach ln 4 = 1.39 nats; one that ignores it, the unigram entropy
    (ln 24 = 3.18 at most). Observed: 3.22 after 50 steps (the unigram plateau), 2.31 after 150."""
    from transformers import BertTokenizer

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # no thread count from the machine's load: the same float sums every run
    rng = random.Random(0)
    docs = []
    for _ in range(150):
        chars = rng.choice(TOPICS)
        docs.append("\n".join("".join(rng.choices(chars, k=12)) + "。" for _ in range(8)))
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    vocab = FIXTURES / "bert_zh" / "vocab.txt"
    tokenizer = BertTokenizer(vocab=str(vocab))
    tokens = Counter(t for doc in docs for t in tokenizer.tokenize(doc.replace("\n", "")))
    total = sum(tokens.values())
    entropy = -sum(c / total * math.log(c / total) for c in tokens.values())  # nats, as the MLM loss
    model = tmp_path / "small.json"
    model.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                                 "max_position_embeddings": 64}), encoding="utf-8")
    out = tmp_path / "bert"
    build("pretrain", out, {"corpus": [str(corpus)], "tokenizer": str(vocab)}, model_config=str(model), max_seq_len=64,
          steps=150, batch_size=16, lr=3e-3, warmup=0.1, schedule="constant", weight_decay=0.0, log_every=50,
          eval_every=150, save_every=0, eval_docs=20, precision="fp32", num_proc=1, seed=3, sentence_task="none",
          masking="token")
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    evals = [r for r in evals if r["split"] == "eval"]
    assert evals[0]["mlm_loss"] > entropy  # it starts above (near ln of the vocabulary) ...
    assert evals[-1]["mlm_loss"] < 0.9 * entropy, (evals[-1]["mlm_loss"], entropy)  # ... and ends below


def test_task_distilled_student_follows_its_teacher_and_beats_the_same_student_alone(planted, tmp_path, monkeypatch):
    """The teacher (a tiny BERT fine-tuned on 200 planted rows) labels augmented copies of 16 rows; the distilled
    student must agree with it on >= 0.85 of held-out texts and beat, by >= 0.2 accuracy, the same student shape
    fine-tuned on the 16 labelled rows alone. Observed: agreement 1.0, 1.0 against 0.45 for the student alone."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    from conftest import make_tiny_bert
    from nlp_pipe import TextClassifier
    from nlp_pipe.models.tinybert import student_for

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    few = tmp_path / "seg_few"
    build("segment", few, {"corpus": [write_tsv(tmp_path / "few.tsv", planted_texts(16, 4))]}, workers=1)
    splits = {"dev": planted["dev"], "test": planted["test"]}
    bert = make_tiny_bert(tmp_path / "bert")
    teacher = tmp_path / "teacher"
    build("finetune", teacher, {"checkpoint": bert, "train": planted["train"], **splits}, epochs=6, batch_size=8, lr=3e-3,
          precision="fp32", patience=0, seed=1)
    vectors = tmp_path / "w2v"
    build("word2vec", vectors, {"corpus": planted["train"]}, vector_size=16, min_count=1, epochs=5, workers=1)
    augmented = tmp_path / "aug"
    build("augment", augmented, {"corpus": few, "mlm": bert, "vectors": vectors}, copies=12, p=0.4, top_k=5)
    shape = tmp_path / "student.json"
    shape.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}),
                     encoding="utf-8")
    student = tmp_path / "student"
    build("distill", student, {"teacher": teacher, "train": few, **splits, "augmented": augmented}, mode="task",
          student_shape=str(shape), epochs=1, prediction_epochs=8, batch_size=8, lr=5e-3, precision="fp32", seed=1,
          speed_batch=4, speed_seq_len=32)
    torch.manual_seed(0)
    init = tmp_path / "student_init"
    BertForSequenceClassification(student_for(AutoConfig.from_pretrained(teacher), str(shape))) \
        .save_pretrained(init)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(init)
    alone = tmp_path / "alone"
    build("finetune", alone, {"checkpoint": init, "train": few, **splits}, epochs=8, batch_size=8, lr=5e-3, precision="fp32",
          patience=0, seed=1)

    held_out = planted_texts(100, 5)
    texts, gold = [t for _, t in held_out], np.array([label for label, _ in held_out])

    def labels(model: Path) -> np.ndarray:
        return np.array([label for label, _ in TextClassifier.load(model).predict_labels(texts)])

    agreement = float((labels(student) == labels(teacher)).mean())
    accuracy, alone_accuracy = float((labels(student) == gold).mean()), float((labels(alone) == gold).mean())
    assert agreement >= 0.85 and accuracy >= alone_accuracy + 0.2, (agreement, accuracy, alone_accuracy)
