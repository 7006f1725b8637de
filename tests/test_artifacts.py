"""artifacts.py + runner.py: the manifest, fingerprints, atomic publish, the lock, killed runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, VENV_BIN, build, fixture_lines, lines, run_cli
from nlp_pipe import runner, stages
from nlp_pipe.core import artifacts
from nlp_pipe.core import config as configs
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.stages import vocab as vocab_stage

MANIFEST_KEYS = {"stage", "stage_version", "fingerprint", "config", "inputs", "files", "counts", "metrics",
                 "wall_time_s", "started", "finished", "nlp_pipe_version", "device"}


@pytest.fixture()
def seg(tmp_path):
    out = tmp_path / "seg"
    build("segment", out, {"corpus": [FIXTURES / "pos.txt", FIXTURES / "neg.txt"]}, workers=1, label_per_file="pos,neg")
    return out


def leftovers(parent):
    """Hidden temporaries of any artifact under `parent` (the lock files are meant to stay)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and ".tmp-" in p.name)


def test_manifest_records_everything(seg):
    manifest = json.loads((seg / manifests.MANIFEST).read_text(encoding="utf-8"))
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["stage"] == "segment" and manifest["stage_version"] == stages.load("segment").VERSION
    assert manifest["config"]["workers"] == 1 and manifest["config"]["label_per_file"] == ["pos", "neg"]
    module = stages.load("segment")
    assert manifest["config"] == configs.to_dict(configs.build(module.Config, manifest["config"], "x"))  # fully resolved
    corpus = manifest["inputs"]["corpus"]
    assert corpus["paths"] == [str(FIXTURES / "pos.txt"), str(FIXTURES / "neg.txt")]
    assert corpus["fingerprints"] == [manifests.sha256_file(FIXTURES / "pos.txt"), manifests.sha256_file(FIXTURES / "neg.txt")]
    assert manifest["inputs"]["userdict"] == {"paths": [], "fingerprints": []}
    inputs = {k: v["fingerprints"] for k, v in manifest["inputs"].items()}
    config = configs.build(module.Config, manifest["config"], "x")  # workers (1 here) is neutral: hashed at its default
    assert manifest["fingerprint"] == artifacts.fingerprint("segment", manifest["stage_version"],
                                                            artifacts.freshness_config(config, {}), inputs)
    assert manifest["counts"] == {"rows_in": 160, "rows_out": 160, "dropped": {}}
    assert manifest["metrics"]["labels"] == {"neg": 80, "pos": 80}
    assert isinstance(manifest["wall_time_s"], float) and manifest["wall_time_s"] >= 0
    started, finished = dt.datetime.fromisoformat(manifest["started"]), dt.datetime.fromisoformat(manifest["finished"])
    assert started.tzinfo is not None and started <= finished
    names = [f["name"] for f in manifest["files"]]
    assert names == sorted(names) and manifests.MANIFEST not in names
    assert {"corpus.txt", "report.md", "stage.log", "dataset/dataset_info.json"} <= set(names)
    for f in manifest["files"]:
        path = seg / f["name"]
        assert f["bytes"] == path.stat().st_size and f["sha256"] == manifests.sha256_file(path)
    report = (seg / artifacts.REPORT).read_text(encoding="utf-8")
    assert "rows: 160 in, 160 out" in report and "| pos | 80 |" in report


def test_downstream_input_fingerprint_is_the_upstream_fingerprint(seg, tmp_path):
    manifest = build("vocab", tmp_path / "voc", {"corpus": [seg]}, min_freq=1)
    assert manifest["inputs"]["corpus"]["fingerprints"] == [manifests.read_manifest(seg)["fingerprint"]]
    assert manifest["counts"] is None and manifest["metrics"]["size"] > 2


def test_verify_finds_tampering(seg):
    assert manifests.verify(seg) == []
    with open(seg / "corpus.txt", "a", encoding="utf-8") as fh:
        fh.write("多 一 行\n")
    (seg / "report.md").unlink()
    (seg / "extra.bin").write_bytes(b"\0")
    assert manifests.verify(seg) == ["missing file report.md", "sha256 mismatch in corpus.txt", "unrecorded file extra.bin"]


def test_fresh_plan_skips_and_changes_are_explained(seg, tmp_path):
    inputs = {"corpus": [FIXTURES / "pos.txt", FIXTURES / "neg.txt"]}
    config = {"workers": 1, "label_per_file": "pos,neg"}
    plan = runner.plan("segment", config, inputs, seg)
    assert plan.fresh and plan.fingerprint == manifests.read_manifest(seg)["fingerprint"]
    before = (seg / manifests.MANIFEST).stat().st_mtime_ns
    assert runner.execute(plan)["finished"] == manifests.read_manifest(seg)["finished"]
    assert (seg / manifests.MANIFEST).stat().st_mtime_ns == before  # skipped, nothing rewritten
    assert runner.plan("segment", {**config, "hmm": False}, inputs, seg).reason == "config changed: hmm"
    assert runner.plan("segment", {**config, "workers": 2}, inputs, seg).fresh  # how many processes cut: neutral


