"""Never delete what is not ours, never use a changed input: the ownership and verification guarantees.

docs/reliability.md (section 7) lists each guarantee with the test here that checks it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, build, run_cli
from nlp_pipe import runner
from nlp_pipe.core import artifacts
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def seg(tmp_path) -> Path:
    out = tmp_path / "seg"
    build("segment", out, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    return out


def test_a_directory_with_someone_elses_manifest_is_never_replaced(tmp_path):
    webapp = tmp_path / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "manifest.json").write_text('{"name": "pwa"}', encoding="utf-8")
    (webapp / "index.html").write_text("<html/>", encoding="utf-8")
    (webapp / "src" / "app.js").write_text("run()", encoding="utf-8")
    before = snapshot(webapp)
    for force in ([], ["--force"]):
        result = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", webapp, "--workers", "1", *force)
        assert result.code == 2 and len(result.err_lines) == 1, result
        assert "not an nlp-pipe artifact" in result.err and "schema marker" in result.err
    assert snapshot(webapp) == before


def test_invalid_json_manifest_is_named_as_such(tmp_path):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "manifest.json").write_text("{not json", encoding="utf-8")
    result = run_cli("inspect", out)
    assert result.code == 2 and "not valid JSON (line 1, column 2)" in result.err, result


@pytest.mark.parametrize("how", ["equal", "inside", "contains"])
def test_out_may_not_be_hold_or_lie_inside_an_input(seg, how):
    out = {"equal": seg, "inside": seg / "vocab", "contains": seg.parent}[how]
    before = snapshot(seg)
    result = run_cli("vocab", "--corpus", seg, "--out", out)
    assert result.code == 2 and len(result.err_lines) == 1, result
    assert f"input 'corpus' ({seg})" in result.err and {"equal": " is ", "inside": "lies inside", "contains": "contains"}[how] in result.err
    assert snapshot(seg) == before and not (seg / "vocab").exists()


def test_out_that_is_an_input_through_a_symlink_is_refused(seg, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(seg, target_is_directory=True)
    result = run_cli("phrases", "--corpus", seg, "--out", link)
    assert result.code == 2 and "input 'corpus'" in result.err, result


def test_files_a_user_added_inside_an_artifact_stop_a_rebuild(seg):
    (seg / "NOTES.md").write_text("my notes", encoding="utf-8")
    (seg / "mine").mkdir()
    (seg / "mine" / "a.txt").write_text("x", encoding="utf-8")
    result = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", seg, "--workers", "1", "--force")
    assert result.code == 2 and "does not list (NOTES.md, mine/)" in result.err, result
    assert (seg / "NOTES.md").read_text(encoding="utf-8") == "my notes" and (seg / "mine" / "a.txt").exists()


def test_unlisted_lists_files_and_folders_once():
    manifest = {"files": [{"name": "dataset/a.arrow"}, {"name": "corpus.txt"}]}
    tmp = Path(__import__("tempfile").mkdtemp())
    try:
        for name in ("dataset/a.arrow", "corpus.txt", "dataset/extra.bin", "notes/deep/x.txt", "README"):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text("x", encoding="utf-8")
        (tmp / "manifest.json").write_text("{}", encoding="utf-8")
        assert manifests.unlisted(tmp, manifest) == ["README", "dataset/extra.bin", "notes/"]
    finally:
        shutil.rmtree(tmp)


def test_an_input_that_lost_lines_is_refused_and_status_says_changed(seg, tmp_path):
    corpus = seg / "corpus.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    corpus.write_text("".join(lines[:-50]), encoding="utf-8")
    result = run_cli("vocab", "--corpus", seg, "--out", tmp_path / "voc")
    assert result.code == 2 and len(result.err_lines) == 1, result
    assert "changed on disk" in result.err and "corpus.txt" in result.err and f"nlp-pipe inspect {seg}" in result.err
    assert not (tmp_path / "voc").exists()
    plan = runner.plan("segment", {"workers": 1}, {"corpus": [FIXTURES / "reviews.tsv"]}, seg)
    assert not plan.fresh and plan.reason.startswith("changed on disk") and plan.changed
    with pytest.raises(UserError, match="changed on disk.*--force"):
        runner.execute(plan)
    runner.execute(plan, force=True)  # --force rebuilds it: the files are its own
    assert manifests.verify(seg) == [] and len((seg / "corpus.txt").read_text(encoding="utf-8").splitlines()) == len(lines)


def test_pipeline_status_and_run_show_changed_on_disk(tmp_path):
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(f"name: t\nworkdir: {tmp_path / 'w'}\nstages:\n"
                    f"  - stage: segment\n    inputs: {{corpus: {FIXTURES / 'reviews.tsv'}}}\n    config: {{workers: 1}}\n"
                    "  - stage: vocab\n    inputs: {corpus: '${segment}'}\n", encoding="utf-8")
    assert run_cli("run", pipe).code == 0
    (tmp_path / "w" / "segment" / "corpus.txt").write_text("tampered\n", encoding="utf-8")
    status = run_cli("status", pipe)
    assert status.code == 0 and "changed on disk" in status.out, status
    again = run_cli("run", pipe)
    assert again.code == 2 and "changed on disk" in again.err and "--force" in again.err, again
    assert run_cli("run", pipe, "--force").code == 0
    assert manifests.verify(tmp_path / "w" / "segment") == []


def test_unchanged_artifacts_are_checked_by_stat_and_a_moved_mtime_is_hashed_once(seg, monkeypatch):
    manifest = manifests.read_manifest(seg)
    hashed = []
    original = manifests.sha256_file
    monkeypatch.setattr(manifests, "sha256_file", lambda p: hashed.append(p) or original(p))
    assert manifests.check_files(seg, manifest) == [] and hashed == []  # size + mtime only
    os.utime(seg / "corpus.txt", ns=(1, 1))  # same content, other mtime (a copy without -p, a touch)
    assert manifests.check_files(seg, manifest) == [] and [p.name for p in hashed] == ["corpus.txt"]
    assert manifests.check_files(seg, manifest) == [] and len(hashed) == 1  # remembered in .seg.verified.json
    assert (seg.parent / ".seg.verified.json").exists()


def test_tampered_vectors_are_refused_before_use(tmp_path, seg):
    w2v = tmp_path / "w2v"
    build("word2vec", w2v, {"corpus": seg}, min_count=1, vector_size=8, epochs=1, workers=1)
    npy = next(w2v.glob("vectors.kv*.npy"))
    array = np.load(npy)
    np.save(npy, np.zeros_like(array))
    os.utime(npy, ns=(2, 2))  # even with the size unchanged and the mtime moved, the hash catches it
    result = run_cli("word2vec-eval", w2v, "--similarity", FIXTURES.parent.parent / "vocab" / "similarity_zh.txt")
    assert result.code == 2 and "changed on disk" in result.err, result


def test_all_zero_vectors_are_refused(tmp_path):
    text = tmp_path / "zeros.txt"
    text.write_text("2 3\n好 0 0 0\n坏 0 0 0\n", encoding="utf-8")
    result = run_cli("import-vectors", "--vectors", text, "--out", tmp_path / "imp")
    assert result.code == 2 and "all zeros" in result.err, result


def test_lock_files_go_when_released_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "seg"
    (tmp_path / ".seg.lock").write_text("pid 999999", encoding="utf-8")  # left by a killed run
    build("segment", out, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    assert not (tmp_path / ".seg.lock").exists()
    with artifacts.locked(out):
        assert (tmp_path / ".seg.lock").read_text(encoding="utf-8") == f"pid {os.getpid()}"
    assert not (tmp_path / ".seg.lock").exists()


def test_manifests_carry_the_schema_marker_and_legacy_ones_still_count(seg):
    data = json.loads((seg / "manifest.json").read_text(encoding="utf-8"))
    assert next(iter(data)) == "schema" and data["schema"] == manifests.SCHEMA
    del data["schema"]  # an artifact of an earlier nlp_pipe version
    (seg / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    assert manifests.read_manifest(seg) is not None


def test_a_checkpoint_folder_the_package_did_not_make_is_refused_and_kept(tmp_path, seg_reviews, tiny_bert):
    """NAME.checkpoints/ is removed once the artifact is published: one that was there before (the user's files,
    even named like checkpoints) is refused in one line before any training, and left as it was."""
    work = tmp_path / "bert.checkpoints"
    (work / "step_000010").mkdir(parents=True)
    (work / "notes.txt").write_text("precious", encoding="utf-8")
    before = snapshot(work)
    result = run_cli("pretrain", "--corpus", seg_reviews, "--init", tiny_bert, "--out", tmp_path / "bert", "--steps", "2",
                     "--batch-size", "4", "--max-seq-len", "32")
    assert result.code == 2 and len(result.err_lines) == 1 and "was not made by nlp-pipe" in result.err, result
    assert snapshot(work) == before and (work / "step_000010").is_dir() and not (tmp_path / "bert").exists()


def test_cleanup_removes_only_what_the_package_wrote_in_its_work_folder(tmp_path):
    """A file dropped into a marked work folder during the run survives the cleanup (and so does its folder); an
    unmarked folder is never touched; a marked folder holding a stranger is refused by the next run."""
    work = tmp_path / "x.checkpoints"
    artifacts.claim_work_dir(work, ("run.json", "step_*"), "test")
    (work / "step_000002").mkdir()
    (work / "step_000002" / "model.safetensors").write_bytes(b"w")
    (work / "run.json").write_text("{}", encoding="utf-8")
    (work / "mine.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(UserError, match="holds files nlp-pipe did not write \\(mine.txt\\)"):
        artifacts.claim_work_dir(work, ("run.json", "step_*"), "test")
    artifacts.remove_work_dir(work)
    assert sorted(p.name for p in work.iterdir()) == [artifacts.WORK_MARK, "mine.txt"]
    (work / "mine.txt").unlink()
    artifacts.remove_work_dir(work)
    assert not work.exists()
    theirs = tmp_path / "y.checkpoints"
    (theirs / "step_000001").mkdir(parents=True)
    artifacts.remove_work_dir(theirs)
    assert (theirs / "step_000001").is_dir()


def test_cache_rm_all_touches_only_what_the_cache_wrote(tmp_path):
    """`cache rm --all --dir DIR` took every folder as a kind and every subfolder as an entry: a photo album's
    2024/trip went. A folder that is not a cache is refused (ls and rm); in a cache, only entries with their
    stats.json and unfinished builds go, a stranger's folder in it stays."""
    photos = tmp_path / "photos"
    (photos / "2024" / "trip").mkdir(parents=True)
    (photos / "2024" / "trip" / "a.jpg").write_bytes(b"jpg")
    for command in ("ls", "rm"):
        result = run_cli("cache", command, *(["--all"] if command == "rm" else []), "--dir", photos)
        assert result.code == 2 and len(result.err_lines) == 1 and "is not an nlp-pipe cache" in result.err, result
    assert (photos / "2024" / "trip" / "a.jpg").read_bytes() == b"jpg"
    cache = tmp_path / "cache"
    entry, unfinished, stranger = (cache / "pretraining" / name for name in ("0123456789abcdef", ".0123456789abcdef.tmp-1a2b3c4d", "mine"))
    for folder in (entry, unfinished, stranger):
        folder.mkdir(parents=True)
    (entry / "stats.json").write_text('{"built_for": {"inputs": ["c.txt"]}}', encoding="utf-8")
    (stranger / "notes.txt").write_text("precious", encoding="utf-8")
    listed = run_cli("cache", "ls", "--dir", cache)
    assert listed.code == 0 and "0123456789abcdef" in listed.out and "mine" not in listed.out, listed
    result = run_cli("cache", "rm", "--all", "--dir", cache)
    assert result.code == 0 and "removed 2 entries" in result.out, result
    assert sorted(p.name for p in (cache / "pretraining").iterdir()) == ["mine"]


@pytest.mark.parametrize("where", ["an input", "--out", "inside --out", "another artifact"])
def test_the_cache_folder_may_not_be_an_input_the_out_or_inside_an_artifact(tmp_path, seg, tiny_bert, where):
    """`pretrain --cache-dir` wrote its cache inside an input artifact (which then failed `inspect` and could not be
    rebuilt), or built the whole cache in --out and only then refused to publish: refused up front, in one line."""
    out = tmp_path / "bert"
    cache = {"an input": tiny_bert, "--out": out, "inside --out": out / "cache", "another artifact": seg / "cache"}[where]
    before = snapshot(seg)
    with pytest.raises(UserError, match=f"--cache-dir {cache} (is|lies inside) (input|--out|the artifact)") as err:
        runner.plan("pretrain", {"cache_dir": str(cache)}, {"corpus": [FIXTURES / "news.txt"], "tokenizer": tiny_bert}, out)
    assert "\n" not in str(err.value)
    assert snapshot(seg) == before and not out.exists()
