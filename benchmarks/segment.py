"""`nlp-pipe segment` against a plain one-process jieba loop, on the same corpus, same run; and the engines.

    python benchmarks/segment.py [--quick | --smoke] [--out bench-segment.json] [--repeats 3]
    python benchmarks/segment.py --verify [--engine compiled] [--out verify-segment.json]   # identity proof
    python benchmarks/segment.py --gold pku_test_gold.utf8 [msr_test_gold.utf8 ...]   # word F1 on gold segmentation

The corpus (10 MB; 2 MB with --quick) interleaves real lines from --data-dir: CLUE news/web
documents (some very long), CLUE sentences with empty lines between documents, and Douban
book reviews, repeated as needed. Both sides include dictionary loading and writing their
output file: the stage runs end to end through the runner (plan + execute: input hashing,
load probe, worker start-up, corpus.txt, the `datasets` dataset, manifest, verification) with
its default engine and worker choice; the baseline initialises a fresh `jieba.Tokenizer()` and
writes `" ".join(words)` a line. Sides alternate each repeat (fair to a drifting load), first
on the idle machine (`segment_mb_per_s`; the stage once more with `--workers 1`:
`segment_mb_per_s_one_process`, and with `--workers 2`: `segment_mb_per_s_two_processes`, the two-core figure
whatever the stage's own load probe decides), then again with a busy-loop process keeping one core busy
during both sides (`segment_mb_per_s_loaded`). `identical_lines_pct`: the stage's lines equal to
the baseline's.

The engine table cuts a 4 MB (1 MB) slice in one process with each engine in each mode (accurate /
search, HMM on / off): MB/s against jieba in the same mode, and the share of lines identical to it.
Beside the project's engines it has jieba-fast-dat (a C++ port of jieba) on jieba's own dict.txt,
when installed (`pip install jieba-fast-dat`; otherwise listed as not run). Times there are the
median over --repeats of this process's CPU seconds (one core's work, whatever else runs on the
machine), engines in alternating order, each repeat on a freshly built engine (no cache carried
over), built before the clock starts: dictionary loading, and numba loading its compiled code
(about 0.4 s once a process), are not in the table but are in the stage figures.

--verify proves identity instead of timing: every text of every set in --data-dir (corpora,
chnsenticorp, book_review, smp2020-ewect, online_shopping_10_cats, waimai_10k: 30.8 MB) plus
the generated edge cases of `nlp_pipe.text.engine_check` (3.4 MB), cut by an exact engine (--engine:
compiled, the default, or rjieba) and by jieba in every mode, without a user dictionary and with one
under each frequency policy.

--gold scores every engine of the table (accurate mode, HMM on: jieba's default) against gold-segmented files
in the SIGHAN bakeoff format (one sentence a line, words separated by whitespace, UTF-8; e.g. icwb2-data's
gold/pku_test_gold.utf8 and msr_test_gold.utf8, which are not shipped here): each line's words are joined and
cut again, and precision, recall and F1 count the words whose character span matches a gold word's, as the
bakeoff's score script does. An engine with jieba's exact words has plain jieba's F1 exactly.
"""

from __future__ import annotations

import csv
import functools
import itertools
import logging
import multiprocessing
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import jieba

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import runner  # noqa: E402
from nlp_pipe.text import engine_check, engines  # noqa: E402
from nlp_pipe.text.engines import ENGINES  # noqa: E402
from nlp_pipe.text.segmenter import Segmenter, SegmenterSpec  # noqa: E402

FULL_MB, QUICK_MB, SMOKE_MB = 10, 2, 0.05
TABLE_MB, QUICK_TABLE_MB, SMOKE_TABLE_MB = 4, 1, 0.02
TABLE_CHUNK = 500  # rows per cut_lines call, as the stage sends them


def build_corpus(args, path: Path, target_bytes: int) -> int:
    """Write lines round-robin from three real sources until `target_bytes`; returns the size.
    Lines are written already cleaned (stripped, no BOM), as the stage's reader would see them;
    empty lines are kept: the stage drops them and the comparison aligns around them."""
    def lines(name, column=None):
        with open(common.data_path(args, "corpora", name), encoding="utf-8") as fh:
            rows = [line.split("\t", 1)[column] if column is not None else line for line in fh]
        return [_clean(r) for r in rows]

    sources = [lines("CLUECorpusSmall_sampled.txt"), lines("CLUECorpusSmall_bert_sampled.txt"),
               lines("book_review_cls.txt", column=1)]
    size = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in itertools.chain.from_iterable(zip(*map(itertools.cycle, sources))):
            out.write(row + "\n")
            size += len(row.encode("utf-8")) + 1
            if size >= target_bytes:
                return size
    raise AssertionError("unreachable: the sources cycle forever")


