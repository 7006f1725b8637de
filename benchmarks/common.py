"""The benchmark convention every script in benchmarks/ follows.

    python benchmarks/NAME.py [--data-dir ../shared/data] [--quick | --smoke] [--out bench-NAME.json]

- `--data-dir`: the shared real data sets (see their README.md); a relative path is taken
  from the current directory, so the default fits a run from the repository root.
- `--quick`: a smaller input (each script's docstring gives its sizes): most finish within a few minutes on
  2 cores, every one together (`make bench-quick`) within 30 minutes.
- `--smoke`: a check that the script still runs end to end, in seconds (`make test` runs every one:
  tests/test_benchmarks.py): --quick's code path on tiny inputs made in the run from tests/fixtures
  (`smoke_data`, in --data-dir's layout) with each script's smallest settings, artifacts under
  runs/bench/smoke/. Its figures mean nothing and are marked so.
- A figure whose model is too small to mean anything (e.g. BERT after 10 pretraining steps in --quick)
  carries `smoke`: why; run_all.py lists such figures apart from the results.
- Figures are measured against the plain library baseline *in the same run* and reported as
  ratios (medians over repeats where repeats are cheap); machines are noisy, so the machine
  (and its load) is recorded beside them.
- `--out` writes {"benchmark", "quick", "smoke", "machine", "figures": {NAME: {value, unit, baseline, ratio[, smoke]}}}.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_VERSIONS = ("torch", "jieba", "gensim", "datasets", "transformers")
ROOT = Path(__file__).resolve().parent.parent
BENCH_RUNS = Path("runs/bench")  # every artifact the benchmarks build, reused as fresh by the next run
QUIET_CORES = 0.1  # a run during which other processes used less than this counts as quiet


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                   help="directory of the shared data sets (default: ../shared/data, i.e. run from the repo root)")
    p.add_argument("--quick", action="store_true",
                   help="smaller input (sizes in the script's docstring); all benchmarks together within 30 minutes on 2 cores")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: --quick's path on tiny inputs made in the run (no --data-dir needed); checks the script runs, "
                        "its figures mean nothing")
    p.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments; --smoke also means --quick and a --data-dir of tiny files made now (see smoke_data)."""
    args = p.parse_args()
    if args.smoke:
        args.quick = True
        args.data_dir = smoke_data(BENCH_RUNS / "smoke" / "data")
    return args


def pick(args: argparse.Namespace, smoke: Any, quick: Any, full: Any) -> Any:
    """A size for this run's mode."""
    return smoke if getattr(args, "smoke", False) else quick if args.quick else full


