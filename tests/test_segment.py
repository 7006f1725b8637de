"""Stage `segment`: jieba words, the dataset and corpus.txt, parallelism, labels, user dictionaries."""

from __future__ import annotations

import json
import os

import datasets
import jieba
import pyarrow as pa
import pytest

from conftest import FIXTURES, build, fixture_lines, lines
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.text import engines

POS, NEG = fixture_lines("pos.txt"), fixture_lines("neg.txt")
NEWS = [t for t in fixture_lines("news.txt") if t.strip()]
DOMAIN_WORD = "喵窝智投"  # a made-up app name jieba cuts into pieces
DOMAIN_TEXTS = [f"我用{DOMAIN_WORD}买了基金，{DOMAIN_WORD}的收益还不错。", f"{DOMAIN_WORD}是一款理财软件。"]


def jieba_words(text: str, hmm: bool) -> list[str]:
    return [w for w in jieba.lcut(text, HMM=hmm) if not w.isspace()]


def load(out):
    return datasets.load_from_disk(str(out / "dataset"))


@pytest.mark.parametrize("hmm,engine", [(True, "auto"), (False, "auto"), (True, "jieba")])
def test_words_are_plain_jieba(tmp_path, hmm, engine):
    corpus = tmp_path / "mixed.txt"  # spaces, Latin, digits and punctuation as well as hanzi
    extra = ["iPhone 15 Pro 的 电池 一般", "价格：￥2999，  比 京东 便宜 100 元！", "Wi-Fi 信号 很 弱……"]
    corpus.write_text("\n".join(NEWS + POS[:40] + extra) + "\n", encoding="utf-8")
    out = tmp_path / "seg"
    manifest = build("segment", out, {"corpus": [corpus]}, workers=1, hmm=hmm, engine=engine)
    texts = NEWS + POS[:40] + extra
    expected = [jieba_words(t, hmm) for t in texts]
    ds = load(out)
    assert ds["text"] == texts and ds["words"] == expected
    assert lines(out / "corpus.txt") == [" ".join(w) for w in expected]
    assert manifest["segmenter"]["hmm"] is hmm
    assert manifest["segmenter"]["engine"] == ("compiled" if engine == "auto" else "jieba")
    assert manifest["segmenter"]["engine_exact"] is True
    assert manifest["metrics"]["words"] == sum(map(len, expected))


def test_hmm_makes_a_difference():
    text = "我每天用蓝鲸听书听小说"  # 听书 is found by the HMM only
    assert jieba_words(text, True) != jieba_words(text, False)


def test_dataset_loads_with_text_words_label(seg_reviews):
    ds = load(seg_reviews)
    assert ds.column_names == ["text", "words", "label"] and len(ds) == 160
    assert ds["text"][::2] == POS and ds["text"][1::2] == NEG
    assert ds["label"][::2] == ["pos"] * 80 and ds["label"][1::2] == ["neg"] * 80
    corpus = lines(seg_reviews / "corpus.txt")
    assert corpus == [" ".join(words) for words in ds["words"]]  # line-aligned with the dataset
    assert all(words and all(w and not w.isspace() for w in words) for words in ds["words"])
    manifest = manifests.read_manifest(seg_reviews)
    assert manifest["metrics"]["labels"] == {"neg": 80, "pos": 80}
    assert manifest["metrics"]["chars"] == sum(map(len, POS + NEG))


def test_unlabelled_corpus_has_no_label_column(seg_news):
    ds = load(seg_news)
    assert ds.column_names == ["text", "words"] and ds["text"] == NEWS
    manifest = manifests.read_manifest(seg_news)
    assert manifest["counts"] == {"rows_in": 59, "rows_out": len(NEWS), "dropped": {"empty": 59 - len(NEWS)}}