def _clean(text: str) -> str:
    while (stripped := text.strip().lstrip("\ufeff")) != text:
        text = stripped
    return text


def run_stage(corpus: Path, out: Path, workers: int = 0) -> None:
    """What `nlp-pipe segment --corpus CORPUS --out OUT --force [--workers N]` does."""
    plan = runner.plan("segment", {"workers": workers} if workers else {}, {"corpus": [str(corpus)]}, out)
    runner.execute(plan, force=True)


def run_plain(corpus: Path, out: Path) -> None:
    """The plain baseline: one process, dictionary loaded inside the timed region."""
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            dst.write(" ".join(w for w in tokenizer.lcut(line.rstrip("\n")) if not w.isspace()) + "\n")


def identical_pct(corpus: Path, stage_txt: Path, plain_txt: Path) -> tuple[float, int]:
    """Share of non-empty input lines whose stage line equals the plain line (the stage drops
    empty lines, so its corpus.txt is aligned with the non-empty input lines)."""
    same = total = 0
    with open(corpus, encoding="utf-8") as src, open(stage_txt, encoding="utf-8") as stage, \
            open(plain_txt, encoding="utf-8") as plain:
        for text, plain_line in zip(src, plain):
            if text.strip():
                total += 1
                same += next(stage, None) == plain_line
        extra = sum(1 for _ in stage)  # lines the stage wrote beyond the input: all wrong
    return 100.0 * same / (total + extra), total


def check_dataset(artifact: Path, rows: int) -> None:
    """The dataset loads, has one row per corpus.txt line, and its words are that line's words."""
    import datasets

    ds = datasets.load_from_disk(str(artifact / "dataset"))
    if len(ds) != rows:
        sys.exit(f"dataset has {len(ds)} rows, corpus.txt {rows}")
    with open(artifact / "corpus.txt", encoding="utf-8") as fh:
        for batch in ds.iter(batch_size=10_000):
            for words in batch["words"]:
                if words != next(fh).rstrip("\n").split(" "):
                    sys.exit("dataset and corpus.txt disagree")
    print(f"dataset: {len(ds)} rows, columns {ds.column_names}, aligned with corpus.txt")


def timed_sides(corpus: Path, tmp: Path, repeats: int, label: str,
                sides: tuple[str, ...] = ("stage", "plain")) -> dict[str, list[tuple[float, float | None]]]:
    """`repeats` runs of each side (the stage; `stage_1` / `stage_2`, the stage in one / two processes; the baseline),
    alternating their order."""
    size = corpus.stat().st_size
    runs: dict[str, list[tuple[float, float | None]]] = {side: [] for side in sides}  # (s, others' cores)
    for r in range(repeats):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            if side.startswith("stage"):
                t, others, _ = common.timed(lambda: run_stage(corpus, tmp / side, {"stage_1": 1, "stage_2": 2}.get(side, 0)))
                workers = _manifest_workers(tmp / side)
            else:
                t, others, _ = common.timed(lambda: run_plain(corpus, tmp / "plain.txt"))
                workers = 1
            runs[side].append((t, others))
            print(f"  {label} repeat {r + 1}: {side:7s} {t:6.2f} s  {size / 1e6 / t:5.2f} MB/s  {workers} process(es) "
                  f"(other processes used {common.cores(others)} meanwhile)", flush=True)
    return runs


def _manifest_workers(artifact: Path) -> int:
    import json

    return json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))["metrics"]["workers"]


