"""Out-of-space, permission and path errors while an artifact is written.

Each fault is injected into a real `nlp-pipe` call (in this process, through `main`): the disk fills
while the stage writes a file or while publish writes manifest.json, a rename fails, the directory for
the temporary cannot be made, the parent is a read-only mount, the filesystem is really full (a 3 MB tmpfs;
both mount tests need root, which CI has), or a file stands where a directory must be. Every one must end as users see a mistake of theirs:
exit 2 and one line naming the artifact path and the cause, no traceback; the previous good artifact
unchanged (verify == []) and no temporary left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES, run_cli
from nlp_pipe.core import artifacts
from nlp_pipe.core import manifest as manifests
from nlp_pipe.stages import segment as segment_stage


def leftovers(parent: pathlib.Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and ".tmp-" in p.name)


@pytest.fixture()
def good(tmp_path, seg_reviews):
    """A finished vocab artifact (min_freq 1); the faulty run asks for min_freq 2, so it must rebuild."""
    out = tmp_path / "runs" / "voc"
    result = run_cli("vocab", "--corpus", seg_reviews, "--min-freq", "1", "--out", out)
    assert result.code == 0, result.err
    return out, manifests.read_manifest(out)


def rerun(out, seg_reviews):
    return run_cli("vocab", "--corpus", seg_reviews, "--min-freq", "2", "--out", out)


def assert_clean_failure(result, out, manifest, cause: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    line = result.err_lines[-1]  # `run` prints "[stage] running: ..." first
    assert [x for x in result.err_lines if x.startswith("error")] == [line], result.err
    assert line.startswith("error: ") and str(out) in line and cause in line, line
    if manifest is None:
        assert manifests.read_manifest(out) is None
    else:
        assert manifests.read_manifest(out) == manifest and manifests.verify(out) == []
    if out.parent.is_dir():
        assert leftovers(out.parent) == []


class FullDisk:
    """A writable file whose writes fail with ENOSPC once `budget` characters have gone through."""

    def __init__(self, fh, budget: int) -> None:
        self.fh, self.budget = fh, budget

    def write(self, data):
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_disk_full_while_the_stage_writes_a_file(good, seg_reviews, monkeypatch):
    out, manifest = good
    real = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name == "vocab.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    assert_clean_failure(rerun(out, seg_reviews), out, manifest, "No space left on device")


def test_disk_full_midway_through_segment_output(tmp_path, monkeypatch):
    """segment streams corpus.txt: the disk fills after 2 kB of it, on a first build (nothing to keep)."""
    real_open = open

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullDisk(fh, 2000) if pathlib.Path(file).name == "corpus.txt" and "w" in mode else fh

    monkeypatch.setattr(segment_stage, "open", open_, raising=False)
    out = tmp_path / "runs" / "seg"
    result = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--workers", "1", "--out", out)
    assert_clean_failure(result, out, None, "No space left on device")
    assert not out.exists()


def test_disk_full_midway_through_segment_dataset(tmp_path, monkeypatch):
    """segment streams its dataset file too: the disk fills at its third chunk; the one-line error is the disk's."""
    real_write = segment_stage._DatasetFile._write
    chunks = []

    def write(self, table):
        chunks.append(table.num_rows)
        if len(chunks) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, table)

    monkeypatch.setattr(segment_stage._DatasetFile, "_write", write)
    out = tmp_path / "runs" / "seg"
    result = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--workers", "1", "--chunk-rows", "20", "--out", out)
    assert len(chunks) == 3
    assert_clean_failure(result, out, None, "No space left on device")
    assert not out.exists()


def test_disk_full_while_publish_writes_the_manifest(good, seg_reviews, monkeypatch):
    out, manifest = good
    real_open = open

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullDisk(fh, 10) if pathlib.Path(file).name == manifests.MANIFEST and "w" in mode else fh

    monkeypatch.setattr(artifacts, "open", open_, raising=False)
    assert_clean_failure(rerun(out, seg_reviews), out, manifest, "No space left on device")


@pytest.mark.parametrize("failing_call", [1, 2], ids=["moving-the-old-artifact-aside", "moving-the-new-one-in"])
def test_a_failing_rename_in_publish_keeps_the_previous_artifact(good, seg_reviews, monkeypatch, failing_call):
    """publish renames the old artifact aside, then the new one in: whichever fails, the old one stays."""
    out, manifest = good
    calls = []

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def rename(self, src, dst):
            calls.append((src, dst))
            if len(calls) == failing_call:
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
            os.rename(src, dst)

    monkeypatch.setattr(artifacts, "os", Os())
    assert_clean_failure(rerun(out, seg_reviews), out, manifest, os.strerror(errno.EIO))
    assert len(calls) == failing_call + (failing_call == 2)  # the second failure renamed the old one back


def test_temporary_directory_cannot_be_made(good, seg_reviews, monkeypatch):
    out, manifest = good
    real = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if ".tmp-" in self.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    result = rerun(out, seg_reviews)
    assert_clean_failure(result, out, manifest, "Read-only file system")
    assert ".voc.tmp-" in result.err  # the path that could not be made


