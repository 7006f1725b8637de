"""corpus.py: formats, encodings, normalisation and row accounting on the fixture files."""

from __future__ import annotations

import codecs
import gzip
import json
import random

import pytest

from conftest import FIXTURES, fixture_lines
from nlp_pipe.core.errors import UserError
from nlp_pipe.text.corpus import Counts, ReadOptions, SpanCounts, SpanRead, detect_encoding, read_rows, split_lines

POS, NEG = fixture_lines("pos.txt"), fixture_lines("neg.txt")


def read(path, **options):
    counts = Counts()
    rows = list(read_rows(path, ReadOptions(**options), counts))
    _check_accounting(counts)
    return rows, counts


def _check_accounting(counts: Counts) -> None:
    """Nothing is dropped silently: every row read is either kept or counted with a reason."""
    c = counts.as_dict()
    assert c["rows_in"] == c["rows_out"] + sum(c["dropped"].values())


def test_tsv_with_header_and_labels():
    rows, counts = read(FIXTURES / "reviews.tsv")
    assert counts.as_dict() == {"rows_in": 160, "rows_out": 160, "dropped": {}}
    assert [r.text for r in rows[::2]] == POS and [r.text for r in rows[1::2]] == NEG
    assert {r.label for r in rows[::2]} == {"pos"} and {r.label for r in rows[1::2]} == {"neg"}
    assert rows[0].line == 2 and rows[-1].line == 161  # the header is line 1


def test_txt_one_text_a_line_without_label():
    rows, counts = read(FIXTURES / "pos.txt")
    assert [r.text for r in rows] == POS and all(r.label is None for r in rows)
    assert [r.line for r in rows] == list(range(1, 81))


def test_jsonl_auto_columns_and_integer_labels():
    rows, counts = read(FIXTURES / "reviews.jsonl")
    records = [json.loads(line) for line in fixture_lines("reviews.jsonl")]
    assert counts.as_dict() == {"rows_in": 40, "rows_out": 40, "dropped": {}}  # label 0 is a label, not missing
    assert [r.text for r in rows] == [rec["review"] for rec in records]
    assert [r.label for r in rows] == [str(rec["label"]) for rec in records]
    assert {r.label for r in rows} == {"0", "1"}


def test_jsonl_bad_lines_are_counted(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "好评", "label": "pos"}\nnot json\n\n[1, 2]\n{"text": "", "label": "neg"}\n'
                    '{"text": "差评", "label": ""}\n{"text": "一般"}\n', encoding="utf-8")
    rows, counts = read(path)
    assert [(r.text, r.label) for r in rows] == [("好评", "pos")]
    assert counts.as_dict() == {"rows_in": 7, "rows_out": 1, "dropped": {"empty": 2, "malformed": 2, "no_label": 2}}


def test_csv_quoted_commas_line_breaks_and_bom_rows():
    rows, counts = read(FIXTURES / "reviews.csv")
    assert counts.as_dict() == {"rows_in": 24, "rows_out": 24, "dropped": {}}
    texts = [r.text for r in rows]
    assert "好用,便宜,发货快，会回购" in texts  # the quoted commas stay in the text
    assert "第一行说不好用 第二行说很失望" in texts  # a line break inside quotes becomes a space
    assert all("\ufeff" not in t for t in texts)
    assert {r.label for r in rows} == {"pos", "neg"}  # the row after the mid-file BOM keeps its label
    assert rows[12].label == "pos" and rows[12].text == POS[5]  # first row after the second BOM
    multi = next(r for r in rows if r.text.startswith("第一行"))
    after = rows[rows.index(multi) + 1]
    assert (multi.line, after.line) == (9, 11)  # a multi-line row is reported where it starts