def engine_table(corpus: Path, megabytes: int, repeats: int) -> list[dict]:
    """Each engine in each mode on the first `megabytes` of the corpus, in this process: MB/s (CPU time,
    median of `repeats`) and lines identical to jieba's in the same mode (jieba's own row is the baseline)."""
    texts, size = [], 0
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                texts.append(line.rstrip("\n"))
                size += len(line.encode("utf-8"))
                if size >= megabytes * 1_000_000:
                    break
    rows = []
    tokenizer = Segmenter(SegmenterSpec(engine="jieba")).tokenizer  # jieba's own row reuses its loaded dictionary
    for mode, hmm in engine_check.MODES:
        builders = _table_engines(SegmenterSpec(mode=mode, hmm=hmm), tokenizer)
        seconds: dict[str, list[float]] = {name: [] for name in builders}
        lines: dict[str, list[str]] = {}
        for r in range(repeats):
            for name in (list(builders) if r % 2 == 0 else list(builders)[::-1]):
                cut_lines = builders[name]()
                t0 = time.process_time()
                lines[name] = [line for i in range(0, len(texts), TABLE_CHUNK) for line in cut_lines(texts[i:i + TABLE_CHUNK])]
                seconds[name].append(time.process_time() - t0)
        reference = common.median(seconds["jieba"])
        for name in builders:
            took = common.median(seconds[name])
            same = sum(a == b for a, b in zip(lines[name], lines["jieba"]))
            rows.append({"engine": name, "mode": mode, "hmm": hmm, "mb_per_s": size / 1e6 / took,
                         "speedup": reference / took, "identical_pct": 100.0 * same / len(texts)})
            print(f"  {mode:8s} HMM {'on ' if hmm else 'off'} {name:14s} {size / 1e6 / took:6.2f} MB/s "
                  f"{reference / took:5.1f}x  identical {100.0 * same / len(texts):7.3f}%", flush=True)
    return rows


def _table_engines(spec: SegmenterSpec, tokenizer) -> dict[str, Callable[[], Callable[[list[str]], list[str]]]]:
    """{engine name: a builder of a fresh `cut_lines`} for the engine table; jieba first (the baseline)."""
    builders: dict[str, Callable[[], Callable[[list[str]], list[str]]]] = {}
    for name in ENGINES:
        if engines.resolve(name) == name:  # a missing package is listed as not run, not timed as jieba
            builders[name] = lambda name=name: Segmenter(replace(spec, engine=name),
                                                         tokenizer if name == "jieba" else None).cut_lines
    fast_dat = _jieba_fast_dat()
    if fast_dat is not None:
        cut = fast_dat.lcut_for_search if spec.mode == "search" else fast_dat.lcut
        builders["jieba-fast-dat"] = lambda: lambda texts: [" ".join(w for w in cut(t, HMM=spec.hmm) if not w.isspace())
                                                           for t in texts]
    return builders


@functools.cache
def _jieba_fast_dat():
    """jieba-fast-dat's tokenizer on jieba's own dict.txt (its default dictionary is a larger one, whose
    words differ more), or None when it is not installed."""
    try:
        import jieba_fast_dat
    except ImportError:
        print("  jieba-fast-dat: not run (pip install jieba-fast-dat)")
        return None
    jieba_fast_dat.setLogLevel(logging.WARNING)
    tokenizer = jieba_fast_dat.Tokenizer(str(Path(jieba.__file__).resolve().parent / jieba.DEFAULT_DICT_NAME))
    tokenizer.initialize()
    return tokenizer


TABLE_ROWS = (*ENGINES, "jieba-fast-dat")


