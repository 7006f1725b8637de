"""The terminal at the default level shows no library warning (accelerate's "Removed shared tensor ... while saving"
on every checkpoint, Python warnings from libraries); -v shows them; stage.log keeps them either way."""

from __future__ import annotations

import logging

import pytest

from conftest import run_cli
from nlp_pipe.core import console


@pytest.fixture(autouse=True)
def restore_console():
    yield
    console.configure()


def shown(capsys, verbose: bool) -> str:
    console.configure(verbose=verbose)
    logging.getLogger("accelerate.utils.other").warning("Removed shared tensor {'w'} while saving.")
    logging.getLogger("py.warnings").warning("FutureWarning: a library's advice")  # where captureWarnings sends them
    logging.getLogger("nlp_pipe.stages.x").warning("our own warning")
    return capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Cannot enable progress bars")  # -v under the tests' HF_*_DISABLE_PROGRESS_BARS
def test_library_warnings_only_with_verbose(capsys):
    quiet = shown(capsys, verbose=False)
    assert "our own warning" in quiet and "Removed shared tensor" not in quiet and "advice" not in quiet
    loud = shown(capsys, verbose=True)
    assert "Removed shared tensor" in loud and "advice" in loud


def test_library_warnings_are_kept_in_stage_log(tmp_path, seg_reviews):
    """A run at the default level: whatever a library warned is in stage.log, not on the terminal."""
    import nlp_pipe.stages.baseline as baseline

    original = baseline.run

    def warn_then_run(*args, **kwargs):
        logging.getLogger("sklearn.fake").warning("a library warning during the run")
        return original(*args, **kwargs)

    baseline.run = warn_then_run
    try:
        result = run_cli("baseline", "--train", seg_reviews, "--out", tmp_path / "b")
    finally:
        baseline.run = original
    assert result.code == 0, result.err
    assert "a library warning" not in result.err
    assert "a library warning during the run" in (tmp_path / "b" / "stage.log").read_text(encoding="utf-8")
