"""Segmentation engines: the compiled engine and rjieba's adapter cut exactly as jieba in every mode and under
every user-dictionary policy, fall back to jieba when missing, are recorded in segmenter.json, and cut the same
in parallel."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jieba
import pytest
from jieba import finalseg

from conftest import FIXTURES, build, fixture_lines
from nlp_pipe.core import manifest as manifests
from nlp_pipe.core.errors import UserError
from nlp_pipe.text import engines, segmenter
from nlp_pipe.text import hmm as jieba_hmm
from nlp_pipe.text.engine_check import MODES, compare, edge_case_texts, mode_pairs, userdict_spec
from nlp_pipe.text.segmenter import LoadProbe, Segmenter, SegmenterSpec, cut_parallel

TEXTS = (fixture_lines("pos.txt") + fixture_lines("neg.txt") + fixture_lines("news.txt")
         + [line.split("\t", 1)[-1] for line in fixture_lines("reviews.tsv")[1:]] + edge_case_texts(count=1000, quick=True))


@pytest.fixture(autouse=True)
def force_split_restored():
    """A user word of frequency 0 makes jieba force-split it process-wide (jieba.finalseg); undo that."""
    saved = set(finalseg.Force_Split_Words)
    yield
    finalseg.Force_Split_Words.clear()
    finalseg.Force_Split_Words.update(saved)


EXACT = ["compiled", "rjieba"]


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("policy", [None, "file", "multiply", "force"])
def test_exact_engines_cut_as_jieba_in_every_mode(policy, name):
    base = SegmenterSpec(engine=name) if policy is None else userdict_spec(policy, engine=name)
    labels = []
    for label, engine, jieba_segmenter in mode_pairs(base):
        assert engine.engine.name == name and jieba_segmenter.engine.name == "jieba"
        result = compare(engine, jieba_segmenter, TEXTS)
        assert (result.rows, result.identical) == (len(TEXTS), len(TEXTS)), (label, result.examples)
        labels.append(label)
    assert len(labels) == len(MODES) == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("policy", [None, "file", "multiply", "force"])
def test_exact_engines_cut_as_jieba_on_all_edge_cases(policy, name):
    """The full generated set of `benchmarks/segment.py --verify` (2.3 MB), without the shared data."""
    texts = edge_case_texts()
    base = SegmenterSpec(engine=name) if policy is None else userdict_spec(policy, engine=name)
    for label, engine, jieba_segmenter in mode_pairs(base):
        result = compare(engine, jieba_segmenter, texts)
        assert result.identical == result.rows == len(texts), (label, result.examples)


def test_deleting_a_word_of_jiebas_dictionary():
    """rjieba cannot delete a word, so a user dictionary that deletes one of jieba's (frequency 0)
    makes the mirror load every word from jieba's tokenizer instead of starting from its own copy."""
    spec = SegmenterSpec(engine="rjieba", userdict=(("中国", 0), ("人民", 5)), policy="file")
    jieba_segmenter = Segmenter(replace(spec, engine="jieba"))
    engine = Segmenter(spec, jieba_segmenter.tokenizer)
    assert not engine.engine._dict.rjieba.has_word("中国")  # type: ignore[attr-defined]
    texts = ["中国人民站起来了", "我爱中国", "中国中国中国"] + TEXTS[:300]
    assert engine.cut_lines(texts) == [" ".join(jieba_segmenter.cut(t)) for t in texts]
    assert "中国" not in engine.cut("我爱中国")


def test_plain_rjieba_differs_where_the_adapter_does_not():
    """What the adapter fixes: jieba-rs keeps `inside-out` and `3.5mm` whole inside an HMM buffer."""
    text = "这是inside-out的设计，3.5mm耳机接口"
    native, exact, jieba = (Segmenter(SegmenterSpec(engine=e)).cut(text) for e in ("rjieba-native", "rjieba", "jieba"))
    assert exact == jieba and "inside" in jieba and "inside-out" not in jieba and "3.5" in jieba
    assert native != jieba and "inside-out" in native
    # it still cuts every edge case (lone surrogates included), just not always as jieba does
    result = compare(Segmenter(SegmenterSpec(engine="rjieba-native")), Segmenter(SegmenterSpec(engine="jieba")), TEXTS)
    assert result.rows == len(TEXTS) and 0 < result.identical < len(TEXTS)