def print_engine_table(rows: list[dict], megabytes: float) -> None:
    print(f"\nengines, one process, {megabytes:.1f} MB: speed against jieba in the same mode (CPU time), "
          "lines identical to jieba's")
    modes = [(m, h) for m, h in engine_check.MODES]
    print("| engine | " + " | ".join(f"{m}, HMM {'on' if h else 'off'} | identical" for m, h in modes) + " |")
    print("| --- |" + " --- | --- |" * len(modes))
    for name in TABLE_ROWS:
        cells = []
        for m, h in modes:
            row = next((r for r in rows if r["engine"] == name and r["mode"] == m and r["hmm"] == h), None)
            if row is None:
                cells += ["not run", "-"]
                continue
            speed = f"{row['mb_per_s']:.2f} MB/s" if name == "jieba" else f"{row['speedup']:.1f}x"
            cells += [speed, "-" if name == "jieba" else f"{row['identical_pct']:.2f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def gold_scores(paths: list[Path]) -> list[dict]:
    """Precision, recall and word F1 of each engine of the table against the gold files' segmentation."""
    gold = [line.split() for path in paths for line in open(path, encoding="utf-8-sig") if line.split()]
    texts = ["".join(words) for words in gold]
    tokenizer = Segmenter(SegmenterSpec(engine="jieba")).tokenizer
    rows = []
    for name, build in _table_engines(SegmenterSpec(), tokenizer).items():
        cut = build()(texts)
        right = guessed = 0
        for words, line in zip(gold, cut):
            right += len(_spans(words) & _spans(line.split(" ")))
            guessed += len(line.split(" "))
        expected = sum(len(words) for words in gold)
        precision, recall = right / guessed, right / expected
        rows.append({"engine": name, "precision": precision, "recall": recall,
                     "f1": 2 * precision * recall / (precision + recall) if right else 0.0,
                     "identical_pct": 100.0 * sum(a == b for a, b in zip(cut, rows[0]["cut"] if rows else cut)) / len(cut),
                     "cut": cut})
        print(f"  {name:14s} P {precision:.4f}  R {recall:.4f}  F1 {rows[-1]['f1']:.4f}  "
              f"lines identical to jieba's {rows[-1]['identical_pct']:.2f}%", flush=True)
    print(f"gold: {len(gold)} lines, {sum(len(w) for w in gold)} words, {sum(len(t) for t in texts)} characters "
          f"in {', '.join(p.name for p in paths)}")
    return rows


def _spans(words: list[str]) -> set[tuple[int, int]]:
    spans, start = set(), 0
    for word in words:
        spans.add((start, start + len(word)))
        start += len(word)
    return spans


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="full runs of each side, idle and loaded (median reported)")
    p.add_argument("--verify", action="store_true", help="prove identity on all of --data-dir instead of timing")
    p.add_argument("--engine", default="compiled", choices=[n for n, e in ENGINES.items() if e.exact and n != "jieba"],
                   help="the engine --verify checks")
    p.add_argument("--gold", type=Path, nargs="+", help="score the engines' words against these gold-segmented files")
    args = common.parse(p)
    if args.smoke:
        args.repeats = 1
    if args.verify:
        return verify(args)
    if args.gold:
        scores = gold_scores(args.gold)
        figures = {f"word_f1_{r['engine']}": common.figure(r["f1"], "F1", scores[0]["f1"]) for r in scores}
        figures.update({f"identical_lines_pct_{r['engine']}": common.figure(r["identical_pct"], "%") for r in scores[1:]})
        common.report("segment-gold", args, figures)
        return None
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.txt"
        size = build_corpus(args, corpus, common.pick(args, SMOKE_MB, QUICK_MB, FULL_MB) * 1_000_000)
        print(f"corpus: {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, encoding='utf-8'))} lines; "
              f"load average {info['load_avg']}")
        idle = timed_sides(corpus, tmp, args.repeats, "idle", ("stage", "stage_1", "stage_2", "plain"))
        pct, rows = identical_pct(corpus, tmp / "stage" / "corpus.txt", tmp / "plain.txt")
        pct_1, _ = identical_pct(corpus, tmp / "stage_1" / "corpus.txt", tmp / "plain.txt")
        pct_2, _ = identical_pct(corpus, tmp / "stage_2" / "corpus.txt", tmp / "plain.txt")
        check_dataset(tmp / "stage", rows)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # keeps one core busy
        try:
            time.sleep(1.0)
            loaded = timed_sides(corpus, tmp, args.repeats, "loaded")
        finally:
            spinner.kill()
            spinner.wait()
        table_mb = common.pick(args, SMOKE_TABLE_MB, QUICK_TABLE_MB, TABLE_MB)
        table = engine_table(corpus, table_mb, args.repeats)
    common.note_quiet_ratio(info, idle["stage"], idle["plain"], higher_is_better=False)
    figures = {
        "segment_mb_per_s": _throughput(size, idle),
        "segment_mb_per_s_one_process": _throughput(size, idle, "stage_1"),
        "segment_mb_per_s_two_processes": _throughput(size, idle, "stage_2"),
        "segment_mb_per_s_loaded": _throughput(size, loaded),
        "identical_lines_pct": common.figure(pct, "%"),
        "identical_lines_pct_one_process": common.figure(pct_1, "%"),
        "identical_lines_pct_two_processes": common.figure(pct_2, "%"),
    }
    jieba_speed = {(r["mode"], r["hmm"]): r["mb_per_s"] for r in table if r["engine"] == "jieba"}
    for r in table:
        if r["engine"] != "jieba":
            key = f"{r['engine']}_{r['mode']}_hmm_{'on' if r['hmm'] else 'off'}"
            figures[f"{key}_mb_per_s"] = common.figure(r["mb_per_s"], "MB/s", jieba_speed[(r["mode"], r["hmm"])])
            figures[f"{key}_identical_pct"] = common.figure(r["identical_pct"], "%")
    print_engine_table(table, table_mb)
    common.report("segment", args, figures, info)


