"""Scale-out on one machine: segment and vocab, and pretraining, at 1 vs 2 processes of `accelerate launch`.

    python benchmarks/scale.py [--quick] [--repeats 3] [--out bench-scale.json]   # --repeats default: 3, 2 with --quick

The corpus is benchmarks/segment.py's (10 MB of real lines; 2 MB with --quick). Each side is the CLI
end to end: `nlp-pipe STAGE ... --force` in one process against
`accelerate launch --multi_gpu --num_processes 2 -m nlp_pipe STAGE ... --force` (torchrun, gloo on
CPU), so the 2-process figure pays for the launcher, the rendezvous and a second interpreter. segment
runs with `--workers 1` on both sides: the comparison is ranks, not the stage's own helper processes
(which a one-process run would otherwise start on every free core). Sides alternate each repeat;
medians. `*_build_*` is the stage's own time (the manifest's wall_time_s, after start-up), `*_launch_s`
the time of the same command when the artifact is fresh (start-up, imports, rendezvous, nothing built).
`identical`: every output file but report.md / stage.log (timings) has the same sha256 at 1 and 2
processes. Pretraining: a 2-layer x 128 BERT on the corpus's first MB for 30 steps, real
tokens/s (the Trainer's figure, all processes) at batch 16 x 1 process vs 8 x 2 processes (the same
global batch), with OMP_NUM_THREADS=1 per rank on both sides. On a 2-core machine two ranks can only
win what one process leaves idle; the multi-machine case is what the sharding is for.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import segment as segment_bench  # noqa: E402

import common  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TIMING_FILES = {"report.md", "stage.log", "manifest.json"}
PRETRAIN_MODEL = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256,
                  "max_position_embeddings": 128, "vocab_size": 21128}


def command(processes: int, *args: object) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "nlp_pipe", *map(str, args)]
    return [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", str(29600 + os.getpid() % 300), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "nlp_pipe", *map(str, args)]


def run(processes: int, *args: object) -> tuple[float, float | None]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    if processes > 1:
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")

    def go() -> None:
        done = subprocess.run(command(processes, *args), env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"failed ({' '.join(map(str, args[:1]))}, {processes} processes):\n{done.stderr[-3000:]}")

    seconds, others, _ = common.timed(go)
    return seconds, others


def digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in TIMING_FILES}


def processes_of(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["processes"])


def compare_stage(name: str, args_for, size_mb: float, repeats: int, work: Path, launch_cost: bool = True) -> dict:
    times: dict[int, list[float]] = {1: [], 2: []}
    loads: list[float | None] = []
    for r in range(repeats):
        for p in ((1, 2) if r % 2 == 0 else (2, 1)):
            seconds, others = run(p, *args_for(work / f"{name}{p}"))
            times[p].append(seconds)
            loads.append(others)
    # the stage's own build time (the manifest's wall_time_s: no interpreter start, imports or rendezvous)
    built = {p: float(json.loads((work / f"{name}{p}" / "manifest.json").read_text(encoding="utf-8"))["wall_time_s"])
             for p in (1, 2)}
    # what a launch costs before any row is read: the same command on the now fresh artifact (skipped)
    fixed = {p: run(p, *[a for a in args_for(work / f"{name}{p}") if a != "--force"])[0] if launch_cost else math.nan
             for p in (1, 2)}
    identical = digests(work / f"{name}1") == digests(work / f"{name}2")
    recorded = [processes_of(work / f"{name}{p}") for p in (1, 2)]
    print(f"{name}: 1 process {common.median(times[1]):.2f} s, 2 processes {common.median(times[2]):.2f} s, "
          f"identical {identical}, manifests record {recorded}", file=sys.stderr)
    one, two = size_mb / common.median(times[1]), size_mb / common.median(times[2])
    return {f"{name}_mb_per_s_2proc": common.figure(two, "MB/s", one),
            f"{name}_build_mb_per_s_2proc": common.figure(size_mb / built[2], "MB/s inside the stage (manifest wall time)",
                                                          size_mb / built[1]),
            f"{name}_launch_s_2proc": common.figure(fixed[2], "s for a skipped (fresh) run: start-up cost", fixed[1]),
            f"{name}_identical": common.figure(float(identical and recorded == [1, 2]), "1 = byte-identical, processes recorded"),
            f"{name}_others_cores": common.figure(common.median([x or 0.0 for x in loads]), "cores busy with other work")}


def pretrain_speed(work: Path, corpus: Path, vocab: Path, steps: int) -> dict:
    small = work / "pretrain_corpus.txt"
    with open(corpus, encoding="utf-8") as src, open(small, "w", encoding="utf-8") as dst:
        dst.write(src.read(350_000))  # characters: about 1 MB of UTF-8 Chinese
    config = work / "bert.json"
    config.write_text(json.dumps(PRETRAIN_MODEL), encoding="utf-8")
    figures = {}
    speeds = {}
    for p, batch in ((1, 16), (2, 8)):
        out = work / f"pretrain{p}"
        run(p, "pretrain", "--corpus", small, "--tokenizer", vocab, "--out", out, "--model-config", config,
            "--max-seq-len", 128, "--batch-size", batch, "--steps", steps, "--log-every", min(10, steps), "--eval-every", 0,
            "--save-every", 1000, "--eval-docs", 2, "--num-proc", 1, "--precision", "fp32", "--force")
        metrics = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]
        speeds[p] = metrics["tokens_per_s"]
        print(f"pretrain {p} process(es): {speeds[p]:.0f} tokens/s, processes {metrics['processes']}", file=sys.stderr)
    figures["pretrain_tokens_per_s_2proc"] = common.figure(speeds[2], "tokens/s", speeds[1])
    return figures


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="runs of each side (default 3; 2 with --quick)")
    args = common.parse(p)
    args.repeats = args.repeats or common.pick(args, 1, 2, 3)
    info = common.machine()
    target = common.pick(args, segment_bench.SMOKE_MB, segment_bench.QUICK_MB, segment_bench.FULL_MB) * 1_000_000
    work = common.bench_dir(args, "scale")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        size = segment_bench.build_corpus(args, corpus, target)
        mb = size / 1e6
        figures = compare_stage("segment", lambda out: ("segment", "--corpus", corpus, "--out", out, "--workers", 1, "--force"),
                                mb, args.repeats, work, launch_cost=not args.smoke)  # --smoke: 4 launches fewer
        seg = work / "segment1"
        seg_mb = (seg / "corpus.txt").stat().st_size / 1e6  # vocab reads the segmented text
        figures |= compare_stage("vocab", lambda out: ("vocab", "--corpus", seg, "--out", out, "--min-freq", 1, "--force"),
                                 seg_mb, args.repeats, work, launch_cost=not args.smoke)
        figures |= pretrain_speed(work, corpus, common.ROOT / "vocab" / "bert_zh_vocab.txt", common.pick(args, 2, 30, 30))
    common.report("scale", args, figures, info)


if __name__ == "__main__":
    main()
