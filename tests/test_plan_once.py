"""`nlp-pipe run` plans each stage once (before any work starts), and plans a stage again only when an upstream
artifact on disk is not the one planned."""

from __future__ import annotations

import yaml

from conftest import FIXTURES, run_cli
from nlp_pipe import runner


def pipeline(tmp_path):
    doc = {"name": "once", "workdir": str(tmp_path / "runs"), "stages": [
        {"stage": "segment", "inputs": {"corpus": str(FIXTURES / "news.txt")}, "config": {"workers": 1}},
        {"stage": "vocab", "inputs": {"corpus": "${segment}"}, "config": {"min_freq": 1}}]}
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def count_plans(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = runner.plan

    def counted(stage, *args, **kwargs):
        calls.append(stage)
        return original(stage, *args, **kwargs)

    monkeypatch.setattr(runner, "plan", counted)
    return calls


def test_run_plans_each_stage_once(tmp_path, monkeypatch):
    path = pipeline(tmp_path)
    calls = count_plans(monkeypatch)
    result = run_cli("run", path)
    assert result.code == 0, result.err
    assert calls == ["segment", "vocab"]
    calls.clear()
    assert run_cli("run", path).code == 0 and calls == ["segment", "vocab"]  # both fresh: planned once, skipped


def test_a_stale_upstream_left_out_is_planned_against_the_disk(tmp_path, monkeypatch):
    path = pipeline(tmp_path)
    assert run_cli("run", path).code == 0
    calls = count_plans(monkeypatch)
    result = run_cli("run", path, "--only", "vocab", "--set", "segment.hmm=false")  # segment now stale, not run
    assert result.code == 0, result.err
    assert calls == ["segment", "vocab", "vocab"] and "fresh, skipped" in result.err
