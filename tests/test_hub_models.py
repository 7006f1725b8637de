"""Model inputs as Hugging Face Hub ids, served from a local cache built here (HF_HUB_OFFLINE=1: no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import build, run_cli
from nlp_pipe import runner
from nlp_pipe.core import manifest as manifests

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def cache_model(source: Path, repo_id: str, commit: str, branch: str = "main") -> Path:
    """Put a model directory into the Hugging Face cache layout: refs/BRANCH -> snapshots/COMMIT/."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    if not snapshot.exists():
        shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit, encoding="utf-8")
    return snapshot


def finetune_plan(checkpoint: str, seg: Path, out: Path) -> runner.Plan:
    return runner.plan("finetune", {"steps": 2, "batch_size": 8, "precision": "fp32"}, {"checkpoint": checkpoint, "train": seg}, out)


def test_a_hub_id_runs_from_the_cache_and_its_commit_is_the_fingerprint(tiny_bert, seg_reviews, tmp_path):
    snapshot = cache_model(tiny_bert, "testorg/tiny-bert", COMMIT_A)
    out = tmp_path / "clf"
    manifest = build("finetune", out, {"checkpoint": "testorg/tiny-bert", "train": seg_reviews}, steps=2, batch_size=8,
                     precision="fp32")
    hub = manifest["inputs"]["checkpoint"]["hub"][0]
    assert hub == {"id": "testorg/tiny-bert", "revision": "main", "commit": COMMIT_A, "path": str(snapshot)}
    assert manifest["inputs"]["checkpoint"]["fingerprints"] == [f"hf:testorg/tiny-bert@{COMMIT_A}"]
    assert manifests.verify(out) == []
    assert finetune_plan("testorg/tiny-bert", seg_reviews, out).fresh
    pinned = tmp_path / "pinned"
    build("finetune", pinned, {"checkpoint": f"testorg/tiny-bert@{COMMIT_A}", "train": seg_reviews}, steps=2, batch_size=8,
          precision="fp32")
    cache_model(tiny_bert, "testorg/tiny-bert", COMMIT_B)  # main moves to a new commit
    moved = finetune_plan("testorg/tiny-bert", seg_reviews, out)
    assert not moved.fresh and "input changed: checkpoint" in moved.reason
    assert finetune_plan(f"testorg/tiny-bert@{COMMIT_A}", seg_reviews, pinned).fresh  # a pinned revision does not rerun


def test_a_hub_id_missing_offline_says_how_to_download(seg_reviews, tmp_path):
    result = run_cli("finetune", "--checkpoint", "someorg/not-cached", "--train", seg_reviews, "--out", tmp_path / "x")
    assert result.code == 2 and len(result.err_lines) == 1, result
    assert "not in the local Hugging Face cache" in result.err and "hf download someorg/not-cached" in result.err


def test_a_revision_missing_offline_names_it(tiny_bert, seg_reviews, tmp_path):
    cache_model(tiny_bert, "testorg/rev", COMMIT_A)
    result = run_cli("extract", "--checkpoint", "testorg/rev@v9", "--corpus", seg_reviews, "--out", tmp_path / "x")
    assert result.code == 2 and "hf download testorg/rev --revision v9" in result.err, result


@pytest.mark.parametrize("text,hub", [("hfl/rbt3", True), ("hfl/chinese-roberta-wwm-ext@main", True),
                                      ("runs/a/b", False), ("./x/y", False), ("plain", False)])
def test_what_counts_as_a_hub_id(text, hub):
    from nlp_pipe.checkpoints.references import looks_like_hub_id

    assert looks_like_hub_id(text) == hub


@pytest.mark.parametrize("listing,weights", [(["config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt"], ["*.safetensors"]),
                                             (["config.json", "pytorch_model.bin", "vocab.txt"], ["pytorch_model*.bin"])])
def test_one_weight_format_is_downloaded(monkeypatch, tmp_path, listing, weights):
    """A repo shipping both safetensors and .bin weights is fetched with safetensors only (not both)."""
    import huggingface_hub

    from nlp_pipe.checkpoints import references

    asked = {}
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")

    def snapshot_download(repo_id, revision=None, local_files_only=False, allow_patterns=None):
        asked["patterns"] = allow_patterns
        return str(tmp_path)

    monkeypatch.setattr(references, "offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    references.resolve("someorg/both-formats")
    assert [p for p in asked["patterns"] if p in ("*.safetensors", "pytorch_model*.bin")] == weights
    assert "*.json" in asked["patterns"] and "vocab.txt" in asked["patterns"]
