"""No silent wrong result and no traceback on bad input: each case exits 2 with one line, or keeps and counts.

docs/reliability.md (section 8) lists each guarantee with the test here that checks it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import FIXTURES, build, run_cli
from nlp_pipe import TextClassifier
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.text.corpus import Counts, ReadOptions, read_rows


def one_line_error(result, *parts: str) -> None:
    assert result.code == 2 and len(result.err_lines) == 1 and "Traceback" not in result.err, result
    for part in parts:
        assert part in result.err, (part, result.err)


def test_mostly_undecodable_file_stops_instead_of_keeping_garbage(tmp_path):
    noise = tmp_path / "noise.txt"
    rng = random.Random(0)
    noise.write_bytes(b"\n".join(bytes(rng.randrange(128, 256) for _ in range(40)) + b"\xff" for _ in range(79)))
    result = run_cli("segment", "--corpus", noise, "--out", tmp_path / "seg", "--encoding", "utf-8",
                     "--on-decode-error", "skip", "--workers", "1")
    one_line_error(result, "undecodable", "max_bad_rows", "--max-bad-rows")
    assert not (tmp_path / "seg").exists()


def test_a_few_bad_rows_are_counted_with_their_lines(tmp_path):
    rows = ["label,review"] + [f"pos,好评{i}" for i in range(40)] + ["neg"] + ["neg,差评,多余"]
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    manifest = build("segment", tmp_path / "seg", {"corpus": [path]}, workers=1)
    assert manifest["counts"]["dropped"] == {"malformed": 2}
    assert manifest["reading"]["dropped_at"]["malformed"] == ["ragged.csv:42", "ragged.csv:43"]
    report = (tmp_path / "seg" / "report.md").read_text(encoding="utf-8")
    assert "malformed rows at ragged.csv:42, ragged.csv:43" in report


def test_an_unterminated_csv_quote_is_one_malformed_row_not_a_merge(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('label,review\npos,"很好\nneg,很差\nneg,太差了\npos,"引号""里面",\npos,"跨\n两行"\n', encoding="utf-8")
    counts = Counts()
    rows = list(read_rows(path, ReadOptions(max_bad_rows=1.0), counts))
    assert [(r.text, r.label, r.line) for r in rows] == [("很差", "neg", 3), ("太差了", "neg", 4), ("跨 两行", "pos", 6)]
    assert counts.dropped == {"malformed": 2} and counts.where["malformed"] == ["quote.csv:2", "quote.csv:5"]


def test_tsv_text_with_tabs_stays_whole_in_the_last_column(tmp_path):
    path = tmp_path / "tabs.tsv"
    path.write_text("label\ttext\npos\t好\t评\n", encoding="utf-8")
    counts = Counts()
    assert [(r.text, r.label) for r in read_rows(path, ReadOptions(), counts)] == [("好\t评", "pos")]


def test_label_columns_are_found_recorded_and_unused_ones_noticed(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("sentiment,cat,text\n1,书籍,好看\n0,书籍,难看\n1,水果,好吃\n", encoding="utf-8")
    manifest = build("segment", tmp_path / "seg", {"corpus": [path]}, workers=1)
    assert manifest["metrics"]["labels"] == {"0": 1, "1": 2}
    assert manifest["reading"]["columns"]["s.csv"] == {"text": "text", "label": "sentiment", "unused_label_like": ["cat"]}
    report = (tmp_path / "seg" / "report.md").read_text(encoding="utf-8")
    assert "columns of s.csv: text `text`, label `sentiment`" in report and "cat look like labels" in report


def test_forced_encoding_that_gives_mojibake_stops(tmp_path):
    result = run_cli("segment", "--corpus", FIXTURES / "reviews.tsv", "--out", tmp_path / "seg", "--encoding", "latin-1")
    one_line_error(result, "mojibake", "utf-8")
    result = run_cli("segment", "--corpus", FIXTURES / "gbk.txt", "--out", tmp_path / "seg", "--encoding", "latin-1")
    one_line_error(result, "mojibake", "gb18030")


def test_binary_files_are_not_text(tmp_path):
    binary = tmp_path / "model.bin"
    rng = random.Random(1)
    binary.write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
    one_line_error(run_cli("segment", "--corpus", binary, "--out", tmp_path / "seg"), str(binary))


def test_a_class_with_one_example_stops_training(tmp_path, seg_reviews):
    path = tmp_path / "rare.tsv"
    lines = (FIXTURES / "reviews.tsv").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines + ["odd\t这个类只有一个例子"]) + "\n", encoding="utf-8")
    seg = tmp_path / "seg"
    build("segment", seg, {"corpus": [path]}, workers=1)
    from nlp_pipe.data.labelled import load_splits

    with pytest.raises(UserError, match=r"fewer than 2 training examples.*'odd'"):
        load_splits(seg, None, None, seed=0)


@pytest.fixture
def textcnn_dir(tmp_path_factory, seg_reviews) -> Path:
    base = tmp_path_factory.mktemp("cnn")
    build("word2vec", base / "w2v", {"corpus": seg_reviews}, min_count=1, vector_size=16, epochs=2, workers=1, seed=1)
    build("textcnn", base / "cnn", {"train": seg_reviews, "vectors": base / "w2v"}, epochs=1, filters=4, seed=1)
    return base / "cnn"


def test_predict_reads_gbk_files_and_refuses_empty_lines_binary_and_missing(textcnn_dir, tmp_path):
    gbk = run_cli("predict", textcnn_dir, "--file", FIXTURES / "gbk.txt", "--json")
    assert gbk.code == 0 and len(gbk.out.splitlines()) == len((FIXTURES / "gbk.txt").read_bytes().splitlines()), gbk
    assert json.loads(gbk.out.splitlines()[0])["text"] == (FIXTURES / "gbk.txt").read_bytes().decode("gb18030").splitlines()[0]
    blank = tmp_path / "blank.txt"
    blank.write_text("好评\n\n差评\n", encoding="utf-8")
    one_line_error(run_cli("predict", textcnn_dir, "--file", blank), "1 empty line", "(first at line 2)")
    one_line_error(run_cli("predict", textcnn_dir, "--text", "  "), "--text number 1 is empty")
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)) * 20)
    one_line_error(run_cli("predict", textcnn_dir, "--file", binary), str(binary))
    one_line_error(run_cli("predict", tmp_path / "nowhere", "--text", "好"), "does not exist")
    one_line_error(run_cli("predict", textcnn_dir, "--file", tmp_path / "none.txt"), "does not exist")


def test_predict_reads_gbk_from_stdin(textcnn_dir):
    import subprocess
    import sys

    data = (FIXTURES / "gbk.txt").read_bytes()
    done = subprocess.run([sys.executable, "-m", "nlp_pipe", "predict", str(textcnn_dir), "--file", "-"], input=data,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert len(done.stdout.decode("utf-8").splitlines()) == len(data.splitlines())


def test_predict_names_the_line_of_the_first_empty_text_and_an_empty_file(textcnn_dir, tmp_path):
    gap = tmp_path / "gap.txt"
    gap.write_text("".join(f"好评{i}\n" for i in range(1, 41)) + "\n差评\n\n", encoding="utf-8")
    one_line_error(run_cli("predict", textcnn_dir, "--file", gap), "2 empty line(s) (first at line 41)")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error(run_cli("predict", textcnn_dir, "--file", empty), f"{empty} has no texts")


def test_predict_decode_error_names_only_options_predict_has(textcnn_dir):
    result = run_cli("predict", textcnn_dir, "--file", FIXTURES / "gbk.txt", "--encoding", "utf-8")
    one_line_error(result, "line 1, byte offset 0: cannot decode as utf-8", "--encoding")
    assert "--on-decode-error" not in result.err  # predict has no such option (the corpus stages do: test_corpus.py)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_predict_batch_size_below_one_is_refused(textcnn_dir, size):
    """-3 gave probabilities 0.0 for every class, 0 a traceback (range() arg 3 must not be zero)."""
    one_line_error(run_cli("predict", textcnn_dir, "--text", "好吃", "--batch-size", size), f"batch size must be at least 1 (got {size})")
    with pytest.raises(UserError, match="at least 1"):
        TextClassifier.load(textcnn_dir).predict(["好吃"], batch_size=int(size))


def test_yaml_tab_error_names_line_and_column(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: x\nstages:\n\t- stage: segment\n", encoding="utf-8")
    one_line_error(run_cli("status", pipe), "line 3, column 1", "never tabs")


def test_stage_help_keeps_example_commands_on_their_own_lines():
    result = run_cli("pretrain", "--help")
    assert result.code == 0
    assert "\n      nlp-pipe pretrain --corpus runs/seg --init runs/bert --out runs/bert2 --sentence-task none" in result.out


def test_pretrain_with_a_word_vocabulary_says_what_to_make(tmp_path, seg_reviews):
    build("vocab", tmp_path / "words", {"corpus": [seg_reviews]}, kind="word", min_freq=1)
    result = run_cli("pretrain", "--corpus", seg_reviews, "--tokenizer", tmp_path / "words", "--out", tmp_path / "bert",
                     "--steps", "1")
    one_line_error(result, "word vocabulary", "vocab --kind bert")


def test_a_student_deeper_than_its_teacher_says_how_to_fix_it(tmp_path, tiny_bert, seg_reviews):
    result = run_cli("distill", "--mode", "general", "--teacher", tiny_bert, "--corpus", seg_reviews, "--out",
                     tmp_path / "d", "--steps", "1")
    one_line_error(result, "at most 2 layers", "--student-shape", "pipelines/students/")


def test_manifest_reading_details_survive_as_json(tmp_path):
    manifest = build("segment", tmp_path / "seg", {"corpus": [FIXTURES / "reviews.csv"]}, workers=1)
    assert manifests.verify(tmp_path / "seg") == []
    assert manifest["reading"]["columns"]["reviews.csv"]["text"] == "review"


@pytest.mark.parametrize("value, part", [("", "at least 1"), ("3,100", "above its maximum 64")])
def test_textcnn_kernel_sizes_out_of_range_is_one_line(tmp_path, value, part):
    result = run_cli("textcnn", "--train", FIXTURES / "reviews.tsv", "--vectors", tmp_path / "none",
                     "--out", tmp_path / "cnn", "--kernel-sizes", value)
    one_line_error(result, "kernel_sizes", part)