def test_labelled_file_after_unlabelled_chunks_gets_null_labels(tmp_path):
    """The dataset is written as it is cut: a labelled file whose rows come after chunks already written
    without a label column still gives every row a label column (null where the file had none)."""
    (tmp_path / "plain.txt").write_text("他来到了网易杭研大厦\n小明硕士毕业于中国科学院计算所\n", encoding="utf-8")
    (tmp_path / "rated.jsonl").write_text('{"text": "我爱北京天安门", "label": "a"}\n', encoding="utf-8")
    out = tmp_path / "seg"
    manifest = build("segment", out, {"corpus": [tmp_path / "plain.txt", tmp_path / "rated.jsonl"]}, workers=1, chunk_rows=1)
    ds = load(out)
    assert ds.column_names == ["text", "words", "label"] and ds["label"] == [None, None, "a"]
    assert ds["words"] == [jieba_words(t, True) for t in ds["text"]] and manifest["metrics"]["labels"] == {"a": 1}
    assert sorted(p.name for p in (out / "dataset").iterdir()) == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]


def test_parallel_is_identical_to_serial(tmp_path, seg_reviews):
    serial = seg_reviews  # reviews.tsv with workers=1
    parallel = tmp_path / "parallel"
    manifest = build("segment", parallel, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=2, chunk_rows=7)  # 23 chunks
    assert manifest["metrics"]["workers"] == 2
    assert (parallel / "corpus.txt").read_bytes() == (serial / "corpus.txt").read_bytes()
    a, b = load(serial), load(parallel)
    assert a["text"] == b["text"] == [t for pair in zip(POS, NEG) for t in pair]
    assert a["words"] == b["words"] and a["label"] == b["label"]
    assert lines(parallel / "corpus.txt") == [" ".join(w) for w in b["words"]]


def test_files_hashed_while_written_are_listed_with_their_real_digests(seg_reviews, tmp_path):
    """segment hashes corpus.txt as it writes it and the data file once; the manifest takes those digests
    instead of reading the files again, and they are the files' real ones."""
    listed = {f["name"]: f["sha256"] for f in manifests.read_manifest(seg_reviews)["files"]}
    for name in ("corpus.txt", "dataset/data-00000-of-00001.arrow"):
        assert listed[name] == manifests.sha256_file(seg_reviews / name), name
    assert manifests.verify(seg_reviews) == []
    # a file changed after its writer hashed it is hashed again
    path = tmp_path / "a.txt"
    path.write_text("one", encoding="utf-8")
    known = {"a.txt": manifests.hashed(path, manifests.sha256_file(path))}
    path.write_text("two", encoding="utf-8")
    os.utime(path, ns=(known["a.txt"][1] + 10_000_000, known["a.txt"][1] + 10_000_000))
    assert manifests.list_files(tmp_path, known)[0]["sha256"] == manifests.sha256_file(path)


@pytest.mark.parametrize("labelled", [True, False])
def test_dataset_files_are_what_datasets_writes(tmp_path, labelled):
    """segment writes its dataset with pyarrow alone (importing datasets costs 0.8 s a process): the data
    file is byte for byte datasets' ArrowWriter's, dataset_info.json is save_to_disk's, and it loads."""
    import json

    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.py_utils import asdict

    from nlp_pipe.stages import segment

    texts = [f"第{i}条评论很好" for i in range(2500)]  # 3 record batches of datasets' 1000 rows
    lines = [f"第 {i} 条 评论 很 好" for i in range(2500)]
    labels = pa.array([("pos", "neg")[i % 2] if labelled else None for i in range(2500)], pa.string())
    table = _columns(texts, lines).table.append_column("label", labels)
    folder = tmp_path / "ours"
    folder.mkdir()
    with segment._DatasetFile(folder / "rows.arrow") as ours:
        ours.write(table.slice(0, 1200))
        ours.write(table.slice(1200))
    segment._dataset_info(folder, [ours])
    features = datasets.Features({"text": datasets.Value("string"), "words": datasets.List(datasets.Value("string")),
                                  **({"label": datasets.Value("string")} if labelled else {})})
    theirs = tmp_path / "theirs.arrow"
    with ArrowWriter(features=features, path=str(theirs)) as writer:
        for part in (table.slice(0, 1200), table.slice(1200)):
            writer.write_table(part if labelled else part.drop_columns("label"))
        writer.finalize()
    assert ours.path.read_bytes() == theirs.read_bytes()
    info = asdict(datasets.Dataset.from_file(str(theirs)).info)
    assert (folder / "dataset_info.json").read_text(encoding="utf-8") == json.dumps(
        {key: info[key] for key in sorted(info)}, indent=2)
    ds = datasets.load_from_disk(str(folder))
    assert ds["text"] == texts and ds["words"][7] == lines[7].split(" ")
    assert ds.column_names == ["text", "words"] + (["label"] if labelled else [])