@contextlib.contextmanager
def mounted(*args: str | pathlib.Path):
    """`mount ARGS` for the block; skipped where that is impossible (not root, no mount namespace rights).
    CI runs as root, so there these real-filesystem faults run."""
    target = pathlib.Path(args[-1])
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root")
    done = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount failed here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        if subprocess.run(["umount", str(target)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_filesystem(good, seg_reviews):
    """The artifact's parent is a read-only bind mount of itself (chmod does not bind root; a mount does)."""
    out, manifest = good
    with mounted("--bind", "-o", "ro", out.parent, out.parent):
        result = rerun(out, seg_reviews)
        assert_clean_failure(result, out, manifest, "Read-only file system")


def test_full_filesystem(tmp_path, seg_reviews):
    """A real full disk: a 3 MB tmpfs, filled to the last byte once the good artifact is in it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", disk):
        out = disk / "voc"
        assert run_cli("vocab", "--corpus", seg_reviews, "--min-freq", "1", "--out", out).code == 0
        manifest = manifests.read_manifest(out)
        with open(disk / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        result = rerun(out, seg_reviews)
        assert_clean_failure(result, out, manifest, "No space left on device")
        (disk / "filler").unlink()
        assert rerun(out, seg_reviews).code == 0 and manifests.verify(out) == []


def test_a_file_where_the_output_directory_must_be(tmp_path, seg_reviews):
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory", encoding="utf-8")
    out = blocker / "voc"
    result = run_cli("vocab", "--corpus", seg_reviews, "--out", out)
    assert result.code == 2 and len(result.err_lines) == 1 and "Traceback" not in result.err, result
    assert str(out) in result.err_lines[0] and ("File exists" in result.err or "Not a directory" in result.err)
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def test_pipeline_run_reports_a_full_disk_the_same_way(tmp_path, seg_reviews, monkeypatch):
    pipe = tmp_path / "pipe.yaml"
    out = tmp_path / "runs" / "vocab"
    pipe.write_text(f"workdir: {tmp_path / 'runs'}\nstages:\n  - stage: vocab\n    inputs: {{corpus: {seg_reviews}}}\n",
                    encoding="utf-8")
    real = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name == "w2i.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    assert_clean_failure(run_cli("run", pipe), out, None, "No space left on device")
    monkeypatch.undo()
    assert run_cli("run", pipe).code == 0 and manifests.verify(out) == []


def test_copied_input_on_a_read_only_mount(tmp_path, seg_reviews):
    """An input artifact copied onto a read-only mount (the copy gives its files new mtimes, so its hashes are
    checked again and would be remembered beside it): it is verified and used; remembering is skipped."""
    source = tmp_path / "ro" / "train"
    shutil.copytree(seg_reviews, source, copy_function=shutil.copyfile)  # new mtimes: the files are hashed again
    with mounted("--bind", "-o", "ro", source.parent, source.parent):
        result = run_cli("vocab", "--corpus", source, "--min-freq", "1", "--out", tmp_path / "voc")
    assert result.code == 0, result.err
    assert (tmp_path / "voc" / "manifest.json").exists()


def test_full_filesystem_while_a_checkpoint_is_saved(tmp_path, seg_reviews, tiny_bert):
    """safetensors reports a full disk as its SafetensorError ("No space left on device (os error 28)"), no
    OSError: the checkpoint save of a training stage ended in a traceback and left .step_000001.tmp behind."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", disk):  # the tiny BERT's weights alone are 2.8 MB
        out = disk / "bert"
        result = run_cli("pretrain", "--corpus", seg_reviews, "--init", tiny_bert, "--out", out, "--steps", "2",
                         "--save-every", "1", "--batch-size", "4", "--max-seq-len", "32", "--eval-docs", "0",
                         "--cache-dir", tmp_path / "cache")
        assert_clean_failure(result, out, None, "No space left on device")
        assert [p.name for p in (disk / "bert.checkpoints").iterdir() if p.name.startswith(".step")] == []


def test_a_safetensors_write_error_is_the_os_error_it_wraps(tmp_path):
    """save_pretrained on a full disk raises SafetensorError: the runner maps it as the OSError it names (the
    full-disk line, exit 2) and leaves other errors alone."""
    from safetensors import SafetensorError

    from nlp_pipe.core.errors import as_os_error

    error = as_os_error(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.strerror == "No space left on device"
    assert as_os_error(SafetensorError("invalid header")) is None
    assert as_os_error(RuntimeError("basic_ios::clear: iostream error"), tmp_path) is None  # a disk with room left


def test_full_filesystem_while_extract_writes_token_features(tmp_path, seg_reviews, tiny_bert):
    """`extract --pooling tokens` writes features.npy through a memory map: on a full disk the sparse file's
    pages had no blocks and the process died of SIGBUS (exit 135, no message). Its space is reserved first."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", disk):
        (disk / "filler").write_bytes(b"\0" * (3 * 2**20 - 64 * 2**10))  # 64 KB left: the features need ~600 KB
        out = disk / "feats"
        argv = ["extract", "--checkpoint", str(tiny_bert), "--corpus", str(seg_reviews), "--pooling", "tokens", "--out", str(out)]
        code = f"from nlp_pipe.cli import main; main({argv!r})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # a SIGBUS would end pytest
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: extract: building") and "No space left on device" in done.stderr
        assert not out.exists() and leftovers(disk) == []
