"""pipeline.py + cli.py: a segment -> phrases -> vocab pipeline on the fixtures, run through `nlp-pipe`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, VENV_BIN, build, run_cli
from nlp_pipe import stages
from nlp_pipe.core import manifest as manifests

PIPELINE = """\
name: test
workdir: {workdir}
vars:
  corpus: {corpus}
  min_freq: 1
stages:
  - stage: segment
    inputs: {{corpus: "${{vars.corpus}}"}}
    config: {{workers: 1}}
  - stage: phrases
    inputs: {{corpus: "${{segment}}"}}
    config: {{min_count: 3, scoring: npmi, threshold: 0.3}}
  - stage: vocab
    inputs: {{corpus: "${{phrases}}"}}
    config: {{min_freq: "${{vars.min_freq}}"}}
"""
STEPS = ("segment", "phrases", "vocab")


def write_pipeline(tmp_path, text: str = PIPELINE, **fields) -> tuple:
    values = {"workdir": tmp_path / "runs", "corpus": FIXTURES / "reviews.tsv", **fields}
    path = tmp_path / "pipe.yaml"
    path.write_text(text.format(**values), encoding="utf-8")
    return path, tmp_path / "runs"


def table(out: str) -> dict[str, list[str]]:
    """Rows of the table `run`/`status` print, by stage name."""
    rows = {}
    for line in out.splitlines()[2:]:
        cells = [c for c in line.split("  ") if c.strip()]
        if cells and cells[0].strip() in STEPS:
            rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return rows


def stamps(workdir) -> dict[str, tuple[int, str]]:
    """(manifest mtime, finished) per stage: changes exactly when the stage is rebuilt."""
    return {s: stamps_of(workdir, s) for s in STEPS}


def stamps_of(workdir, step: str) -> tuple[int, str]:
    return ((workdir / step / manifests.MANIFEST).stat().st_mtime_ns, manifests.read_manifest(workdir / step)["finished"])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The pipeline run once from nothing; tests copy nothing, they only run it again."""
    tmp_path = tmp_path_factory.mktemp("pipe")
    path, workdir = write_pipeline(tmp_path)
    status = run_cli("status", path)
    result = run_cli("run", path)
    return path, workdir, status, result


def test_status_before_anything_ran(first_run):
    path, workdir, status, _ = first_run
    assert status.code == 0
    rows = table(status.out)
    assert list(rows) == list(STEPS)
    assert all(r[:2] == ["will run", "no artifact yet"] for r in rows.values())


def test_first_run_runs_every_stage(first_run):
    path, workdir, _, result = first_run
    assert result.code == 0, result.err
    assert {name: row[0] for name, row in table(result.out).items()} == {s: "ran" for s in STEPS}
    for step in STEPS:
        assert f"[{step}] running: no artifact yet" in result.err
        assert manifests.verify(workdir / step) == []
    seg, phr, voc = (manifests.read_manifest(workdir / s) for s in STEPS)
    assert seg["counts"]["rows_out"] == 160 and seg["metrics"]["labels"] == {"neg": 80, "pos": 80}
    assert phr["inputs"]["corpus"]["fingerprints"] == [seg["fingerprint"]]
    assert voc["inputs"]["corpus"]["fingerprints"] == [phr["fingerprint"]]
    assert voc["config"]["min_freq"] == 1  # a var holding a number stays a number


def test_second_run_skips_everything_and_says_so(first_run):
    path, workdir, _, _ = first_run
    before = stamps(workdir)
    result = run_cli("run", path)
    assert result.code == 0
    for step in STEPS:
        assert f"[{step}] fresh, skipped ({workdir / step})" in result.err
    assert {name: row[0] for name, row in table(result.out).items()} == {s: "skipped (fresh)" for s in STEPS}
    assert stamps(workdir) == before
    status = run_cli("status", path)
    assert {name: row[0] for name, row in table(status.out).items()} == {s: "fresh" for s in STEPS}