def test_the_stage_does_not_import_datasets():
    import subprocess
    import sys

    code = "import sys, nlp_pipe.stages.segment; print('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_label_per_file(tmp_path):
    out = tmp_path / "seg"
    manifest = build("segment", out, {"corpus": [FIXTURES / "pos.txt", FIXTURES / "neg.txt"]}, workers=1,
                     label_per_file="good,bad")
    ds = load(out)
    assert ds["label"] == ["good"] * 80 + ["bad"] * 80 and ds["text"] == POS + NEG
    assert manifest["metrics"]["labels"] == {"bad": 80, "good": 80}
    with pytest.raises(UserError, match="label_per_file has 1 labels for 2 corpus files"):
        build("segment", tmp_path / "bad", {"corpus": [FIXTURES / "pos.txt", FIXTURES / "neg.txt"]}, label_per_file="x")



def test_label_per_file_over_a_files_own_labels_is_a_warning(tmp_path, caplog):
    """A file with its own label column labelled by --label-per-file: every row gets the given label, said once."""
    with caplog.at_level("WARNING"):
        build("segment", tmp_path / "seg", {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1, label_per_file="z")
    assert set(load(tmp_path / "seg")["label"]) == {"z"}
    said = [r.getMessage() for r in caplog.records if "labels all its rows 'z'" in r.getMessage()]
    assert len(said) == 1, said


def test_row_accounting_over_several_files(tmp_path):
    out = tmp_path / "seg"
    files = [FIXTURES / n for n in ("crlf_blank.txt", "bad_utf8.txt", "gbk.txt", "reviews.csv")]
    manifest = build("segment", out, {"corpus": files}, workers=1, on_decode_error="skip", label_column="none")
    counts = manifest["counts"]
    assert counts == {"rows_in": 11 + 8 + 40 + 24, "rows_out": 6 + 7 + 40 + 24, "dropped": {"empty": 5, "undecodable": 1}}
    ds = load(out)
    assert len(ds) == counts["rows_out"] == len(lines(out / "corpus.txt"))
    assert ds["text"][13:53] == POS[:20] + NEG[:20]  # the GBK file, decoded


def test_undecodable_input_stops_with_the_place(tmp_path):
    with pytest.raises(UserError, match=r"bad_utf8.txt: line 5, byte offset 262"):
        build("segment", tmp_path / "seg", {"corpus": [FIXTURES / "bad_utf8.txt"]}, workers=1)
    assert not (tmp_path / "seg").exists()


def _domain_corpus(tmp_path):
    corpus = tmp_path / "domain.txt"
    corpus.write_text("\n".join(DOMAIN_TEXTS) + "\n", encoding="utf-8")
    return corpus


def test_userdict_force_keeps_a_domain_word_whole(tmp_path):
    corpus = _domain_corpus(tmp_path)
    assert DOMAIN_WORD not in jieba_words(DOMAIN_TEXTS[0], True)  # jieba alone cuts it
    plain = build("segment", tmp_path / "plain", {"corpus": [corpus]}, workers=1)
    assert not any(DOMAIN_WORD in w for w in load(tmp_path / "plain")["words"])
    userdict = tmp_path / "words.txt"
    userdict.write_text(f"\ufeff{DOMAIN_WORD}\n", encoding="utf-8")  # no frequency, a BOM from Notepad
    manifest = build("segment", tmp_path / "seg", {"corpus": [corpus], "userdict": [userdict]}, workers=1,
                     userdict_freq="force")
    words = load(tmp_path / "seg")["words"]
    assert [w.count(DOMAIN_WORD) for w in words] == [2, 1]
    assert manifest["segmenter"]["userdict_words"] == 1 and manifest["segmenter"]["userdict_freq"] == "force"
    assert manifest["fingerprint"] != plain["fingerprint"]
    # the dictionary went into a private jieba.Tokenizer, never into jieba's global default
    assert DOMAIN_WORD not in jieba_words(DOMAIN_TEXTS[0], True)


def test_userdict_from_a_vocab_artifact(tmp_path, seg_reviews):
    words_file = tmp_path / "domain_words.txt"
    words_file.write_text(f"{DOMAIN_WORD} 3\n", encoding="utf-8")
    vocab = tmp_path / "vocab"
    build("vocab", vocab, {"corpus": [seg_reviews], "words": [words_file]}, min_freq=2)
    assert f"{DOMAIN_WORD} 3" in lines(vocab / "jieba_userdict.txt")
    out = tmp_path / "seg"
    manifest = build("segment", out, {"corpus": [_domain_corpus(tmp_path)], "userdict": [vocab]}, workers=1)
    assert [w.count(DOMAIN_WORD) for w in load(out)["words"]] == [2, 1]
    assert manifest["inputs"]["userdict"]["fingerprints"] == [manifests.read_manifest(vocab)["fingerprint"]]
    assert manifest["segmenter"]["userdict_words"] == len(lines(vocab / "jieba_userdict.txt"))


def test_a_userdict_line_that_jieba_would_read_as_a_spaced_word_is_a_warning(tmp_path, caplog):
    """`石墨烯<TAB>5` or `石墨烯 5.5` are words with whitespace to jieba, never found in text: they went by silently."""
    userdict = tmp_path / "words.txt"
    userdict.write_text(f"{DOMAIN_WORD} 5\n石墨烯\t5\n蓝瘦香菇 5.5\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        build("segment", tmp_path / "seg", {"corpus": [_domain_corpus(tmp_path)], "userdict": [userdict]}, workers=1)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "whitespace inside" in r.getMessage()]
    assert len(warned) == 1 and "2 line(s)" in warned[0] and "line 2: '石墨烯\\t5'" in warned[0], warned


def test_a_userdict_file_cuts_as_jiebas_load_userdict(tmp_path, caplog):
    """--userdict-freq file is jieba's own reading of the file: capitalised last words are part of the word
    (`New York`), lines end at \\n only and lose ASCII whitespace only, repeated words are added (and
    totalled) each time, a frequency of 0 deletes. Sabotaged once each: the old [a-zA-Z] tag, splitlines +
    str.strip, and merging repeats made this fail."""
    import jieba

    userdict = tmp_path / "ud.txt"
    userdict.write_bytes("New York 50000\n深度学习 NLP\n元宇宙\u2028数字人 7\n云计算 5\n最最 3\n云计算 50000\n"
                         "北京大学 0\n韩冰 0\n季节 2000 n\r\n".encode("utf-8"))
    texts = ["我在New York和北京大学读书", "深度学习NLP很火", "元宇宙和数字人来了", "季节最最最肥美的云计算",
             "韩冰是一个好人", "他说深度学习很难"]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    reference = jieba.Tokenizer()
    with engines.force_split_kept():
        reference.load_userdict(str(userdict))
        expected = [" ".join(w for w in reference.lcut(t) if not w.isspace()) for t in texts]
    with caplog.at_level("WARNING"):
        build("segment", tmp_path / "seg", {"corpus": [corpus], "userdict": [userdict]}, workers=1, userdict_freq="file")
        build("segment", tmp_path / "forced", {"corpus": [corpus], "userdict": [userdict]}, workers=1)
    assert lines(tmp_path / "seg" / "corpus.txt") == expected
    assert "New York" in expected[0] and "北京大学" not in expected[0].split(" ")
    assert any("frequency 0" in r.getMessage() and "--userdict-freq file" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp_path / "seg" / "segmenter.json").read_text(encoding="utf-8"))
    assert [w for w, _ in saved["userdict"]].count("云计算") == 2


def test_userdict_artifact_must_be_a_vocab(tmp_path, seg_news):
    with pytest.raises(UserError, match="must be a vocab or phrases or expand artifact"):
        build("segment", tmp_path / "seg", {"corpus": [_domain_corpus(tmp_path)], "userdict": [seg_news]}, workers=1)


def test_halfwidth_and_search_mode(tmp_path):
    corpus = tmp_path / "wide.txt"
    corpus.write_text("ｉＰｈｏｎｅ１５真好用！中华人民共和国成立了\n", encoding="utf-8")
    build("segment", tmp_path / "seg", {"corpus": [corpus]}, workers=1, halfwidth=True, mode="search")
    ds = load(tmp_path / "seg")
    assert ds["text"] == ["iPhone15真好用!中华人民共和国成立了"]
    expected = [w for w in jieba.lcut_for_search(ds["text"][0]) if not w.isspace()]
    assert ds["words"] == [expected] and "中华人民共和国" in expected and "人民" in expected


def test_statistics_gathered_while_writing_match_a_count_of_every_word(monkeypatch):
    """segment counts words chunk by chunk as it writes (merging the counts now and then) instead of mapping and
    scanning the written dataset again: the figures are a plain Counter's, ties in first-seen order."""
    import random
    from collections import Counter

    import pyarrow as pa

    from nlp_pipe.stages import segment

    monkeypatch.setattr(segment._Stats, "_MERGE_ROWS", 300)  # several merges
    rng = random.Random(0)
    vocab = [f"词{i}" for i in range(200)]
    stats, every, labels = segment._Stats(), [], Counter()
    for _ in range(30):
        lines = [" ".join(rng.choice(vocab[:rng.randint(3, 200)]) for _ in range(rng.randint(1, 20))) for _ in range(40)]
        chunk_labels = [rng.choice(["pos", "neg", None]) for _ in lines]
        stats.add(_columns(lines, lines), pa.chunked_array([pa.array(chunk_labels, pa.string())]))
        every += [w for line in lines for w in line.split(" ")]
        labels.update(label for label in chunk_labels if label)
    result = stats.result()
    assert result["top"] == Counter(every).most_common(30) and result["distinct_words"] == len(set(every))
    assert result["words"] == len(every) and result["labels"] == dict(sorted(labels.items()))


def test_statistics_rank_ties_in_first_seen_order_however_the_rows_are_split():
    """The top words rank ties in first-seen order, as Counter.most_common, whether one process counts every chunk or
    runs count their own and are absorbed in order: pyarrow's group_by does not keep first-seen order, so the rank of
    tied words changed with the process count (found by a sweep of segment --workers 2 against --workers 1)."""
    import random
    from collections import Counter

    import pyarrow as pa

    from nlp_pipe.stages import segment

    rng = random.Random(3)
    lines = [f"很 好 {rng.randint(0, 3000)}" for _ in range(2000)]  # two frequent words, then thousands of ties
    labels = pa.chunked_array([pa.nulls(100, pa.string())])
    one, runs = segment._Stats(), [segment._Stats() for _ in range(3)]
    for k in range(0, len(lines), 100):
        one.add(_columns(lines[k:k + 100], lines[k:k + 100]), labels)
        runs[min(k // 700, 2)].add(_columns(lines[k:k + 100], lines[k:k + 100]), labels)
    joined = segment._Stats()
    for run in runs:
        run.merge()
        joined.absorb(run)
    expected = Counter(w for line in lines for w in line.split(" ")).most_common(30)
    assert one.result()["top"] == expected and joined.result()["top"] == expected


def _columns(texts, lines):
    """segment's `_Cut` of `texts` whose space-joined words are `lines` (what `Segmenter.cut_columns` returns)."""
    import pyarrow as pa

    from nlp_pipe.stages import segment

    corpus_txt = "".join(line + "\n" for line in lines).encode("utf-8")
    return segment._columns(texts, (corpus_txt, pa.array([line.split(" ") for line in lines], pa.list_(pa.string()))))


def _artifact(out) -> dict:
    """What a segment artifact says about its rows, without what only timing or the process count changes."""
    manifest = manifests.read_manifest(out)
    metrics = {k: v for k, v in manifest["metrics"].items() if k != "workers"}
    report = [line for line in (out / "report.md").read_text(encoding="utf-8").splitlines()
              if not line.startswith(("- wall time", "- workers", "# segment: "))]
    ds = load(out)
    return {"corpus": (out / "corpus.txt").read_bytes(), "rows": ds[:], "columns": ds.column_names,
            "counts": manifest["counts"], "reading": manifest["reading"], "metrics": metrics, "report": report}


def _mixed_corpus(tmp_path):
    """txt files as users have them: a BOM, CRLF, blank lines, an undecodable line, GB18030, no last newline."""
    first = tmp_path / "a.txt"
    body = "\r\n".join(NEWS[:30] + ["", "  "] + POS[:40]).encode("utf-8")
    cut = body.index(b"\r\n", 900)
    first.write_bytes(b"\xef\xbb\xbf" + body[:cut] + b"\r\n\xff\xfe broken" + body[cut:] + b"\r\n")
    second = tmp_path / "b.txt"
    second.write_bytes("\n".join(NEG + [""] + NEWS[30:]).encode("gb18030") + b"\n")
    third = tmp_path / "c.txt"
    third.write_text("\n".join(POS[40:] + ["末行没有换行"]), encoding="utf-8")
    return [first, second, third]


def _jsonl_corpus(tmp_path):
    """A labelled jsonl file (blank, malformed and unlabelled lines among its records) before an unlabelled txt file."""
    records = [json.dumps({"id": i, "review": t, "label": ("pos", "neg")[i % 2]}, ensure_ascii=False)
               for i, t in enumerate(POS[:30] + NEG[:30])]
    records[5], records[17], records[40] = "", "{not json", json.dumps({"review": "没有标签的一行"}, ensure_ascii=False)
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(records) + "\n", encoding="utf-8")
    second = tmp_path / "b.txt"
    second.write_text("\n".join(NEWS * 3) + "\n", encoding="utf-8")  # the last run holds only its rows
    return [first, second]


@pytest.mark.parametrize("corpus,workers", [("txt", 2), ("txt", 3), ("jsonl", 2), ("jsonl", 3)])
def test_runs_cut_by_their_own_processes_are_one_process_run(tmp_path, corpus, workers):
    """With several processes each reading its own run of lines (`split_lines`) and writing its own data file, the
    artifact holds what one process writes: corpus.txt byte for byte, the rows, counts, places of dropped rows,
    columns read, statistics and report; runs start inside files and cross from one file into the next; a run of
    unlabelled rows beside labelled ones gets the null label column one process gives them."""
    if corpus == "txt":
        files, options = _mixed_corpus(tmp_path), {"on_decode_error": "skip", "label_per_file": ("x", "y", "x")}
    else:
        files, options = _jsonl_corpus(tmp_path), {}
    build("segment", tmp_path / "one", {"corpus": files}, workers=1, **options)
    build("segment", tmp_path / "many", {"corpus": files}, workers=workers, chunk_rows=7, **options)
    one, many = _artifact(tmp_path / "one"), _artifact(tmp_path / "many")
    assert one == many
    if corpus == "txt":
        assert one["counts"]["dropped"] == {"empty": 3, "undecodable": 1}
        assert one["reading"]["dropped_at"]["undecodable"] == ["a.txt:12"]
    else:
        assert one["counts"]["dropped"] == {"empty": 1, "malformed": 1, "no_label": 1}
        assert one["reading"]["columns"] == {"a.jsonl": {"text": "review", "label": "label"}}
        assert one["rows"]["label"][-1] is None and one["rows"]["label"][0] == "pos"
    data = sorted(p for p in (tmp_path / "many" / "dataset").iterdir() if p.suffix == ".arrow")
    assert [p.name for p in data] == [f"data-{i:05d}-of-{workers:05d}.arrow" for i in range(workers)]  # the runs' own
    assert len({pa.ipc.open_stream(p).schema for p in data}) == 1  # as save_to_disk's shards (datasets would fill in)
    assert manifests.verify(tmp_path / "many") == []
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_runs_stop_where_one_process_stops(tmp_path):
    """Each process reads on past a bad row that another process's run holds; the error reported is the one reading
    the files in one process meets first: the share of bad rows checked every 10,000 rows of a file (here at row
    20,000, inside the second run), and an undecodable line of the first run before one of the second."""
    corpus = tmp_path / "c.txt"
    good, bad = "好好\n".encode(), b"\xff" * 6 + b"\n"  # lines of one length: the runs split at line 15,001
    corpus.write_bytes(good * 15_000 + (bad + good) * 7_500)
    errors = []
    for workers in (1, 2):
        with pytest.raises(UserError) as failed:
            build("segment", tmp_path / f"seg{workers}", {"corpus": [corpus]}, workers=workers, on_decode_error="skip")
        errors.append(str(failed.value))
    assert errors[0] == errors[1] and "2500 of 20000 rows read so far" in errors[0], errors

    corpus.write_bytes(good * 7_000 + bad + good * 1_000 + bad + good * 7_000)  # runs split at line 7,502
    errors = []
    for workers in (1, 2):
        with pytest.raises(UserError) as failed:
            build("segment", tmp_path / f"stop{workers}", {"corpus": [corpus]}, workers=workers)
        errors.append(str(failed.value))
    assert errors[0] == errors[1] and "line 7001," in errors[0], errors


def test_runs_record_the_jsonl_columns_where_the_first_record_is(tmp_path):
    """A jsonl file whose first run holds no record (blank lines before its first one): the run that holds the first
    record records the columns and notices read from it, as one process does (they were missing from the manifest)."""
    records = "".join(json.dumps({"review": t, "category": "x"}, ensure_ascii=False) + "\n" for t in POS[:20])
    corpus = tmp_path / "a.jsonl"
    corpus.write_text("\n" * (4 * len(records.encode())) + records, encoding="utf-8")
    build("segment", tmp_path / "one", {"corpus": [corpus]}, workers=1)
    build("segment", tmp_path / "many", {"corpus": [corpus]}, workers=2)
    one, many = _artifact(tmp_path / "one"), _artifact(tmp_path / "many")
    assert one["reading"]["columns"] == {"a.jsonl": {"text": "review", "label": "category"}}
    assert one == many


def test_runs_record_files_of_one_name_as_one_process_does(tmp_path):
    """Two jsonl files of one name in different folders (train/data.jsonl, extra/data.jsonl), with different keys and
    a label-like column each: the manifest's columns and notices are one process's (the later file's columns, a
    notice for each file), not the first file's columns and one notice."""
    files = []
    for folder, key in (("train", "review"), ("extra", "content")):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "data.jsonl")
        files[-1].write_text("".join(json.dumps({key: t, "category": "x"}, ensure_ascii=False) + "\n" for t in POS[:20]),
                             encoding="utf-8")
    build("segment", tmp_path / "one", {"corpus": files}, workers=1, label_column="none")
    build("segment", tmp_path / "many", {"corpus": files}, workers=2, label_column="none")
    one, many = _artifact(tmp_path / "one"), _artifact(tmp_path / "many")
    assert one["reading"]["columns"]["data.jsonl"]["text"] == "content" and len(one["reading"]["notices"]) == 2
    assert one == many
