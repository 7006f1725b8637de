"""`nlp-pipe segment` against a plain one-process jieba loop, on the same corpus, same run.

    python benchmarks/segment.py [--quick] [--out bench-segment.json] [--repeats 3]

The corpus (10 MB; 2 MB with --quick) interleaves real lines from --data-dir: CLUE news/web
documents (some very long), CLUE sentences with empty lines between documents, and Douban
book reviews, repeated as needed. Both sides include dictionary loading and writing their
output file: the stage runs end to end through the runner (plan + execute: input hashing,
worker start-up, corpus.txt, the `datasets` dataset, manifest, verification) on all cores;
the baseline initialises a fresh `jieba.Tokenizer()` and writes `" ".join(words)` a line.
Figures: throughput (MB/s of input, median over repeats) and the share of lines identical.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import jieba

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import runner  # noqa: E402

FULL_MB, QUICK_MB = 10, 2


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


def run_stage(corpus: Path, out: Path) -> None:
    """What `nlp-pipe segment --corpus CORPUS --out OUT --force` does."""
    plan = runner.plan("segment", {}, {"corpus": [str(corpus)]}, out)
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
    assert len(ds) == rows, f"dataset has {len(ds)} rows, corpus.txt {rows}"
    with open(artifact / "corpus.txt", encoding="utf-8") as fh:
        for batch in ds.iter(batch_size=10_000):
            for words in batch["words"]:
                assert words == next(fh).rstrip("\n").split(" "), "dataset and corpus.txt disagree"
    print(f"dataset: {len(ds)} rows, columns {ds.column_names}, aligned with corpus.txt")


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="full runs of each side (median reported)")
    args = p.parse_args()
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        size = build_corpus(args, corpus, (QUICK_MB if args.quick else FULL_MB) * 1_000_000)
        print(f"corpus: {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, encoding='utf-8'))} lines; "
              f"load average {info['load_avg']}")
        runs: dict[str, list[tuple[float, float | None]]] = {"stage": [], "plain": []}  # (s, others' cores)
        for r in range(args.repeats):
            order = ("stage", "plain") if r % 2 == 0 else ("plain", "stage")  # fair to drifting load
            for side in order:
                if side == "stage":
                    t, others, _ = common.timed(lambda: run_stage(corpus, tmp / "artifact"))
                else:
                    t, others, _ = common.timed(lambda: run_plain(corpus, tmp / "plain.txt"))
                runs[side].append((t, others))
                print(f"  repeat {r + 1}: {side:5s} {t:6.2f} s  {size / 1e6 / t:5.2f} MB/s  "
                      f"(other processes used {common.cores(others)} meanwhile)", flush=True)
        pct, rows = identical_pct(corpus, tmp / "artifact" / "corpus.txt", tmp / "plain.txt")
        check_dataset(tmp / "artifact", rows)
    common.note_quiet_ratio(info, runs["stage"], runs["plain"], higher_is_better=False)
    stage_mbs = size / 1e6 / common.median([t for t, _ in runs["stage"]])
    plain_mbs = size / 1e6 / common.median([t for t, _ in runs["plain"]])
    common.report("segment", args, {
        "segment_mb_per_s": common.figure(stage_mbs, "MB/s", plain_mbs),
        "identical_lines_pct": common.figure(pct, "%"),
    }, info)


if __name__ == "__main__":
    main()