def _throughput(size: int, runs: dict[str, list[tuple[float, float | None]]], side: str = "stage") -> dict:
    stage = size / 1e6 / common.median([t for t, _ in runs[side]])
    plain = size / 1e6 / common.median([t for t, _ in runs["plain"]])
    return common.figure(stage, "MB/s", plain)


# ---------------------------------------------------------------- --verify

def verification_texts(args) -> tuple[list[str], int]:
    """Every text of every shared data set (lines of the corpora, the text column of the others)."""
    texts: list[str] = []
    for name in ("CLUECorpusSmall_sampled.txt", "CLUECorpusSmall_bert_sampled.txt"):
        texts += common.data_path(args, "corpora", name).read_text(encoding="utf-8").split("\n")
    texts += [line.split("\t", 1)[-1]
              for line in common.data_path(args, "corpora", "book_review_cls.txt").read_text(encoding="utf-8").split("\n")]
    for folder in ("chnsenticorp", "book_review", "smp2020-ewect/usual"):
        for path in sorted(common.data_path(args, *folder.split("/")).glob("*.tsv")):
            with open(path, encoding="utf-8", newline="") as fh:
                texts += [row[-1] for row in list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    for parts in (("online_shopping_10_cats", "online_shopping_10_cats.csv"), ("waimai_10k", "waimai_10k.csv")):
        with open(common.data_path(args, *parts), encoding="utf-8", newline="") as fh:
            texts += [row[-1] for row in list(csv.reader(fh))[1:]]
    real = sum(len(t.encode("utf-8")) for t in texts)
    return texts + engine_check.edge_case_texts(), real


def _verify_case(case: tuple[str, str | None, list[str]]) -> list[dict]:
    """One engine and user-dictionary case (None: none), every mode, against jieba."""
    name, policy, texts = case
    base = SegmenterSpec(engine=name) if policy is None else engine_check.userdict_spec(policy, engine=name)
    rows = []
    for label, engine, reference in engine_check.mode_pairs(base):
        t0 = time.perf_counter()
        result = engine_check.compare(engine, reference, texts)
        rows.append({"userdict": policy or "none", "mode": label, "rows": result.rows, "identical": result.identical,
                     "identical_pct": result.identical_pct, "examples": result.examples, "seconds": time.perf_counter() - t0})
        print(f"  user dictionary {policy or 'none':8s} {label:17s} {result.identical:,}/{result.rows:,} identical "
              f"({result.identical_pct:.4f}%) in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def verify(args) -> None:
    info = common.machine()
    texts, real_bytes = verification_texts(args)
    total = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    print(f"verifying {args.engine} against jieba on {len(texts):,} texts, {total / 1e6:.1f} MB "
          f"({real_bytes / 1e6:.1f} MB real, the rest generated edge cases); every mode, 4 user-dictionary cases")
    cases = [(args.engine, policy, texts) for policy in (None, *engine_check.POLICIES)]
    # a fresh process per case: a deleted user word is force-split process-wide by jieba
    with multiprocessing.get_context("fork").Pool(common.machine()["cpus_usable"], maxtasksperchild=1) as pool:
        rows = [row for case_rows in pool.imap(_verify_case, cases) for row in case_rows]
    for row in rows:
        for text, expected, got in row["examples"]:
            print(f"  DIFFERS ({row['userdict']}, {row['mode']}): {text[:80]!r}\n    jieba:  {expected[:160]}\n"
                  f"    {args.engine}: {got[:160]}")
    figures = {"verified_mb": common.figure(total / 1e6, "MB"),
               "verified_identical_lines_pct": common.figure(min(r["identical_pct"] for r in rows), "% (worst case)")}
    for row in rows:
        key = f"identical_pct_{row['userdict']}_{row['mode'].replace(', ', '_').replace(' ', '_')}"
        figures[key] = common.figure(row["identical_pct"], "%")
    common.report("segment-verify", args, figures, info)


if __name__ == "__main__":
    main()
