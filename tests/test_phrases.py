"""Stage `phrases`: planted collocations are found, the merged corpus keeps its rows."""

from __future__ import annotations

import csv
import random

import pytest

from conftest import build, lines
from nlp_pipe import runner
from nlp_pipe.core import config as configs
from nlp_pipe.core.errors import UserError
from nlp_pipe.stages import phrases as phrases_stage

FILLER = ("今天 我们 他们 觉得 非常 还是 可以 没有 一个 这个 那个 已经 因为 所以 但是 如果 就是 自己 什么 时候 "
          "东西 地方 问题 工作 学习 生活 朋友 城市 市场 公司 数据 服务 价格 质量 速度 效果 感觉 方便 简单 重要").split()
PLANTED = ("量子", "纠缠")  # always side by side, never apart
PLANTED_LINES = 30


def planted_corpus(path, trigram: tuple[str, ...] = ()) -> list[list[str]]:
    rng = random.Random(7)
    rows = []
    for i in range(240):
        words = rng.sample(FILLER, 8)
        if i % 8 == 0:
            at = rng.randrange(len(words) + 1)
            words[at:at] = list(PLANTED)
        if trigram and i % 8 == 3:
            at = rng.randrange(len(words) + 1)
            words[at:at] = list(trigram)
        rows.append(words)
    path.mkdir()
    (path / "corpus.txt").write_text("".join(" ".join(w) + "\n" for w in rows), encoding="utf-8")
    return rows


def run_phrases(src, out, **values):
    out.mkdir()
    cfg = configs.build(phrases_stage.Config, values, "test")
    return phrases_stage.run(cfg, {"corpus": [src]}, out)


def read_tsv(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_finds_a_planted_collocation(tmp_path):
    rows = planted_corpus(tmp_path / "seg")
    assert sum(1 for r in rows if "量子" in r) == PLANTED_LINES
    result = run_phrases(tmp_path / "seg", tmp_path / "out", min_count=5, scoring="npmi", threshold=0.8)
    found = read_tsv(tmp_path / "out" / "phrases.tsv")
    assert list(found[0]) == ["phrase", "score", "count", "parts"]
    assert [r["phrase"] for r in found] == ["量子纠缠"]  # the planted pair and no chance pair
    assert found[0]["parts"] == "量子 纠缠" and int(found[0]["count"]) == PLANTED_LINES
    assert float(found[0]["score"]) == pytest.approx(1.0, abs=1e-3)  # npmi of words never seen apart
    assert lines(tmp_path / "out" / "jieba_userdict.txt") == [f"量子纠缠 {PLANTED_LINES}"]
    assert result.counts.as_dict() == {"rows_in": 240, "rows_out": 240, "dropped": {}}
    assert result.metrics == {"phrases": 1, "merged_tokens": PLANTED_LINES}


def test_merged_corpus_keeps_every_row(tmp_path):
    rows = planted_corpus(tmp_path / "seg")
    run_phrases(tmp_path / "seg", tmp_path / "out", min_count=5, scoring="npmi", threshold=0.8, delimiter="_")
    merged = [line.split() for line in lines(tmp_path / "out" / "corpus.txt")]
    assert len(merged) == len(rows)
    for before, after in zip(rows, merged):
        assert ("量子_纠缠" in after) == ("量子" in before)
        assert "量子" not in after and " ".join(after).replace("量子_纠缠", "量子 纠缠") == " ".join(before)
    assert read_tsv(tmp_path / "out" / "phrases.tsv")[0]["phrase"] == "量子_纠缠"


def test_two_passes_find_a_trigram(tmp_path):
    planted_corpus(tmp_path / "seg", trigram=("深度", "神经", "网络"))
    run_phrases(tmp_path / "seg", tmp_path / "out", min_count=5, scoring="npmi", threshold=0.8, passes=2)
    found = {r["phrase"]: r["parts"] for r in read_tsv(tmp_path / "out" / "phrases.tsv")}
    assert found.get("深度神经网络") == "深度 神经 网络"  # parts are the original words
    merged = lines(tmp_path / "out" / "corpus.txt")
    assert sum("深度神经网络" in line.split() for line in merged) == 30 and len(merged) == 240
    assert not list((tmp_path / "out").glob(".pass*"))  # intermediate passes are removed


def test_on_a_real_segmented_corpus(seg_reviews, tmp_path):
    manifest = build("phrases", tmp_path / "p", {"corpus": seg_reviews}, min_count=3, scoring="npmi", threshold=0.3)
    found = read_tsv(tmp_path / "p" / "phrases.tsv")
    assert manifest["metrics"]["phrases"] == len(found) > 0
    assert len(lines(tmp_path / "p" / "corpus.txt")) == len(lines(seg_reviews / "corpus.txt")) == 160
    assert manifest["counts"] == {"rows_in": 160, "rows_out": 160, "dropped": {}}
    for row in found:
        assert row["phrase"] == row["parts"].replace(" ", "") and float(row["score"]) >= 0.3 and int(row["count"]) >= 3
        assert all(any(ch.isalnum() for ch in part) for part in row["parts"].split())  # no punctuation parts


@pytest.mark.parametrize("values, message", [
    ({"scoring": "npmi", "threshold": 1.5}, "threshold = 1.5 is outside -1..1"),
    ({"scoring": "npmi", "threshold": -2}, "threshold = -2.0 is outside -1..1"),
    ({"threshold": 0}, "threshold = 0.0 must be positive with default scoring"),
    ({"delimiter": " "}, "delimiter must not contain whitespace"),
    ({"passes": 5}, "passes = 5 is above its maximum 4"),
    ({"scoring": "pmi"}, "scoring = 'pmi' is not one of: default, npmi"),
])
def test_bad_config_is_a_user_error(seg_reviews, tmp_path, values, message):
    with pytest.raises(UserError) as err:
        runner.plan("phrases", values, {"corpus": seg_reviews}, tmp_path / "p")
    assert message in str(err.value) and str(err.value).startswith("stage 'phrases': ")