def test_changed_config_reruns_the_stage_and_what_depends_on_it(tmp_path):
    path, workdir = write_pipeline(tmp_path)
    assert run_cli("run", path).code == 0
    before = stamps(workdir)
    status = run_cli("status", path, "--set", "phrases.threshold=0.5")
    rows = table(status.out)
    assert rows["segment"][0] == "fresh"
    assert rows["phrases"][:2] == ["will run", "config changed: threshold"]
    assert rows["vocab"][:2] == ["will run", "input changed: corpus"]  # seen through the phrases rerun
    result = run_cli("run", path, "--set", "phrases.threshold=0.5")
    assert result.code == 0, result.err
    assert {name: row[0] for name, row in table(result.out).items()} == {
        "segment": "skipped (fresh)", "phrases": "ran", "vocab": "ran"}
    assert "[phrases] running: config changed: threshold" in result.err
    after = stamps(workdir)
    assert after["segment"] == before["segment"]
    assert after["phrases"][0] > before["phrases"][0] and after["vocab"][0] > before["vocab"][0]
    assert manifests.read_manifest(workdir / "phrases")["config"]["threshold"] == 0.5
    # without --set the file's value is back: phrases and vocab are stale again, segment is not
    rows = table(run_cli("status", path).out)
    assert [rows[s][0] for s in STEPS] == ["fresh", "will run", "will run"]


def test_only_from_and_force(tmp_path):
    path, workdir = write_pipeline(tmp_path)
    assert run_cli("run", path).code == 0
    before = stamps(workdir)

    result = run_cli("run", path, "--only", "vocab", "--force")
    assert result.code == 0 and list(table(result.out)) == ["vocab"] and table(result.out)["vocab"][0] == "ran"
    assert "[vocab] running: forced" in result.err
    after = stamps(workdir)
    assert after["segment"] == before["segment"] and after["phrases"] == before["phrases"]
    assert after["vocab"] != before["vocab"]

    result = run_cli("run", path, "--from", "phrases", "--force")
    assert result.code == 0 and list(table(result.out)) == ["phrases", "vocab"]
    again = stamps(workdir)
    assert again["segment"] == before["segment"]
    assert again["phrases"] != after["phrases"] and again["vocab"] != after["vocab"]

    result = run_cli("run", path, "--only", "segment")  # fresh and not forced: skipped
    assert result.code == 0 and table(result.out) == {"segment": ["skipped (fresh)", str(workdir / "segment")]}

    result = run_cli("run", path, "--force")
    assert result.code == 0 and all(row[0] == "ran" for row in table(result.out).values())
    assert all(stamps(workdir)[s] != again[s] for s in STEPS)


def test_only_a_stage_whose_upstream_never_ran(tmp_path):
    path, workdir = write_pipeline(tmp_path)
    result = run_cli("run", path, "--only", "phrases")
    assert result.code == 2
    assert result.err_lines == [
        f"error: stage 'phrases' needs stage(s) segment, which have not finished; run: nlp-pipe run {path} --only segment "
        "(with this command's --workdir, --var and --set)"]
    deeper = run_cli("run", path, "--only", "vocab")  # every unfinished step upstream, not the nearest one only
    assert deeper.code == 2 and "needs stage(s) segment, phrases, which" in deeper.err_lines[0]
    assert "--only segment --only phrases" in deeper.err_lines[0]


def test_only_a_fresh_stage_whose_upstream_artifact_is_gone_is_skipped(tmp_path):
    """`status` says phrases is fresh (segment would be rebuilt as it was), but `run --only phrases` refused because
    segment's artifact was missing: a fresh stage is skipped; rebuilding it (--force) still needs segment."""
    import shutil

    path, workdir = write_pipeline(tmp_path)
    assert run_cli("run", path).code == 0
    before = stamps(workdir)
    shutil.rmtree(workdir / "segment")
    assert table(run_cli("status", path).out)["phrases"][0] == "fresh"
    result = run_cli("run", path, "--only", "phrases")
    assert result.code == 0, result.err
    assert table(result.out) == {"phrases": ["skipped (fresh)", str(workdir / "phrases")]}
    assert stamps_of(workdir, "phrases") == before["phrases"]
    forced = run_cli("run", path, "--only", "phrases", "--force")
    assert forced.code == 2 and "needs stage(s) segment" in forced.err_lines[0]



