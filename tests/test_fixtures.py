"""The committed fixtures are what make_fixtures.py generates, small, and balanced."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import FIXTURES, fixture_lines


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_fixtures_are_current(tmp_path):
    subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(_make_fixtures().build())
    for name in generated:
        assert (FIXTURES / name).read_bytes() == (tmp_path / name).read_bytes(), f"{name} is stale: rerun make_fixtures.py"


def test_fixtures_are_small_and_balanced():
    total = sum(p.stat().st_size for p in FIXTURES.iterdir() if p.is_file())
    assert total < 100_000
    pos, neg = fixture_lines("pos.txt"), fixture_lines("neg.txt")
    assert len(pos) == len(neg) == 80
    assert len(set(pos + neg)) == 160  # no repeated review
    assert all(line.strip() == line and line for line in pos + neg)
    tsv = fixture_lines("reviews.tsv")
    assert tsv[0] == "label\ttext" and len(tsv) == 161
    news = fixture_lines("news.txt")
    assert 55 <= len(news) <= 65 and news.count("") >= 5  # several documents, blank line between


def test_binary_fixtures_have_their_defects():
    make = _make_fixtures()
    assert (FIXTURES / "bom.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    csv_bytes = (FIXTURES / "reviews.csv").read_bytes()
    assert csv_bytes.startswith(b"\xef\xbb\xbf") and csv_bytes.count(b"\xef\xbb\xbf") == 2
    assert b'"\xe5\xa5\xbd\xe7\x94\xa8,' in csv_bytes  # "好用,... quoted because of its commas
    crlf = (FIXTURES / "crlf_blank.txt").read_bytes()
    assert crlf.count(b"\r\n") == make.CRLF_TEXTS + make.CRLF_BLANKS and b"\n" not in crlf.replace(b"\r\n", b"")
    gbk = (FIXTURES / "gbk.txt").read_bytes()
    assert gbk.decode("gbk").splitlines() == fixture_lines("pos.txt")[:20] + fixture_lines("neg.txt")[:20]
    bad = (FIXTURES / "bad_utf8.txt").read_bytes().split(b"\n")
    for number, line in enumerate(bad, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            assert number == make.BAD_LINE
        else:
            assert number != make.BAD_LINE