def smoke_data(root: Path) -> Path:
    """The files of the shared data sets the benchmarks read, in their layout, made small from tests/fixtures:
    ChnSentiCorp-style splits and the shopping reviews from reviews.tsv, news.txt as both CLUE corpora and the Douban
    book reviews (so the pretraining text holds no dev/test review, as with the real sets), the fixture's BERT vocabulary."""
    fixtures = ROOT / "tests" / "fixtures"
    reviews = [line.split("\t", 1) for line in (fixtures / "reviews.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    rows = [("1" if label == "pos" else "0", text) for label, text in reviews]
    split = {"train": rows[:100], "dev": rows[100:130], "test": rows[130:]}
    train_texts = {t for _, t in split["train"]}
    split["dev_unseen"] = [r for r in split["dev"] if r[1] not in train_texts]
    split["test_unseen"] = [r for r in split["test"] if r[1] not in train_texts]
    files = {f"chnsenticorp/{name}.tsv": "label\ttext_a\n" + "".join(f"{label}\t{text}\n" for label, text in part)
             for name, part in split.items()}
    news = (fixtures / "news.txt").read_text(encoding="utf-8")
    files["corpora/CLUECorpusSmall_bert_sampled.txt"] = news
    files["corpora/CLUECorpusSmall_sampled.txt"] = "\n".join(line for line in news.splitlines() if line.strip()) + "\n"
    sentences = [line for line in news.splitlines() if line.strip()]
    files["corpora/book_review_cls.txt"] = "".join(f"{i % 2}\t{text}\n" for i, text in enumerate(sentences))
    files["online_shopping_10_cats/online_shopping_10_cats.csv"] = "cat,label,review\n" + "".join(
        f"酒店,{label},{text}\n" for label, text in rows)
    for name, text in files.items():
        path = root / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged: artifacts built on it stay fresh
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    vocab = root / "vocab" / "google_zh_vocab.txt"
    if not vocab.exists():
        vocab.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures / "bert_zh" / "vocab.txt", vocab)
    return root


def data_path(args: argparse.Namespace, *parts: str) -> Path:
    """A file under --data-dir; a one-line exit (not a traceback) when it is missing."""
    path = args.data_dir.joinpath(*parts)
    if not path.exists():
        sys.exit(f"{path} not found: pass --data-dir (the shared data sets, e.g. ../shared/data from the repo root)")
    return path


def timed(fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, cores busy with *other* processes meanwhile, fn's result). The second number
    says how far to trust the first: on a shared 2-core machine it is rarely 0."""
    busy0, own0, t0 = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
    result = fn()
    busy1, own1, elapsed = _busy_cpu_s(), _own_cpu_s(), time.perf_counter() - t0
    others = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / elapsed
    return elapsed, others, result


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat; None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_cpu_s() -> float:
    t = os.times()  # children count once reaped, e.g. the workers of a pool that has shut down
    return t.user + t.system + t.children_user + t.children_system


def median(values: list[float]) -> float:
    return statistics.median(values)


def cores(others: float | None) -> str:
    return "?" if others is None else f"{others:.2f} cores"


def note_quiet_ratio(info: dict[str, Any], runs: list[tuple[float, float | None]],
                     baseline_runs: list[tuple[float, float | None]], higher_is_better: bool = True) -> None:
    """Record what other processes used during each (value, others) run in `info`, and print the
    ratio over the quiet runs only (others below QUIET_CORES), when each side had one."""
    info["other_processes_cores"] = {"ours": [_round(o) for _, o in runs], "baseline": [_round(o) for _, o in baseline_runs]}
    quiet = [v for v, o in runs if o is not None and o < QUIET_CORES]
    quiet_base = [v for v, o in baseline_runs if o is not None and o < QUIET_CORES]
    if quiet and quiet_base:
        ratio = median(quiet) / median(quiet_base) if higher_is_better else median(quiet_base) / median(quiet)
        info["quiet_ratio"] = {"ratio": ratio, "runs": len(quiet), "baseline_runs": len(quiet_base)}
        print(f"quiet runs only (other processes < {QUIET_CORES} cores): ratio {ratio:.2f}x "
              f"over {len(quiet)} + {len(quiet_base)} baseline runs")
    else:
        print(f"no quiet run on both sides (other processes >= {QUIET_CORES} cores): figures are load-affected")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def machine() -> dict[str, Any]:
    """What a figure depends on besides the code: cores, CPU, library versions, threads, load."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    versions = {}
    for name in _VERSIONS:  # from metadata: importing torch just to read its version costs seconds
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def figure(value: float, unit: str, baseline: float | None = None, smoke: str | None = None) -> dict[str, Any]:
    """One figure; `smoke` says why it means nothing (a model too small or too briefly trained), when so."""
    f = {"value": value, "unit": unit, "baseline": baseline, "ratio": value / baseline if baseline else None}
    return {**f, "smoke": smoke} if smoke else f


def report(name: str, args: argparse.Namespace, figures: dict[str, dict[str, Any]],
           info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print the figures as a table and write them to --out; `info` is the machine record
    (taken at the start, so its load average shows what the run started on)."""
    smoke = bool(getattr(args, "smoke", False))
    if smoke:
        figures = {k: {**f, "smoke": "--smoke: tiny inputs"} for k, f in figures.items()}
    result = {"benchmark": name, "quick": bool(args.quick), "smoke": smoke, "machine": info or machine(), "figures": figures}
    rows = [("figure", "value", "baseline", "ratio", "unit")]
    for key, f in figures.items():
        unit = f["unit"] + (f" [smoke figure: {f['smoke']}]" if f.get("smoke") else "")
        rows.append((key, _num(f["value"]), _num(f["baseline"]), _num(f["ratio"], "x"), unit))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    m = result["machine"]
    mode = " (smoke: checks that it runs; the figures mean nothing)" if smoke else " (quick)" if args.quick else ""
    print(f"\n{name}{mode}: {m['cpus_usable']} cores, {m['cpu_model']}, load {m['load_avg']}")
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 or j == 4 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return result


def _num(x: float | None, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:.3g}{suffix}" if abs(x) < 1000 else f"{x:,.0f}{suffix}"


def bench_dir(args: argparse.Namespace, name: str) -> Path:
    """runs/bench/{smoke,quick,full}/NAME: where a benchmark keeps the artifacts it builds."""
    return BENCH_RUNS / pick(args, "smoke", "quick", "full") / name


def run_pipeline(pipeline_file: Path, workdir: Path, variables: dict[str, Any],
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Every stage of a pipeline file into `workdir`, each skipped when fresh (as `nlp-pipe run` does)."""
    from nlp_pipe import pipeline, runner

    pipe = pipeline.load(pipeline_file, variables, overrides, str(workdir))
    for step in pipe.steps:
        plan = pipe.plan_now(step)
        print(f"[{step.name}] {'fresh' if plan.fresh else 'running: ' + plan.reason} ({plan.out})", file=sys.stderr)
        if not plan.fresh:
            runner.execute(plan)


PRETRAIN_STEPS = {"smoke": 2, "quick": 10, "full": 300}
SMOKE_PRETRAIN = {"batch_size": 4, "grad_accum": 1, "max_seq_len": 64, "eval_docs": 4, "eval_every": 0, "save_every": 0}


def pretrained(args: argparse.Namespace) -> Path:
    """The BERT-mini of pipelines/pretrain_bert.yaml (PRETRAIN_STEPS steps), built under runs/bench/ unless fresh."""
    workdir = bench_dir(args, "pretrain_bert")
    steps = PRETRAIN_STEPS[pick(args, "smoke", "quick", "full")]
    run_pipeline(ROOT / "pipelines" / "pretrain_bert.yaml", workdir,
                 {"corpus": str(data_path(args, "corpora", "CLUECorpusSmall_bert_sampled.txt").resolve()),
                  "reviews": str(data_path(args, "corpora", "book_review_cls.txt").resolve()), "steps": steps},
                 {"pretrain": SMOKE_PRETRAIN} if getattr(args, "smoke", False) else None)
    return workdir / "pretrain"