@pytest.mark.parametrize("name", EXACT)
def test_user_dictionary_effects_are_jiebas(name):
    text = "糖类抗原19-9偏高，我用喵窝智投买了*ST舜船，他叫张小明去了质量xy质量"
    plain = Segmenter(SegmenterSpec(engine=name)).cut(text)
    assert "糖类抗原19-9" not in plain and "张小明" in plain
    cut = {}
    for policy in ("file", "multiply", "force"):
        jieba_segmenter = Segmenter(userdict_spec(policy, engine="jieba"))
        cut[policy] = Segmenter(userdict_spec(policy, engine=name), jieba_segmenter.tokenizer).cut(text)
        assert cut[policy] == jieba_segmenter.cut(text), policy
    assert "张小明" not in cut["file"]  # listed with frequency 0: deleted, even from the HMM's words
    # `xy 1` loses to its letters (x, y: 100000 each): two single-character steps, a buffer that is a word
    assert cut["file"][-4:] == ["质量", "x", "y", "质量"]
    forced = cut["force"]
    assert "糖类抗原19-9" in forced and "喵窝智投" in forced
    assert "*ST舜船" not in forced  # jieba never matches a word with "*": it ends a block
    # jieba force-splits a deleted word in every tokenizer of the process from then on; a segmenter keeps its
    # deletions to itself (a pipeline's later steps cut as they do alone; sabotaged: without force_split_kept
    # the default segmenter and jieba.lcut lost 张小明 and this failed)
    after = Segmenter(SegmenterSpec(engine=name))
    assert "张小明" in after.cut(text) and "张小明" in jieba.lcut(text)
    assert not finalseg.Force_Split_Words
    # the default dictionary is built once a process and shared; the user dictionaries above had their own
    again = Segmenter(SegmenterSpec(engine=name, mode="search")).engine
    assert (after.engine._trie is again._trie) if name == "compiled" else (after.engine._dict is again._dict)  # type: ignore[attr-defined]
    assert "糖类抗原19-9" not in after.cut(text) and "喵窝智投" not in after.cut(text)


@pytest.mark.parametrize("policy", ["file", "multiply"])
def test_frequencies_past_int64_cut_as_jieba(policy):
    """jieba takes any whole number (10**19, or a --userdict-multiplier of 1e30); the compiled engine's trie
    once held frequencies as int64 and died with an OverflowError traceback (sabotaged: np.int64 again)."""
    spec = SegmenterSpec(engine="compiled", userdict=(("北京大学", 10**19), ("云计算", 5)), policy=policy, multiplier=1e30)
    text = "我在北京大学读书，研究云计算"
    assert Segmenter(spec).cut(text) == Segmenter(replace(spec, engine="jieba")).cut(text)


@pytest.mark.parametrize("name", EXACT)
def test_search_mode_adds_the_dictionary_ngrams(name):
    text = "中华人民共和国成立了"
    exact = Segmenter(SegmenterSpec(engine=name, mode="search")).cut(text)
    assert exact == Segmenter(SegmenterSpec(engine="jieba", mode="search")).cut(text)
    assert exact[:6] == ["中华", "华人", "人民", "共和", "共和国", "中华人民共和国"]


