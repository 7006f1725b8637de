"""Every benchmark, end to end on a fresh clone, and one summary of all their figures.

    python benchmarks/run_all.py [--quick | --smoke] [--data-dir ../shared/data] [--only segment,textcnn]
    make bench          # the full run: an estimated 3-4 hours on 2 idle CPU cores (not yet timed end to end;
                        # from the quick run's step times: distill ~70 min, finetune and textcnn ~35 each,
                        # pretraining 300 steps ~23)
    make bench-quick    # every benchmark at --quick sizes: about 18 minutes on 2 idle cores (the bound is 30);
                        # a second run reuses the built models and artifacts: about 7 minutes

Each benchmark runs as its own process (`python benchmarks/NAME.py [--quick] --out runs/bench/MODE/NAME.json`)
and builds what it needs through the stages and pipelines (the pretrained BERT of pipelines/pretrain_bert.yaml,
the fine-tuned teacher of benchmarks/finetune.py), kept as artifacts under runs/bench/MODE/, so a second run
skips them as fresh. Writes runs/bench/summary.md and summary.json: every figure with value, baseline, ratio
and unit, the bar it is held to (marked when missed, never hidden), the machine (cores, load during the run,
GPU if any) and the commit. A benchmark that cannot run here (no GPU, a missing package, missing data) says
so in the summary; the others still run, and this script exits 0 unless one of them failed.
A figure whose model is too small to mean anything (a benchmark marks it `smoke`, e.g. BERT after --quick's
10 pretraining steps; every figure of --smoke) is listed apart, under "Smoke figures", and held to no bar.
`--smoke` runs every benchmark's smoke mode (tiny inputs made in the run; tests/test_benchmarks.py runs them
one by one in `make test`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = ("segment", "word2vec", "textcnn", "pretrain", "expand", "finetune", "distill", "verify", "scale", "corpus_scale", "serve", "gpu")
# (benchmark, figure) -> (compare the ratio or the value, operator, bar, where the bar comes from)
BARS: dict[tuple[str, str], tuple[str, str, float, str]] = {
    ("segment", "segment_mb_per_s"): ("ratio", ">=", 20.0, "issue 30: the stage on 2 cores >= 20x plain jieba"),
    ("segment", "segment_mb_per_s_two_processes"): ("ratio", ">=", 20.0, "issue 30: the stage forced to 2 processes >= 20x"),
    ("segment", "segment_mb_per_s_one_process"): ("ratio", ">=", 12.0, "issue 30: one core >= 12x plain jieba"),
    ("segment", "rjieba_accurate_hmm_on_mb_per_s"): ("ratio", ">=", 12.0, "issue 30: the exact engine >= 12x jieba per core"),
    ("segment", "rjieba_search_hmm_on_mb_per_s"): ("ratio", ">=", 8.0, "issue 30: search mode >= 8x jieba per core"),
    ("segment", "segment_mb_per_s_loaded"): ("ratio", ">=", 1.5, "issue 16"),
    ("segment", "identical_lines_pct"): ("value", ">=", 100.0, "issue 16"),
    ("textcnn", "test_accuracy"): ("ratio", ">=", 1.0, "issue 19: TextCNN >= TF-IDF + LR"),
    ("textcnn", "test_accuracy_unseen"): ("ratio", ">=", 1.0, "issue 19: TextCNN >= TF-IDF + LR on unseen rows"),
    ("distill", "student_test_accuracy"): ("ratio", ">=", 0.96, "retention >= 96%"),
    ("distill", "cpu_speedup_base_to_tiny4"): ("ratio", ">=", 9.4, "TinyBERT-4 >= 9.4x BERT-base on CPU"),
    ("verify", "check_unchanged_s"): ("value", "<=", 1.0, "issue 14: an unchanged 1 GB artifact in under 1 s"),
    ("scale", "segment_identical"): ("value", ">=", 1.0, "issue 17: 2 processes byte-identical to 1"),
    ("scale", "vocab_identical"): ("value", ">=", 1.0, "issue 17: 2 processes byte-identical to 1"),
    ("serve", "student_onnx_int8_c32_texts_per_s"): ("ratio", ">=", 40.0, "issue 31: int8 ONNX TinyBERT-4 >= 40x the teacher"),
    ("serve", "textcnn_onnx_c32_texts_per_s"): ("value", ">=", 1000.0, "issue 31: TextCNN ONNX >= 1,000 texts/s"),
    ("serve", "load_run_errors"): ("value", "<=", 0.0, "issue 31: the 60 s load run without an error"),
    ("gpu", "pretrain_mfu"): ("value", ">=", 0.40, "issue 17"),
    ("gpu", "parity_max_relative_difference"): ("value", "<=", 1e-3, "issue 17"),
}
NEEDS_GPU = {"gpu"}


def main() -> None:
    args = _args()
    mode = common.pick(args, "smoke", "quick", "full")
    names = [n for n in ORDER if not args.only or n in args.only.split(",")]
    out_dir = common.BENCH_RUNS / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    started, loads = dt.datetime.now().astimezone(), [os.getloadavg()[0]]
    rows, failed = [], False
    for name in names:
        row = run_one(name, args, out_dir / f"{name}.json")
        loads.append(os.getloadavg()[0])
        failed |= row["status"].startswith("failed")
        rows.append(row)
        print(f"== {name}: {row['status']} ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    summary = {"mode": mode, "started": started.isoformat(timespec="seconds"), "commit": _commit(),
               "machine": {**common.machine(), "load_avg_during_run": [round(x, 2) for x in loads], "gpu": _gpu()},
               "benchmarks": rows}
    where = out_dir if args.smoke else common.BENCH_RUNS  # a smoke run leaves the real summary alone
    (where / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (where / "summary.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    sys.exit(1 if failed else 0)


def run_one(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    if name in NEEDS_GPU and not _gpu():
        return {"name": name, "status": "not run: no GPU on this machine", "seconds": 0.0, "figures": {}}
    command = [sys.executable, str(HERE / f"{name}.py"), "--data-dir", str(args.data_dir), "--out", str(out)]
    if args.smoke:
        command.append("--smoke")
    elif args.quick:
        command.append("--quick")
    out.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    seconds = time.perf_counter() - t0
    last = (done.stderr.strip().splitlines() or [""])[-1][:300]
    if done.returncode != 0 or not out.exists():
        missing = "ModuleNotFoundError" in done.stderr or "not found: pass --data-dir" in done.stderr
        return {"name": name, "status": f"{'not run' if missing else 'failed'}: {last}", "seconds": seconds, "figures": {}}
    result = json.loads(out.read_text(encoding="utf-8"))
    figures = {key: {**f, **judge(name, key, f)} for key, f in result["figures"].items()}
    return {"name": name, "status": "ran", "seconds": round(seconds, 1), "figures": figures, "result": str(out)}


def judge(name: str, key: str, figure: dict[str, Any]) -> dict[str, Any]:
    if (name, key) not in BARS or figure.get("smoke"):
        return {}
    which, op, bar, source = BARS[(name, key)]
    value = figure.get(which)
    met = None if value is None else value >= bar if op == ">=" else value <= bar
    return {"bar": f"{which} {op} {bar:g} ({source})", "met": met}


def markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    lines = [f"# Benchmarks ({summary['mode']} run)", "",
             f"Started {summary['started']}, commit `{(summary['commit'] or 'unknown')[:12]}`; {m['cpus_usable']} cores "
             f"({m['cpu_model']}), load average during the run {m['load_avg_during_run']}, GPU: {m['gpu'] or 'none'}.", "",
             "| benchmark | figure | value | baseline | ratio | unit | bar |", "| --- | --- | --- | --- | --- | --- | --- |"]
    smoke = []
    for row in summary["benchmarks"]:
        if row["status"] != "ran":
            lines.append(f"| {row['name']} | {row['status']} | | | | | |")
            continue
        for key, f in row["figures"].items():
            if f.get("smoke"):
                smoke.append(f"| {row['name']} | {key} | {_num(f['value'])} | {_num(f.get('baseline'))} | {f['unit']} | {f['smoke']} |")
                continue
            bar = "" if "bar" not in f else f"{'met' if f['met'] else '**MISSED**'}: {f['bar']}"
            lines.append(f"| {row['name']} | {key} | {_num(f['value'])} | {_num(f.get('baseline'))} | "
                         f"{_num(f.get('ratio'), 'x')} | {f['unit']} | {bar} |")
    if smoke:
        lines += ["", "## Smoke figures", "",
                  "Not results: the model behind each is too small to mean anything; they show that the path runs.", "",
                  "| benchmark | figure | value | baseline | unit | why a smoke figure |", "| --- | --- | --- | --- | --- | --- |",
                  *smoke]
    return "\n".join(lines) + "\n"


def _num(x: Any, suffix: str = "") -> str:
    if not isinstance(x, (int, float)):
        return "-" if x is None else str(x)
    return f"{x:.4g}{suffix}" if abs(x) < 1e5 else f"{x:,.0f}{suffix}"


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run every benchmark and write runs/bench/summary.{md,json}")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data sets")
    p.add_argument("--quick", action="store_true", help="every benchmark at --quick sizes (about 18 minutes on 2 idle cores)")
    p.add_argument("--smoke", action="store_true", help="every benchmark's --smoke mode: tiny inputs made in the run, no data needed")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ORDER)}")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds a single benchmark may take")
    return p.parse_args()


if __name__ == "__main__":
    main()
