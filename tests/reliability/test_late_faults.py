"""Faults that show only past the start of an input: GBK rows after the first MiB, a corrupt manifest.json."""

from __future__ import annotations

from conftest import FIXTURES, build, run_cli
from nlp_pipe.core.config import build as build_config
from nlp_pipe.text.corpus import Counts, ReadOptions, read_rows
from nlp_pipe.text.encoding import SAMPLE


def test_gbk_rows_after_the_first_mib_are_detected_and_kept(tmp_path):
    """ASCII rows fill the first MiB (UTF-8 and GB18030 alike), GBK rows follow: detection on the first MiB alone
    said UTF-8, and `skip` then dropped every GBK row as undecodable."""
    chinese = [line for line in (FIXTURES / "pos.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    ascii_rows = [f"row {i} plain ascii text" for i in range(SAMPLE // 20)]
    path = tmp_path / "late_gbk.txt"
    path.write_bytes(("\n".join(ascii_rows + chinese) + "\n").encode("gbk"))
    assert path.stat().st_size > SAMPLE + 4096 and "\n".join(ascii_rows).encode("gbk")[:SAMPLE].isascii()
    counts = Counts()
    opts = build_config(ReadOptions, {"on_decode_error": "skip"}, "test")
    rows = [r.text for r in read_rows(path, opts, counts)]
    assert dict(counts.dropped) == {}
    assert rows[-len(chinese):] == chinese
    assert counts.rows_out == len(ascii_rows) + len(chinese)


def test_a_corrupt_manifest_is_reported_as_corrupt_not_missing(tmp_path):
    seg = tmp_path / "seg"
    build("segment", seg, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    (seg / "manifest.json").write_text('{"schema": "nlp-pipe', encoding="utf-8")  # cut short, as by a full disk
    result = run_cli("vocab", "--corpus", seg, "--out", tmp_path / "vocab")
    assert result.code == 2
    assert "not valid JSON" in result.err and "has no manifest.json" not in result.err, result.err
    assert len(result.err_lines) == 1