def test_input_content_not_mtime_decides_freshness(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("这家酒店很好。\n房间很干净。\n", encoding="utf-8")
    out = tmp_path / "seg"
    build("segment", out, {"corpus": [corpus]}, workers=1)
    os.utime(corpus, (time.time() + 100, time.time() + 100))
    assert runner.plan("segment", {"workers": 1}, {"corpus": [corpus]}, out).fresh
    corpus.write_text("这家酒店很好。\n房间很脏。\n", encoding="utf-8")
    plan = runner.plan("segment", {"workers": 1}, {"corpus": [corpus]}, out)
    assert plan.reason == "input changed: corpus"
    assert runner.execute(plan)["counts"]["rows_out"] == 2
    assert "脏" in lines(out / "corpus.txt")[1]  # the new content, not the old artifact


def test_force_rebuilds_a_fresh_artifact(seg):
    old = manifests.read_manifest(seg)
    plan = runner.plan("segment", {"workers": 1, "label_per_file": "pos,neg"},
                       {"corpus": [FIXTURES / "pos.txt", FIXTURES / "neg.txt"]}, seg)
    assert plan.fresh
    new = runner.execute(plan, force=True)
    assert new["fingerprint"] == old["fingerprint"] and new["started"] >= old["started"]
    assert manifests.read_manifest(seg) == new and manifests.verify(seg) == []


def _failing_run(config, inputs, out):
    (out / "half.txt").write_text("half written", encoding="utf-8")
    raise RuntimeError("boom in the middle of the stage")


def test_a_failing_stage_leaves_nothing_and_keeps_the_old_artifact(seg, tmp_path, monkeypatch):
    out = tmp_path / "voc"
    good = build("vocab", out, {"corpus": [seg]}, min_freq=1)
    monkeypatch.setattr(vocab_stage, "run", _failing_run)
    with pytest.raises(RuntimeError, match="boom"):
        build("vocab", out, {"corpus": [seg]}, min_freq=2)  # a changed config: must rebuild, and fails
    assert manifests.read_manifest(out) == good and manifests.verify(out) == []
    assert not (out / "half.txt").exists()
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"):
        build("vocab", tmp_path / "never", {"corpus": [seg]})  # first build fails: no directory at all
    assert not (tmp_path / "never").exists() and leftovers(tmp_path) == []


def test_a_user_error_inside_a_stage_leaves_nothing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no text left.*'empty': 3"):
        build("segment", tmp_path / "seg", {"corpus": [empty]}, workers=1)
    assert not (tmp_path / "seg").exists() and leftovers(tmp_path) == []


def test_out_that_is_not_an_artifact_is_never_replaced(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(UserError, match="not an nlp-pipe artifact"):
        build("segment", mine, {"corpus": [FIXTURES / "bom.txt"]}, workers=1)
    assert (mine / "thesis.txt").read_text(encoding="utf-8") == "precious" and leftovers(tmp_path) == []
    (tmp_path / "empty_dir").mkdir()  # an empty directory is fine to fill
    assert build("segment", tmp_path / "empty_dir", {"corpus": [FIXTURES / "bom.txt"]}, workers=1)["counts"]["rows_out"] == 10


def test_second_writer_gets_a_user_error_while_the_lock_is_held(tmp_path):
    out = tmp_path / "seg"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from nlp_pipe.core import artifacts\n"
         "with artifacts.locked(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        plan = runner.plan("segment", {"workers": 1}, {"corpus": [FIXTURES / "bom.txt"]}, out)
        with pytest.raises(UserError) as err:
            runner.execute(plan)
        assert f"is being written by pid {holder.pid}" in str(err.value) and "\n" not in str(err.value)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert runner.execute(plan)["counts"]["rows_out"] == 10  # the lock died with its holder


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    out = tmp_path / "a"
    with artifacts.locked(out):
        with pytest.raises(UserError, match="being written by pid"):
            with artifacts.locked(out):
                pass
    with artifacts.locked(out):  # released
        pass


def test_leftover_temporary_is_never_taken_as_finished(tmp_path):
    out = tmp_path / "seg"
    dead = tmp_path / ".seg.tmp-dead0000"
    shutil.copytree(FIXTURES, dead / "junk")
    (dead / manifests.MANIFEST).write_text('{"stage": "segment", "fingerprint": "x"}', encoding="utf-8")
    old = tmp_path / ".seg.tmp-old-dead0000"  # killed between the two renames of publish
    old.mkdir()
    plan = runner.plan("segment", {"workers": 1}, {"corpus": [FIXTURES / "bom.txt"]}, out)
    assert not plan.fresh and plan.reason == "no artifact yet"
    manifest = runner.execute(plan)
    assert manifest["counts"]["rows_out"] == 10 and manifests.verify(out) == []
    assert leftovers(tmp_path) == []  # cleaned up under the lock


def test_directory_without_manifest_is_not_finished(tmp_path):
    out = tmp_path / "seg"
    out.mkdir()
    plan = runner.plan("segment", {"workers": 1}, {"corpus": [FIXTURES / "bom.txt"]}, out)
    assert plan.reason == "no finished artifact (seg has no manifest.json)"
    with pytest.raises(UserError, match="has no manifest.json: not a finished nlp-pipe artifact"):
        manifests.require_manifest(out)
    with pytest.raises(UserError, match="does not exist"):
        manifests.require_manifest(tmp_path / "nothing")


def _big_corpus(path, megabytes: float) -> int:
    texts = fixture_lines("pos.txt") + fixture_lines("neg.txt") + [t for t in fixture_lines("news.txt") if t]
    n, size = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < megabytes * 1e6:
            line = f"第{n}条：{texts[n % len(texts)]}{texts[(n * 7) % len(texts)]}\n"
            fh.write(line)
            size += len(line.encode())
            n += 1
    return n


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes(tmp_path):
    corpus = tmp_path / "big.txt"
    rows = _big_corpus(corpus, 2.5)
    out = tmp_path / "seg"
    cmd = [str(VENV_BIN / "nlp-pipe"), "segment", "--corpus", str(corpus), "--out", str(out),
           "--workers", "1", "--chunk-rows", "200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until segmentation is under way: corpus.txt growing
            partial = list(tmp_path.glob(".seg.tmp-*/corpus.txt"))
            if partial and partial[0].stat().st_size > 100_000:
                break
            assert proc.poll() is None, "the run finished before it could be killed: make the corpus bigger"
            time.sleep(0.05)
        else:
            pytest.fail("segmentation never started")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not out.exists() and manifests.read_manifest(out) is None
    assert leftovers(tmp_path)  # the killed run's temporary is still there ...
    plan = runner.plan("segment", {"workers": 1, "chunk_rows": 200}, {"corpus": [corpus]}, out)
    assert not plan.fresh  # ... and is not taken for a finished artifact
    manifest = runner.execute(plan)
    assert manifest["counts"] == {"rows_in": rows, "rows_out": rows, "dropped": {}}
    assert len(lines(out / "corpus.txt")) == rows and manifests.verify(out) == []
    assert leftovers(tmp_path) == []


def test_a_large_raw_input_is_hashed_again_only_when_its_size_or_mtime_moves(tmp_path, monkeypatch):
    corpus = tmp_path / "big.txt"
    corpus.write_bytes("一行文字\n".encode() * 100_000)  # 1.3 MB: remembered
    first = artifacts.input_fingerprint(corpus, {})
    assert first == manifests.sha256_file(corpus)
    hashed = []
    monkeypatch.setattr(artifacts, "sha256_file", lambda p: hashed.append(p) or "rehashed")
    assert artifacts.input_fingerprint(corpus, {}) == first and not hashed  # unchanged: not read again
    os.utime(corpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert artifacts.input_fingerprint(corpus, {}) == "rehashed" and hashed == [corpus]  # mtime moved: read again


def test_the_shared_cache_folder_option_then_environment_then_beside_the_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.CACHE_ENV, raising=False)
    staging = tmp_path / "runs" / ".bert.tmp-1a2b3c4d"  # a stage's `out` while it builds
    assert artifacts.cache_dir(staging) == tmp_path / "runs" / "nlp_pipe_cache"
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "shared"))
    assert artifacts.cache_dir(staging) == tmp_path / "shared"
    assert artifacts.cache_dir(staging, str(tmp_path / "mine")) == tmp_path / "mine"


def test_out_inside_an_artifact_is_refused(seg, tmp_path):
    """An --out inside an existing artifact would leave the outer one holding files its manifest does not list."""
    outer = tmp_path / "voc"
    assert run_cli("vocab", "--corpus", seg, "--min-freq", "1", "--out", outer).code == 0
    result = run_cli("segment", "--corpus", FIXTURES / "news.txt", "--out", outer / "sub")
    assert result.code == 2 and f"lies inside the artifact {outer.resolve()}" in result.err, result.err
    assert not (outer / "sub").exists()


def test_an_artifact_of_another_stage_is_replaced_only_with_force(seg, tmp_path):
    """A typo in --out should not cost a trained model: another stage's artifact there needs --force."""
    out = tmp_path / "voc"
    assert run_cli("vocab", "--corpus", seg, "--min-freq", "1", "--out", out).code == 0
    before = (out / "manifest.json").read_text(encoding="utf-8")
    result = run_cli("segment", "--corpus", FIXTURES / "news.txt", "--out", out)
    assert result.code == 2 and "holds a vocab artifact" in result.err and "--force" in result.err, result.err
    assert (out / "manifest.json").read_text(encoding="utf-8") == before
    assert run_cli("segment", "--corpus", FIXTURES / "news.txt", "--out", out, "--force").code == 0
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stage"] == "segment"