def test_var_override_and_workdir_option(tmp_path):
    path, _ = write_pipeline(tmp_path)
    other = tmp_path / "elsewhere"
    result = run_cli("run", path, "--var", f"corpus={FIXTURES / 'neg.txt'}", "--workdir", other, "--only", "segment")
    assert result.code == 0, result.err
    manifest = manifests.read_manifest(other / "segment")
    assert manifest["inputs"]["corpus"]["paths"] == [str(FIXTURES / "neg.txt")] and manifest["counts"]["rows_out"] == 80
    assert not (tmp_path / "runs").exists()


BROKEN = [
    ("stage: segment\n", "stage: segmnt\n", "unknown stage 'segmnt' (did you mean 'segment'?)"),
    ("config: {{min_count: 3,", "config: {{min_cout: 3,", "unknown config key 'min_cout' (did you mean 'min_count'?)"),
    ('inputs: {{corpus: "${{segment}}"}}', 'inputs: {{corpsu: "${{segment}}"}}', "unknown input 'corpsu' (did you mean 'corpus'?)"),
    ("${{vars.corpus}}", "${{vars.corpsu}}", "unknown var 'corpsu' (did you mean 'corpus'?)"),
    ('"${{phrases}}"', '"${{phrase}}"', "'${phrase}' is not an earlier stage (did you mean 'phrases'?)"),
    ("config: {{workers: 1}}", "config: {{workers: many}}", "workers must be a whole number, got 'many'"),
    ("threshold: 0.3", "threshold: 3", "threshold = 3.0 is outside -1..1"),
    ("stages:\n", "stagse:\n", "unknown key 'stagse'"),
    # two steps writing one artifact: the later replaced the earlier's under its readers (vocab trained on dev rows)
    ("config: {{min_freq:", "out: runs/phrases\n    config: {{min_freq:", "writes to"),
    # wrong types and names: a traceback (vars), or silently a directory named "['a', 'b']", the workdir itself as the
    # artifact, an artifact outside the workdir or nested in it, an input "5"
    ("vars:\n  corpus: {corpus}\n  min_freq: 1\n", "vars: 5\n", "'vars' must be a mapping"),
    ("vars:\n  corpus: {corpus}\n  min_freq: 1\n", "vars: [a]\n", "'vars' must be a mapping"),
    ("workdir: {workdir}", "workdir: [a, b]", "'workdir' must be a directory path, got ['a', 'b']"),
    ("stage: segment\n", 'stage: segment\n    name: ""\n', "'name' must be a plain name"),
    ("stage: segment\n", "stage: segment\n    name: ../../escape\n", "'name' must be a plain name"),
    ("stage: segment\n", "stage: segment\n    name: a/b\n", "'name' must be a plain name"),
    ('inputs: {{corpus: "${{vars.corpus}}"}}', "inputs: {{corpus: 5}}", "input 'corpus' must be a path or a list of paths, got 5"),
    ('inputs: {{corpus: "${{vars.corpus}}"}}', "inputs: {{corpus: {{a: b}}}}", "input 'corpus' must be a path or a list"),
    ("config: {{min_count: 3,", "out: [x]\n    config: {{min_count: 3,", "'out' must be a directory path"),
]


@pytest.mark.parametrize("old, new, message", BROKEN, ids=[m.split(" (")[0] for _, _, m in BROKEN])
def test_mistakes_in_the_pipeline_file_exit_2_with_one_line(tmp_path, old, new, message):
    assert PIPELINE.count(old) >= 1
    path, workdir = write_pipeline(tmp_path, PIPELINE.replace(old, new, 1))
    for command in ("run", "status"):
        result = run_cli(command, path)
        assert result.code == 2, result
        assert len(result.err_lines) == 1 and result.err_lines[0].startswith("error: ")
        assert message in result.err_lines[0] and "Traceback" not in result.err
    assert not workdir.exists()  # nothing ran: everything is checked before the first stage starts