@pytest.mark.parametrize("mode", ["accurate", "search"])
def test_a_near_tie_is_left_to_jieba(monkeypatch, mode):
    """Route choices the adapter recomputes (an ASCII user word or its letters) within rounding of a tie
    go to jieba itself: with an absurd tolerance every such choice does, and the words stay jieba's
    (in search mode jieba cuts in accurate mode and the adapter adds the n-grams once; sabotaged once:
    a jieba fallback in search mode doubled them and this failed)."""
    monkeypatch.setattr(engines, "_TIE_TOLERANCE", 1e6)
    spec = userdict_spec("file", mode=mode)
    texts = [t for t in TEXTS if "ok" in t or "xy" in t or "mp3" in t][:200]
    assert len(texts) > 50
    used = []
    original = engines.JiebaEngine.words
    monkeypatch.setattr(engines.JiebaEngine, "words", lambda self, text: used.append(text) or original(self, text))
    engine = Segmenter(spec)
    lines = engine.cut_lines(texts)
    assert used  # jieba really cut them
    reference = Segmenter(userdict_spec("file", mode=mode, engine="jieba"), engine.tokenizer)
    assert lines == [" ".join(reference.cut(t)) for t in texts]


def test_viterbi_is_jiebas():
    rng = random.Random(3)
    chars = [chr(c) for c in range(0x4E00, 0x9FD6)]  # jieba's hanzi, seen by its HMM or not
    texts = [c * n for c in "赞哈啊" for n in range(1, 9)]
    texts += ["".join(rng.choice(chars) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    texts += ["鿖丂丄", "丂丄丅丆"]  # characters the HMM has never seen
    jieba_cut = getattr(finalseg, "__cut")
    # each text as a route of single-character steps, none a dictionary word: all of it goes to the HMM
    none = jieba_hmm.force_split(frozenset())
    cut = [jieba_hmm.cut("\x01".join(t), True, lambda buffer: False, False, none).split("\x01") for t in texts]
    assert cut == [list(jieba_cut(t)) if len(t) > 1 else [t] for t in texts]


@pytest.mark.parametrize("requested", ["auto", "compiled", "rjieba"])
def test_a_missing_engine_falls_back_to_jieba_with_a_notice(monkeypatch, caplog, tmp_path, requested):
    for package in {"auto": ("rjieba", "numba"), "compiled": ("numba",), "rjieba": ("rjieba",)}[requested]:
        monkeypatch.setitem(sys.modules, package, None)  # `import PACKAGE` now fails, as when it is not installed
    assert engines.resolve(requested) == "jieba"
    assert "not installed" in caplog.text and "jieba" in caplog.text
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(fixture_lines("pos.txt")[:20]) + "\n", encoding="utf-8")
    manifest = build("segment", tmp_path / "seg", {"corpus": [corpus]}, workers=1, engine=requested)
    assert manifest["segmenter"]["engine"] == "jieba" and manifest["segmenter"]["engine_exact"] is True
    assert json.loads((tmp_path / "seg" / "segmenter.json").read_text(encoding="utf-8"))["engine"] == "jieba"


def test_an_unproven_version_is_not_picked_by_auto_and_still_cuts_exactly(monkeypatch, caplog):
    real = engines.package_version
    monkeypatch.setattr(engines, "package_version", lambda name: "9.9.9" if name != "jieba" else real(name))
    engines.builtin_dictionary_proven.cache_clear()
    try:
        # the compiled engine is this package's code: numba's version does not change its words
        assert engines.resolve("auto") == "compiled" and engines.proven("compiled")
        assert engines.resolve("rjieba") == "rjieba" and "not a version proven" in caplog.text
        assert not engines.proven("rjieba") and engines.proven("jieba")
        # asked for by name it runs, on a dictionary mirrored word by word from jieba's own tokenizer
        seg = Segmenter(SegmenterSpec(engine="rjieba"))
        assert seg.engine.name == "rjieba" and seg.tokenizer is not None
        texts = TEXTS[:400]
        reference = Segmenter(SegmenterSpec(engine="jieba"), seg.tokenizer)
        assert seg.cut_lines(texts) == [" ".join(reference.cut(t)) for t in texts]
    finally:
        engines.builtin_dictionary_proven.cache_clear()


def test_segmenter_json_records_the_engine(tmp_path):
    out = tmp_path / "seg"
    manifest = build("segment", out, {"corpus": [FIXTURES / "reviews.tsv"]}, workers=1)
    saved = json.loads((out / "segmenter.json").read_text(encoding="utf-8"))
    version = engines.package_version("compiled")
    assert (saved["engine"], saved["engine_version"]) == ("compiled", version)
    assert manifest["segmenter"]["engine"] == "compiled" and manifest["segmenter"]["engine_version"] == version
    assert "Engine: compiled" in (out / "report.md").read_text(encoding="utf-8")
    assert SegmenterSpec.load(out).engine == "compiled"
    # a segmenter.json written before engines existed was cut by jieba
    del saved["engine"], saved["engine_version"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "segmenter.json").write_text(json.dumps(saved), encoding="utf-8")
    assert SegmenterSpec.load(tmp_path / "old").engine == "jieba"
    saved["engine"] = "hanlp"
    (tmp_path / "old" / "segmenter.json").write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(UserError, match="engine 'hanlp'"):
        SegmenterSpec.load(tmp_path / "old")


def test_an_inexact_engine_reports_its_agreement(tmp_path):
    corpus = tmp_path / "c.txt"
    lines = fixture_lines("pos.txt")[:30] + ["这是inside-out的设计，3.5mm耳机接口", "第3-5名的成绩是10.4.5分"]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = build("segment", tmp_path / "seg", {"corpus": [corpus]}, workers=1, engine="rjieba-native")
    info = manifest["segmenter"]
    assert info["engine"] == "rjieba-native" and info["engine_exact"] is False
    agreement = info["engine_agreement"]
    assert agreement["rows"] == len(lines) and agreement["identical_rows"] <= len(lines) - 2
    assert f"{agreement['identical_pct']}% of the first {len(lines)} rows" in (tmp_path / "seg" / "report.md").read_text(
        encoding="utf-8")
    assert manifests.verify(tmp_path / "seg") == []


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_cutting_keeps_order_and_words(workers):
    spec = SegmenterSpec(engine="rjieba")
    chunks = [TEXTS[i:i + 37] for i in range(0, 1200, 37)]
    serial = list(cut_parallel(spec, chunks, 1, join=" "))
    assert list(cut_parallel(spec, chunks, workers, join=" ")) == serial
    assert list(cut_parallel(spec, chunks[:5], workers)) == [[s.split(" ") if s else [] for s in lines]
                                                           for lines in serial[:5]]
    # `then` runs where each chunk was cut (a helper or this process), on that chunk's texts and lines
    done = list(cut_parallel(spec, chunks, workers, join=" ", then=_where_and_what))
    assert [(texts, lines) for _, texts, lines in done] == list(zip(chunks, serial))
    assert {pid for pid, _, _ in done} - {os.getpid()}, "no chunk was finished in a helper process"


def _where_and_what(texts: list[str], lines: list[str]) -> tuple[int, list[str], list[str]]:
    return os.getpid(), texts, lines


def test_free_cores_follow_what_others_use(monkeypatch):
    monkeypatch.setattr(segmenter, "default_workers", lambda: 2)
    probe = LoadProbe()
    assert probe.others() >= 0.0
    for others, free in [(0.0, 2), (0.3, 2), (0.7, 1), (1.0, 1), (5.0, 1)]:
        monkeypatch.setattr(LoadProbe, "others", lambda self, o=others: o)
        assert probe.free_cores() == free


def test_free_cores_are_measured_even_when_nothing_ran_in_between(monkeypatch):
    """A probe read at once (the dictionary was already loaded) measures a short window of its own instead of
    taking the load average, which counts this process's own recent work."""
    monkeypatch.setattr(os, "getloadavg", lambda: (1000.0, 1000.0, 1000.0))
    assert LoadProbe().others() < 1000.0  # a measurement (of a busy machine, maybe), not the load average
    monkeypatch.setattr(segmenter, "_runnable_others", lambda: None)  # no runnable count: /proc/stat's window
    assert LoadProbe().others() < 1000.0


@pytest.mark.skipif(not Path("/proc/loadavg").is_file(), reason="Linux's runnable count")
def test_a_probe_read_at_once_counts_the_busy_core_without_waiting_out_a_window():
    """Read right after it starts (the dictionary was already loaded), the probe counts other runnable tasks for
    10 ms (/proc/loadavg) instead of waiting 50 ms for /proc/stat's ticks: a busy process is seen at once."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # on a core by now
        started = time.perf_counter()
        others = LoadProbe().others()
        took = time.perf_counter() - started
    finally:
        spinner.kill()
        spinner.wait()
    assert others >= 0.6 and took < 0.04, (others, took)


def test_rjiebas_builtin_dictionary_is_jiebas():
    """What the fast default path relies on: rjieba's built-in dictionary holds exactly jieba's words
    of frequency > 0 with their frequencies, and the constants for jieba's total hold."""
    import rjieba

    from nlp_pipe.text import rjieba_dict

    tokenizer = Segmenter(SegmenterSpec(engine="jieba")).tokenizer
    assert tokenizer is not None and rjieba_dict.is_jieba_dict_txt()
    assert tokenizer.total == rjieba_dict._DICT_TOTAL
    assert sum(tokenizer.FREQ.values()) == rjieba_dict._DICT_DISTINCT_TOTAL
    builtin, mirrored = rjieba.Jieba(), rjieba.Jieba.empty()
    positive = [w for w, f in tokenizer.FREQ.items() if f > 0]
    assert len(positive) == 349_045 and all(builtin.has_word(w) for w in positive)
    assert not any(builtin.has_word(w) for w, f in tokenizer.FREQ.items() if f == 0)
    for word in positive:
        mirrored.add_word(word, tokenizer.FREQ[word], None)
    sample = random.Random(0).sample(positive, 20_000)
    assert [builtin.suggest_freq(w) for w in sample] == [mirrored.suggest_freq(w) for w in sample]
    default, from_tokenizer = engines.mirror(None, []), rjieba_dict.RjiebaDictionary(tokenizer, [], True)
    assert default.ascii_words() == from_tokenizer.ascii_words()
    assert default.ascii_alnum_words() == from_tokenizer.ascii_alnum_words() == frozenset()
    assert default.log_total == from_tokenizer.log_total


def _hostile_texts() -> list[str]:
    """What a corpus rarely holds but the compiled HMM pass must still cut as jieba: long runs of words
    jieba's dictionary lacks, digits and Latin glued into them, astral and other-script characters in
    between, and the same runs again (anything remembered between texts must not change a word)."""
    rng = random.Random(30)
    rare = [chr(c) for c in range(0x4E00, 0x9FD6, 7)]  # mostly characters of no dictionary word
    glue = ["3.5", "10.4.5", "5%", "x86_64", "a+b", "C++", "--", "._", "&", "#1", "2019-2020", "ok", "mp3", "1.5%"]
    other = ["𠀀", "𪚥", "😀", "한국", "Привет", "ひら", "\u3000", " ", "\t", "é", "𝟘", "٣", "Ⅻ", "①"]
    texts = []
    for n in (2, 5, 40, 400, 5000):
        texts.append("".join(rng.choice(rare) for _ in range(n)))
        texts.append("".join(rng.choice(rare) + (rng.choice(glue) if rng.random() < 0.3 else "")
                             + (rng.choice(other) if rng.random() < 0.1 else "") for _ in range(n)))
    names = ["".join(rng.choice(rare) for _ in range(3)) for _ in range(30)]
    texts += ["他叫" + rng.choice(names) + "，今年" + str(rng.randint(1, 99)) + "岁，住在" + rng.choice(names) + "村"
              for _ in range(300)]
    return texts + texts[:20]


@pytest.mark.parametrize("policy", [None, "file"])
def test_hostile_text_is_cut_as_jieba_cuts_it(policy):
    """Sabotaged once: with the re_skip `\\.\\d+` step dropped from text.hmm, this fails on `3.5`."""
    texts = _hostile_texts()
    base = SegmenterSpec(engine="rjieba") if policy is None else userdict_spec(policy)
    for label, engine, jieba_segmenter in mode_pairs(base):
        result = compare(engine, jieba_segmenter, texts, chunk_rows=64)
        assert result.identical == result.rows == len(texts), (label, result.examples)


def test_what_the_engine_remembers_never_changes_a_word():
    """The search n-grams are remembered per word and the force-split words per set: cutting texts in a
    different order, again, or with other force-split words (same size, other words: a cache keyed on
    its size would miss that) gives jieba's words every time. Sabotaged once: keyed on the size, it fails."""
    texts = _hostile_texts()[:60] + TEXTS[:300]
    engine = Segmenter(SegmenterSpec(engine="rjieba", mode="search"))
    jieba_segmenter = Segmenter(SegmenterSpec(engine="jieba", mode="search"))
    expected = [" ".join(jieba_segmenter.cut(t)) for t in texts]
    assert engine.cut_lines(texts) == expected
    assert engine.cut_lines(texts[::-1]) == expected[::-1]
    assert [" ".join(engine.cut(t)) for t in texts] == expected
    accurate = Segmenter(SegmenterSpec(engine="rjieba"))
    text = "他叫李小福，小明硕士毕业于中国科学院计算所"
    hmm_words = [w for w in accurate.cut(text) if len(w) > 1 and not accurate.engine._has_word(w)]  # type: ignore[attr-defined]
    assert len(hmm_words) >= 2, hmm_words
    for name in EXACT:
        for word in hmm_words:
            spec = SegmenterSpec(engine=name, userdict=((word, 0),), policy="file")  # what a deleted user word does
            cut = Segmenter(spec).cut(text)
            assert word not in cut and cut == Segmenter(replace(spec, engine="jieba")).cut(text)
            assert all(other in cut for other in hmm_words if other != word)


def test_a_tokenizer_built_while_jieba_cuts_in_another_thread_changes_neither(monkeypatch):
    """jieba's force-split set is swapped for a JiebaEngine's own while it cuts; a segmenter built in another
    thread meanwhile (a server's model threads) restored "its" saved set into the engine's, emptying it, or
    copied the engine's words into jieba's global set. Both now go through one lock. Sabotaged: without the
    lock in force_split_kept, the engine kept 杭研 whole afterwards and this failed."""
    import threading

    text = "他来到了网易杭研大厦"
    a = Segmenter(SegmenterSpec(engine="jieba", userdict=(("杭研", 0),), policy="file"))
    expected = a.cut(text)
    assert "杭研" not in expected
    engine = a.engine
    inner = engine._cut  # type: ignore[attr-defined]
    in_cut, b_in, b_done = threading.Event(), threading.Event(), threading.Event()
    original_add = segmenter.Segmenter._add

    def slow_add(self, word, freq):  # B builds its tokenizer and waits (bounded) for A to be cutting
        b_in.set()
        in_cut.wait(timeout=2)
        original_add(self, word, freq)

    def slow_cut(text, HMM):  # A cuts and waits (bounded) for B to finish building
        in_cut.set()
        b_done.wait(timeout=2)
        return inner(text, HMM=HMM)

    monkeypatch.setattr(segmenter.Segmenter, "_add", slow_add)
    monkeypatch.setattr(engine, "_cut", slow_cut)

    def build_b():
        Segmenter(SegmenterSpec(engine="jieba", userdict=(("云计算", 0),), policy="file"))
        b_done.set()

    b = threading.Thread(target=build_b)
    b.start()
    b_in.wait(timeout=5)
    during = engine.words(text)
    b.join(timeout=10)
    monkeypatch.setattr(engine, "_cut", inner)
    assert [w for w in during if not w.isspace()] == expected
    assert a.cut(text) == expected and not finalseg.Force_Split_Words