def test_missing_text_column_lists_the_columns(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("label\tbody\npos\t很好\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read(path)
    message = str(err.value)
    assert "\n" not in message and "bad.tsv" in message
    assert "label, body" in message and "--text-column" in message
    rows, _ = read(path, text_column="body")
    assert [(r.text, r.label) for r in rows] == [("很好", "pos")]
    with pytest.raises(UserError, match="no text column 'txt'; columns: label, body"):
        read(path, text_column="txt")


def test_headerless_table_uses_column_indexes(tmp_path):
    path = tmp_path / "plain.tsv"
    path.write_text("1\t很好\n0\t很差\n", encoding="utf-8")
    rows, _ = read(path, header=False, text_column="1", label_column="0")
    assert [(r.text, r.label) for r in rows] == [("很好", "1"), ("很差", "0")]


def test_label_column_none_and_missing_labels(tmp_path):
    path = tmp_path / "some.tsv"
    path.write_text("label\ttext\npos\t很好\n\t没标签\nneg\t\nneg\t很差\nshort\n", encoding="utf-8")
    rows, counts = read(path)
    assert [(r.text, r.label) for r in rows] == [("很好", "pos"), ("很差", "neg")]
    assert counts.as_dict()["dropped"] == {"empty": 1, "malformed": 1, "no_label": 1}
    rows, counts = read(path, label_column="none")
    assert [r.text for r in rows] == ["很好", "没标签", "很差"] and all(r.label is None for r in rows)


def test_bom_is_stripped():
    assert detect_encoding(FIXTURES / "bom.txt") == "utf-8-sig"
    rows, counts = read(FIXTURES / "bom.txt")
    assert [r.text for r in rows] == NEG[20:30]
    assert not rows[0].text.startswith("\ufeff")


def test_gbk_is_detected_and_decoded():
    assert detect_encoding(FIXTURES / "gbk.txt") == "gb18030"
    rows, counts = read(FIXTURES / "gbk.txt")
    assert [r.text for r in rows] == POS[:20] + NEG[:20]
    assert counts.as_dict() == {"rows_in": 40, "rows_out": 40, "dropped": {}}


@pytest.mark.parametrize("text", ["你好世界", "房间干净。\n服务很好。", "好评"])
def test_short_gbk_files_are_not_taken_for_korean_or_utf8(tmp_path, text):
    path = tmp_path / "short.txt"
    path.write_bytes((text + "\n").encode("gbk"))
    rows, _ = read(path)
    assert [r.text for r in rows] == text.split("\n")


def test_a_short_utf8_file_with_one_bad_byte_is_damaged_utf8(tmp_path):
    """"好吃" then a line of one bad byte was guessed cp1251 and read as "еҐЅеђѓ": it is UTF-8 with a bad line."""
    path = tmp_path / "short.txt"
    path.write_bytes("好吃\n".encode() + b"\xff\n")
    assert detect_encoding(path) == "utf-8"


def test_explicit_encoding_overrides_detection(tmp_path):
    path = tmp_path / "big5.txt"
    path.write_bytes("這家飯店的服務很好。\n".encode("big5"))
    rows, _ = read(path, encoding="big5")
    assert rows[0].text == "這家飯店的服務很好。"
    with pytest.raises(UserError, match="unknown encoding 'klingon'"):
        read(path, encoding="klingon")


def test_utf16_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + "很好\n".encode("utf-16-le"))
    with pytest.raises(UserError, match="UTF-16.*iconv"):
        read(path)


def test_crlf_and_blank_lines_are_counted_as_empty():
    rows, counts = read(FIXTURES / "crlf_blank.txt")
    assert [r.text for r in rows] == POS[:6]  # "\r" removed, surrounding spaces stripped
    assert all("\r" not in r.text for r in rows)
    assert counts.as_dict() == {"rows_in": 11, "rows_out": 6, "dropped": {"empty": 5}}
    assert [r.line for r in rows] == [1, 4, 6, 8, 10, 11]


def test_old_mac_line_ends(tmp_path):
    path = tmp_path / "cr.txt"
    path.write_bytes("很好\r很差\r\r一般\r".encode())
    rows, counts = read(path)
    assert [r.text for r in rows] == ["很好", "很差", "一般"]
    assert counts.as_dict()["dropped"] == {"empty": 1}


def _first_bad_byte(data: bytes) -> tuple[int, int]:
    """(1-based line, byte offset in the file) of the first byte that is not UTF-8."""
    offset = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return number, offset + exc.start
        offset += len(line) + 1
    raise AssertionError("no bad byte")


def test_invalid_utf8_names_file_line_and_byte_offset():
    data = (FIXTURES / "bad_utf8.txt").read_bytes()
    line, offset = _first_bad_byte(data)
    assert line == 5
    assert data[offset:offset + 2] == "惠".encode()[:2]  # "价格实惠" with its last character cut short
    # line 5 is "性价比" + "价格实" + 2 bytes of "惠" + the rest: the bad byte is 18 bytes in
    assert offset == sum(len(part) + 1 for part in data.split(b"\n")[:4]) + 18
    assert detect_encoding(FIXTURES / "bad_utf8.txt") == "utf-8"  # damaged UTF-8, not another encoding
    with pytest.raises(UserError) as err:
        read(FIXTURES / "bad_utf8.txt")
    message = str(err.value)
    assert "bad_utf8.txt" in message and f"line {line}," in message and f"byte offset {offset}:" in message
    assert "\n" not in message and "--on-decode-error skip" in message


def test_invalid_utf8_skip_counts_undecodable():
    rows, counts = read(FIXTURES / "bad_utf8.txt", on_decode_error="skip")
    assert [r.text for r in rows] == POS[:4] + POS[5:8]
    assert counts.as_dict() == {"rows_in": 8, "rows_out": 7, "dropped": {"undecodable": 1}}


def test_halfwidth_option(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("ＡＢＣ１２３，ｉＰｈｏｎｅ\u3000好用！\n", encoding="utf-8")
    rows, _ = read(path)
    assert rows[0].text == "ＡＢＣ１２３，ｉＰｈｏｎｅ\u3000好用！"  # off by default
    rows, _ = read(path, halfwidth=True)
    assert rows[0].text == "ABC123,iPhone 好用!"


def test_gzip_input_and_format_from_inner_extension(tmp_path):
    path = tmp_path / "reviews.tsv.gz"
    path.write_bytes(gzip.compress((FIXTURES / "reviews.tsv").read_bytes()))
    rows, counts = read(path)
    assert counts.rows_out == 160 and rows[0].label == "pos" and rows[0].text == POS[0]


def test_explicit_format_overrides_extension(tmp_path):
    path = tmp_path / "reviews.dat"
    path.write_bytes((FIXTURES / "reviews.tsv").read_bytes())
    rows, _ = read(path)  # unknown extension: txt, the header is a text
    assert len(rows) == 161 and rows[0].label is None
    rows, _ = read(path, format="tsv")
    assert len(rows) == 160 and rows[0].label == "pos"


def test_fixed_label_for_one_file_per_class():
    counts = Counts()
    rows = list(read_rows(FIXTURES / "neg.txt", ReadOptions(), counts, label="neg"))
    assert len(rows) == 80 and {r.label for r in rows} == {"neg"}


def test_counts_accumulate_over_files():
    counts = Counts()
    for name in ("crlf_blank.txt", "news.txt"):
        list(read_rows(FIXTURES / name, ReadOptions(), counts))
    _check_accounting(counts)
    news = fixture_lines("news.txt")
    assert counts.rows_in == 11 + len(news)
    assert counts.dropped["empty"] == 5 + news.count("")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.txt"):
        read(tmp_path / "nope.txt")


def test_split_lines_reads_every_line_once_with_its_number(tmp_path):
    """Runs of `split_lines`, read one by one, give every file's rows with their line numbers and counts, as reading
    each file whole does: random files (empty lines, CRLF, a BOM, long lines, no last newline), 1 to 5 runs."""
    rng = random.Random(7)
    for case in range(12):
        files = []
        for f in range(rng.randint(1, 3)):
            lines = ["".join(rng.choice("好的中文 \r") for _ in range(rng.choice([0, 1, 5, 40, 3000]))) for _ in range(rng.randint(1, 60))]
            data = ("\ufeff" if rng.random() < 0.3 else "") + ("\r\n" if rng.random() < 0.3 else "\n").join(lines)
            path = tmp_path / f"{case}-{f}.txt"
            path.write_bytes((data + ("\n" if rng.random() < 0.5 else "")).encode("utf-8"))
            files.append(path)
        whole, counts = [], Counts()
        for path in files:
            whole += [(path.name, row) for row in read_rows(path, ReadOptions(), counts)]
        for parts in range(1, 6):
            runs = split_lines(files, ReadOptions(), parts)
            assert runs is not None and 1 <= len(runs) <= parts
            merged, rows = SpanCounts(files, ReadOptions(), Counts()), []
            for run in runs:
                for i, span in run:
                    read = SpanRead(i, span)
                    rows += [(files[i].name, row) for row in read_rows(files[i], ReadOptions(), read.counts, span=span,
                                                                         checkpoints=read.checkpoints)]
                    merged.add(read)
            assert rows == whole, (case, parts)
            assert merged.counts.as_dict() == counts.as_dict() and merged.counts.where == counts.where