def test_the_default_workdir_is_beside_the_file(tmp_path, monkeypatch):
    """Without a `workdir:` key the artifacts went to runs/STEM under the current directory, so the pipeline ran
    differently from each directory (the module's promise is that it runs the same from any)."""
    text = PIPELINE.replace("workdir: {workdir}\n", "")
    path, _ = write_pipeline(tmp_path, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_cli("status", path)
    assert result.code == 0, result.err
    assert str(tmp_path / "runs" / "pipe" / "segment") in result.out and str(elsewhere) not in result.out


@pytest.mark.parametrize("args, message", [
    (["--only", "segmnt"], "no stage named 'segmnt' (did you mean 'segment'?)"),
    (["--from", "vocb"], "no stage named 'vocb' (did you mean 'vocab'?)"),
    (["--set", "phrases.min_cout=2"], "unknown config key 'min_cout' (did you mean 'min_count'?)"),
    (["--set", "phrase.min_count=2"], "--set: no stage named 'phrase'"),
    (["--set", "phrases=2"], "expected STAGE.KEY=VALUE"),
    (["--var", "corpsu=x.txt"], "unknown var 'corpsu' (did you mean 'corpus'?)"),
    (["--var", f"corpus={FIXTURES / 'nope.txt'}"], "nope.txt, which does not exist"),
])
def test_mistakes_on_the_command_line_exit_2(tmp_path, args, message):
    path, workdir = write_pipeline(tmp_path)
    result = run_cli("run", path, *args)
    assert result.code == 2 and len(result.err_lines) == 1
    assert message in result.err_lines[0]
    assert not workdir.exists()


def test_missing_or_invalid_pipeline_file(tmp_path):
    result = run_cli("run", tmp_path / "nope.yaml")
    assert result.code == 2 and "cannot read pipeline" in result.err_lines[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n", encoding="utf-8")
    result = run_cli("status", bad)
    assert result.code == 2 and "not valid YAML" in result.err_lines[0]


def test_duplicate_stage_names_need_a_name(tmp_path):
    text = PIPELINE + '  - stage: vocab\n    inputs: {{corpus: "${{segment}}"}}\n'
    path, _ = write_pipeline(tmp_path, text)
    result = run_cli("status", path)
    assert result.code == 2 and "stage name 'vocab' is used twice" in result.err_lines[0]
    text = PIPELINE + '  - stage: vocab\n    name: vocab_bert\n    inputs: {{corpus: "${{segment}}"}}\n    config: {{kind: bert}}\n'
    path, _ = write_pipeline(tmp_path, text)
    result = run_cli("status", path)
    assert result.code == 0 and "vocab_bert (vocab)" in result.out


@pytest.mark.parametrize("stage", list(stages.STAGES))
def test_stage_help_lists_every_field(stage):
    result = run_cli(stage, "--help")
    assert result.code == 0, result.err
    module = stages.load(stage)
    for name in module.Config.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in result.out
    for name in module.INPUTS:
        assert f"--{name.replace('_', '-')}" in result.out
    assert "--out" in result.out and "--force" in result.out


def test_top_level_help_and_stage_list():
    result = run_cli("--help")
    assert result.code == 0 and all(name in result.out for name in ("run", "status", "inspect", *stages.STAGES))
    result = run_cli("stages")
    assert result.code == 0 and all(line.split()[0] in stages.STAGES for line in result.out.splitlines()
                                    if line and not line.startswith(" "))


def test_unknown_command_suggests_the_stage():
    result = run_cli("segmnt", "--out", "x")
    assert result.code == 2 and "No such command 'segmnt' (did you mean 'segment'?)" in result.err


def test_stage_command_runs_reports_and_skips(tmp_path):
    out = tmp_path / "seg"
    args = ("segment", "--corpus", FIXTURES / "pos.txt", "--corpus", FIXTURES / "neg.txt", "--label-per-file", "pos,neg",
            "--workers", "1", "--no-hmm", "--out", out)
    result = run_cli(*args)
    assert result.code == 0, result.err
    assert f"segment: wrote {out}" in result.out and "rows: 160 in, 160 out" in result.out
    manifest = manifests.read_manifest(out)
    assert manifest["config"]["hmm"] is False and manifest["config"]["label_per_file"] == ["pos", "neg"]
    assert manifest["config"]["mode"] == "accurate"  # unset flags keep their defaults
    result = run_cli(*args)
    assert result.code == 0 and "is fresh (same config and inputs); nothing to do" in result.out
    result = run_cli(*args, "--force")
    assert result.code == 0 and "segment: wrote" in result.out


@pytest.mark.parametrize("args, message", [
    (["--workers", "x"], "segment: workers must be a whole number, got 'x'"),
    (["--mode", "fast"], "mode = 'fast' is not one of: accurate, search"),
    (["--label-per-file", "pos,neg"], "label_per_file has 2 labels for 1 corpus files"),
    (["--userdict", "nope.txt"], "nope.txt, which does not exist. Run the stage that makes it first (vocab or phrases or expand)"),
])
def test_stage_command_mistakes_exit_2(tmp_path, args, message):
    result = run_cli("segment", "--corpus", FIXTURES / "pos.txt", "--out", tmp_path / "seg", *args)
    assert result.code == 2 and len(result.err_lines) == 1 and message in result.err_lines[0], result
    assert not (tmp_path / "seg").exists()


def test_stage_command_wrong_kind_of_input(tmp_path):
    seg = tmp_path / "seg"
    assert run_cli("segment", "--corpus", FIXTURES / "bom.txt", "--workers", "1", "--out", seg).code == 0
    assert manifests.read_manifest(seg)["config"]["hmm"] is True  # a flag not given keeps its default
    result = run_cli("phrases", "--corpus", FIXTURES / "pos.txt", "--out", tmp_path / "p")
    assert result.code == 2 and "must be an artifact directory" in result.err_lines[0]
    voc = tmp_path / "voc"
    assert run_cli("vocab", "--corpus", seg, "--min-freq", "1", "--out", voc).code == 0
    result = run_cli("phrases", "--corpus", voc, "--out", tmp_path / "p")
    assert result.code == 2 and "must be a segment or phrases artifact" in result.err_lines[0]
    result = run_cli("vocab", "--corpus", tmp_path, "--out", tmp_path / "v2")
    assert result.code == 2 and "has no manifest.json" in result.err_lines[0]
    result = run_cli("segment", "--out", tmp_path / "s")
    assert result.code == 2 and "input 'corpus' is required" in result.err_lines[0]


def test_inspect_checks_hashes(tmp_path):
    seg = tmp_path / "seg"
    build("segment", seg, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    result = run_cli("inspect", seg)
    assert result.code == 0
    assert "stage:       segment" in result.out and "rows:        160 in, 160 out" in result.out
    assert "all files match the manifest" in result.out
    result = run_cli("inspect", seg, "--json")
    assert result.code == 0 and json.loads(result.out) == manifests.read_manifest(seg)
    with open(seg / "corpus.txt", "a", encoding="utf-8") as fh:
        fh.write("篡改\n")
    result = run_cli("inspect", seg)
    assert result.code == 1 and "sha256 mismatch in corpus.txt" in result.out
    result = run_cli("inspect", tmp_path)
    assert result.code == 2 and "Is this an nlp-pipe artifact directory?" in result.err_lines[0]


def test_installed_entry_points_exit_codes(tmp_path):
    """The real console script: help exits 0, a user mistake exits 2 with one line and no traceback."""
    done = subprocess.run([str(VENV_BIN / "nlp-pipe"), "segment", "--corpus", str(tmp_path / "nope.txt"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: segment: input 'corpus' points to {tmp_path / 'nope.txt'}, which does not exist."]
    done = subprocess.run([sys.executable, "-m", "nlp_pipe", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "nlp-pipe" in done.stdout
    done = subprocess.run([sys.executable, "-m", "nlp_pipe", "-v", "segment", "--corpus", str(tmp_path / "nope.txt"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" in done.stderr and "UserError" in done.stderr  # --verbose shows it


def test_status_says_a_changed_artifact_needs_force(tmp_path):
    """`run` refuses an artifact changed on disk without --force; status said "will run" for it."""
    path, workdir = write_pipeline(tmp_path)
    assert run_cli("run", path, "--only", "segment").code == 0
    with open(workdir / "segment" / "corpus.txt", "a", encoding="utf-8") as fh:
        fh.write("篡改\n")
    row = table(run_cli("status", path).out)["segment"]
    assert row[0] == "needs --force" and row[1].startswith("changed on disk"), row
