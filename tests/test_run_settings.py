"""What makes an artifact stale and a training run another run: a file an option names counts by its content, options
that never change the artifact (resume, checkpointing) are left out of freshness, and checkpoints of a run with other
settings block a plain rerun but not --force. textcnn on characters, a dozen tiny steps: about 2 s a build."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from conftest import FIXTURES, build, die_after_first_checkpoint
from nlp_pipe import runner, stages
from nlp_pipe.core import artifacts, process
from nlp_pipe.core import config as configs
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.training import options, trainer

TINY = {"input": "chars", "steps": 12, "save_every": 5, "filters": 4, "patience": 0, "baseline": False}


def pretrain_plan(tmp_path, shape, out=None) -> runner.Plan:
    """pretrain planned on inputs a pipeline is about to build (they need not exist), with a model_config file."""
    planned = {tmp_path / "seg": "a" * 64, tmp_path / "vocab": "b" * 64}
    return runner.plan("pretrain", {"model_config": str(shape)}, {"corpus": tmp_path / "seg", "tokenizer": tmp_path / "vocab"},
                       out or tmp_path / "bert", planned)


def test_a_file_an_option_names_counts_by_its_content(tmp_path):
    """student_shape / model_config entered the fingerprint and the run identity as a path: an edited file was
    'fresh' (and its old checkpoints crashed the resume on a size mismatch), a moved one retrained."""
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2}), encoding="utf-8")
    first = pretrain_plan(tmp_path, shape)
    identity = options.run_identity(first.config, {})
    shape.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2}), encoding="utf-8")
    edited = pretrain_plan(tmp_path, shape)
    assert edited.fingerprint != first.fingerprint
    edited_identity = options.run_identity(edited.config, {})
    assert edited_identity != identity  # its checkpoints are another run's: refused, not a crash on a size mismatch
    moved = tmp_path / "elsewhere" / "renamed.json"
    moved.parent.mkdir()
    shutil.move(shape, moved)
    again = pretrain_plan(tmp_path, moved)
    assert again.fingerprint == edited.fingerprint
    assert options.run_identity(again.config, {}) == edited_identity
    # an artifact built from the first content says why it is stale
    out = tmp_path / "bert"
    out.mkdir()
    (out / manifests.MANIFEST).write_text(json.dumps({
        "schema": manifests.SCHEMA, "stage": "pretrain", "stage_version": stages.load("pretrain").VERSION,
        "fingerprint": first.fingerprint, "config": configs.to_dict(again.config), "config_files": first.files,
        "files": []}), encoding="utf-8")
    assert pretrain_plan(tmp_path, moved).reason == f"file changed: model_config ({moved})"


def test_options_that_never_change_the_artifact_keep_it_fresh(tmp_path, seg_reviews):
    """resume, save_every, checkpoint_limit and keep_checkpoints were in the fingerprint: `--set textcnn.resume=false`
    retrained a fresh model. log_every stays in (it changes metrics.jsonl)."""
    out = tmp_path / "cnn"
    manifest = build("textcnn", out, {"train": seg_reviews}, **TINY)
    other = {**TINY, "resume": False, "save_every": 3, "checkpoint_limit": 1, "keep_checkpoints": True}
    plan = runner.plan("textcnn", other, {"train": seg_reviews}, out)
    assert plan.fresh and plan.fingerprint == manifest["fingerprint"]
    assert runner.execute(plan)["finished"] == manifest["finished"]  # skipped, not rebuilt
    logged = runner.plan("textcnn", {**other, "log_every": 3}, {"train": seg_reviews}, out)
    assert logged.reason == "config changed: log_every"


def test_an_artifact_fingerprinted_with_a_neutral_option_stays_fresh(tmp_path, seg_reviews):
    """An artifact written while neutral options were in its fingerprint (save_every: 5 hashed as such) is not made
    stale by leaving them out: it stays fresh, and readers keep the fingerprint they recorded."""
    out = tmp_path / "cnn"
    build("textcnn", out, {"train": seg_reviews}, **TINY)
    plan = runner.plan("textcnn", TINY, {"train": seg_reviews}, out)
    before = artifacts.fingerprint("textcnn", stages.load("textcnn").VERSION, configs.to_dict(plan.config),
                                   plan.input_fingerprints)  # every option as it was, save_every 5 included
    assert before != plan.fingerprint
    manifest = manifests.read_manifest(out)
    (out / manifests.MANIFEST).write_text(json.dumps({**manifest, "fingerprint": before}), encoding="utf-8")
    again = runner.plan("textcnn", {**TINY, "resume": False}, {"train": seg_reviews}, out)
    assert again.fresh and again.artifact_fingerprint == before
    assert runner.execute(again)["finished"] == manifest["finished"]
    assert not runner.plan("textcnn", {**TINY, "lr": 0.5}, {"train": seg_reviews}, out).fresh


def test_force_discards_the_checkpoints_of_a_run_with_other_settings(tmp_path, seg_reviews, monkeypatch):
    """Checkpoints a killed run left blocked every rerun with other settings, --force too; the message offered
    --no-resume, which `nlp-pipe run` does not have."""
    out = tmp_path / "cnn"
    die_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        build("textcnn", out, {"train": seg_reviews}, **TINY)
    monkeypatch.undo()
    assert trainer.saved_steps(tmp_path / "cnn.checkpoints")
    with pytest.raises(UserError, match=r"other settings \(lr: .* -> 0.5\).*--force.*--set STEP.resume=false"):
        build("textcnn", out, {"train": seg_reviews}, **{**TINY, "lr": 0.5})
    manifest = build("textcnn", out, {"train": seg_reviews}, force=True, **{**TINY, "lr": 0.5})
    assert manifest["metrics"]["resumed_from_step"] == 0 and manifest["config"]["lr"] == 0.5


def test_what_differs_between_runs_names_inputs_not_their_hashes():
    old = {"config": {"epochs": 40.0, "inputs": {"train": ["3669053e" * 8], "dev": ["aa" * 32]}}, "processes": 1, "threads": 1}
    new = {"config": {"epochs": 2.0, "inputs": {"train": ["ffffffff" * 8], "dev": ["aa" * 32]}}, "processes": 1, "threads": 1}
    assert trainer._differences(old, new) == "epochs: 40.0 -> 2.0; inputs changed: train"
    old["config"]["student_shape"], new["config"]["student_shape"] = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert trainer._differences(old, new).startswith("epochs: 40.0 -> 2.0; student_shape: file edited;")


def test_interrupted_before_training_names_the_checkpoint_the_rerun_resumes_from(tmp_path, seg_reviews, monkeypatch):
    """A Ctrl-C during the set-up of a rerun that resumes (here its exception turned into a library's on the way,
    as a signal inside a datasets or torch call can) said 'rerun the same command to start again'."""
    from nlp_pipe.stages import textcnn

    out = tmp_path / "cnn"
    die_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        build("textcnn", out, {"train": seg_reviews}, **TINY)
    monkeypatch.undo()

    def interrupted_set_up(*args, **kwargs):
        process._received.append(signal.SIGINT)  # what the handler records before raising
        raise RuntimeError("a library's error while the signal arrived")

    monkeypatch.setattr(textcnn, "Trainer", interrupted_set_up)
    with process.signals_handled(), pytest.raises(process.Interrupted) as caught:
        build("textcnn", out, {"train": seg_reviews}, **TINY)
    assert caught.value.line() == ("interrupted (SIGINT); nothing was published; rerun the same command to resume from "
                                   "the checkpoint at step 5")
    assert not out.exists()


@pytest.mark.parametrize("command", ["pipeline", "stage"])
def test_interrupted_while_a_stage_is_imported_names_the_checkpoint(tmp_path, monkeypatch, command):
    """Ctrl-C in the first seconds of `nlp-pipe run` / `nlp-pipe textcnn` (importing the stage: torch) said 'start
    again' although the rerun resumed from step 10 (and naming the checkpoint must not import torch either)."""
    from conftest import run_cli

    (tmp_path / "runs" / "cnn.checkpoints" / "step_000010").mkdir(parents=True)
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nworkdir: runs\nstages:\n  - stage: textcnn\n    name: cnn\n    inputs: {train: seg}\n",
                    encoding="utf-8")

    def interrupted(name):
        raise process.Interrupted(signal.SIGINT)

    monkeypatch.setattr(stages, "load", interrupted)
    args = ["run", pipe] if command == "pipeline" else ["textcnn", "--train", tmp_path, "--out", tmp_path / "runs" / "cnn"]
    result = run_cli(*args)
    assert result.code == 130
    assert result.err_lines[-1] == ("interrupted (SIGINT); nothing was published; rerun the same command to resume from "
                                    "the checkpoint at step 10")


def test_how_many_processes_cut_the_text_does_not_make_a_segment_artifact_stale(tmp_path):
    """segment's workers and chunk_rows (pretrain's and distill's num_proc and cache_dir alike) change how the work
    is spread, not its lines: `--workers 2` on an artifact cut by one process rebuilt it."""
    out = tmp_path / "seg"
    corpus = {"corpus": [FIXTURES / "reviews.tsv"]}
    manifest = build("segment", out, corpus, workers=1)
    plan = runner.plan("segment", {"workers": 2, "chunk_rows": 7}, corpus, out)
    assert plan.fresh and plan.fingerprint == manifest["fingerprint"]
    assert runner.plan("segment", {"workers": 1, "hmm": False}, corpus, out).reason == "config changed: hmm"
