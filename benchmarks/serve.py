"""Serving speed through `nlp-pipe serve` over HTTP on 127.0.0.1: texts/s and p50/p99 latency at concurrency 1, 8, 32
for the teacher (PyTorch), the student (PyTorch), the student's ONNX export fp32 and int8, a TextCNN export and the
TF-IDF + LR baseline; then a load run on the int8 student that must end with 0 errors.

    python benchmarks/serve.py [--smoke | --quick] [--out bench-serve.json] [--student DIR] [--teacher DIR] [--work DIR]

Each model is served by its own `nlp-pipe serve` child process (nlp_pipe.serving.local_server; stopped with
SIGTERM); the client is aiohttp's ClientSession in this process, `c` coroutines each sending one request of
--texts-per-request texts at a time for --seconds (then waiting for the answers in flight), so client and server
share the same cores, as on a one-box deployment. Texts: ChnSentiCorp dev (--data-dir), round-robin.
Models: --teacher / --student are classifier artifacts (finetune, distill); without them random-weight
BertForSequenceClassification of the 12x768 (BERT-base) and TinyBERT-4 (4x312, FFN 1200, 12 heads) shapes with the
21,128-token Chinese vocabulary stand in: speed depends on the shape, not the weights, but then the int8 label
agreement (int8 student vs PyTorch student on the dev texts, through the servers) is measured on a model whose
probabilities sit near 0.5 and says little. TextCNN: --input chars with its n-gram bag, 2 epochs on ChnSentiCorp
train; baseline: char 1-3-grams. Exports are `nlp-pipe export` artifacts, parity checked on the dev texts.
--quick: 5 s per level, the 60-second load run, 300 dev texts for the agreement. Full: 15 s per level.
--smoke: tiny models made in the run from tests/fixtures (2x32 teacher, 1x16 student, 1-epoch TextCNN),
levels 1 and 8 for 0.5 s each, a 2-second load run: a check that everything runs (seconds), not a measurement.
Beside the served figures, the BERTs' model calls alone in this process on one thread, as texts per CPU second
(`*_model_call_texts_per_cpu_s`): a figure the machine's other work hardly moves; and per level the server's CPU
time per answered text (`*_server_cpu_ms_per_text`, all its threads, from /proc on Linux), which moves much less
with that work than texts/s do.
Targets (2 cores): int8 ONNX TinyBERT-4 >= 40x the 12x768 teacher's PyTorch texts/s at >= 99% label agreement
with the PyTorch student; TextCNN ONNX >= 1,000 texts/s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
FIXTURES = ROOT / "tests" / "fixtures"
SERVE_OPTIONS = ("--max-queue", "100000", "--max-texts", "64")


def stage(name: str, config: dict[str, Any], inputs: dict[str, Any], out: Path) -> Path:
    from nlp_pipe import runner

    plan = runner.plan(name, config, inputs, out)
    if not plan.fresh:
        print(f"[{name}] building {out}", file=sys.stderr, flush=True)
        runner.execute(plan)
    return out


def random_classifier(out: Path, vocab: Path, layers: int, hidden: int, heads: int, ffn: int) -> Path:
    """A BertForSequenceClassification of this shape with random weights and the Chinese BERT tokenizer (speed only)."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=512, num_labels=2, id2label={0: "0", 1: "1"},
                        label2id={"0": 0, "1": 1})
    tmp = out.with_name(out.name + ".tmp")
    BertForSequenceClassification(config).save_pretrained(tmp)
    BertTokenizer(vocab=str(vocab)).save_pretrained(tmp)
    (tmp / "labels.json").write_text('{"labels": ["0", "1"], "max_seq_len": 128}', encoding="utf-8")
    tmp.rename(out)
    return out


def models(args) -> tuple[dict[str, Path], list[str]]:
    """name -> directory to serve (artifact or export), and the texts."""
    work = args.work
    if args.smoke:
        seg = stage("segment", {"workers": 1}, {"corpus": [str(FIXTURES / "reviews.tsv")]}, work / "seg")
        dev, vocab = seg, FIXTURES / "bert_zh" / "vocab.txt"
        shapes = {"teacher": (2, 32, 2, 64), "student": (1, 16, 2, 32)}
        cnn = {"epochs": 1, "filters": 4, "batch_size": 16}
    else:
        seg = stage("segment", {"workers": 1}, {"corpus": [str(common.data_path(args, "chnsenticorp", "train.tsv"))]},
                    work / "seg_train")
        dev = stage("segment", {"workers": 1}, {"corpus": [str(common.data_path(args, "chnsenticorp", "dev.tsv"))]},
                    work / "seg_dev")
        vocab = common.data_path(args, "vocab", "google_zh_vocab.txt")
        shapes = {"teacher": (12, 768, 12, 3072), "student": (4, 312, 12, 1200)}
        cnn = {"epochs": 2}
    teacher = args.teacher or random_classifier(work / "teacher", vocab, *shapes["teacher"])
    student = args.student or random_classifier(work / "student", vocab, *shapes["student"])
    textcnn = stage("textcnn", {"input": "chars", "baseline": False, **cnn}, {"train": seg, "dev": dev}, work / "textcnn")
    baseline = stage("baseline", {}, {"train": seg, "dev": dev}, work / "baseline")
    parity = {"parity_texts": 200 if not args.smoke else 160}
    served = {
        "teacher": Path(teacher), "student": Path(student),
        "student_onnx_fp32": stage("export", parity, {"model": str(student), "texts": dev}, work / "student_onnx_fp32"),
        "student_onnx_int8": stage("export", {**parity, "quantize": "int8"}, {"model": str(student), "texts": dev},
                                   work / "student_onnx_int8"),
        "textcnn_onnx": stage("export", parity, {"model": textcnn, "texts": dev}, work / "textcnn_onnx"),
        "baseline": baseline,
    }
    from nlp_pipe.core.files import segmented_dataset

    texts = list(segmented_dataset(dev, "bench")["text"])
    return served, texts


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) process `pid` has used so far; None without Linux's /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in clock ticks


async def level(url: str, texts: list[str], concurrency: int, seconds: float, per_request: int,
                server_pid: int | None = None) -> dict[str, Any]:
    """`concurrency` clients posting for `seconds`: texts/s, p50/p99 latency (ms), errors, and the CPU time per
    answered text of the server process (`server_pid`) and of this client."""
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    done = 0

    async def client(i: int, http: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal done
        k = i
        while time.perf_counter() < deadline:
            batch = [texts[(k * per_request + j) % len(texts)] for j in range(per_request)]
            t0 = time.perf_counter()
            try:
                async with http.post(url + "/predict", json={"texts": batch}) as response:
                    body = await response.read()
            except aiohttp.ClientError as exc:
                errors.append(type(exc).__name__)
                continue
            if response.status == 200:
                latencies.append(time.perf_counter() - t0)
                done += per_request
            else:
                errors.append(f"{response.status} {body[:100]!r}")
            k += concurrency

    async with _session(concurrency) as http:
        async with http.post(url + "/predict", json={"texts": texts[:per_request]}) as response:  # warm the connection
            await response.read()  # and the model
        server0, client0 = cpu_seconds(server_pid) if server_pid else None, time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http, t0 + seconds) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
        server1, client_cpu = cpu_seconds(server_pid) if server_pid else None, time.process_time() - client0
    server_cpu = server1 - server0 if server0 is not None and server1 is not None else float("nan")
    latencies.sort()
    pct = lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    per_text = lambda cpu: 1000 * cpu / done if done else float("nan")  # noqa: E731
    return {"texts_per_s": done / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "requests": len(latencies),
            "errors": len(errors), "first_errors": errors[:3], "seconds": elapsed,
            "server_cpu_ms_per_text": per_text(server_cpu), "server_cores": server_cpu / elapsed,
            "client_cpu_ms_per_text": per_text(client_cpu)}


def _session(concurrency: int) -> Any:
    """aiohttp, not httpx: against one TextCNN export httpx's AsyncClient sent fewer texts at c=32 than at c=8
    (562 vs 1,280 texts/s, its client taking 0.4-0.7 of the 2 cores), so the benchmark measured its own client;
    aiohttp's took 0.1 core and got 1,682 at c=32 from the same server (docs/performance.md, serving)."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 2),
                                 timeout=aiohttp.ClientTimeout(total=600))


def model_calls(served: dict[str, Path], texts: list[str], repeats: int = 3) -> dict[str, float]:
    """The BERTs' model calls alone, in this process, on one thread: texts per CPU second of the calling thread
    (median of `repeats`, models alternating), 4 texts a call as served. CPU time, not wall time: it does not
    move with the other work on the machine, which the served figures do (onnxruntime and PyTorch suffer
    differently from contention). With one call per core, a quiet N-core server approaches N times this."""
    import torch

    from nlp_pipe.classifiers.loaded import TextClassifier

    torch.set_num_threads(1)
    models = {name: TextClassifier.load(served[name], threads=1)
              for name in ("teacher", "student", "student_onnx_fp32", "student_onnx_int8") if name in served}
    runs: dict[str, list[float]] = {name: [] for name in models}
    for clf in models.values():
        clf.predict(texts[:8], 4)  # first-call costs
    for _ in range(repeats):
        for name, clf in models.items():
            t0 = time.thread_time()
            clf.predict(texts, 4)
            runs[name].append(len(texts) / (time.thread_time() - t0))
    return {name: sorted(r)[len(r) // 2] for name, r in runs.items()}


async def labels(url: str, texts: list[str]) -> list[str]:
    out: list[str] = []
    async with _session(1) as http:
        for i in range(0, len(texts), 32):
            async with http.post(url + "/predict", json={"texts": texts[i:i + 32]}) as response:
                response.raise_for_status()
                out += [r["label"] for r in (await response.json())["predictions"]]
    return out


def main() -> None:
    args = _args()
    info = common.machine()
    args.work = args.work or common.bench_dir(args, "serve") if not args.smoke else (args.work or Path("runs/bench/smoke/serve"))
    args.work.mkdir(parents=True, exist_ok=True)
    from nlp_pipe.serving import local_server

    served, texts = models(args)
    concurrency = (1, 8) if args.smoke else (1, 8, 32)
    seconds = 0.5 if args.smoke else 5.0 if args.quick else 15.0
    load_seconds = 2.0 if args.smoke else 60.0
    agreement_texts = texts[:160 if args.smoke else 300]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    load: dict[str, Any] = {}
    predicted: dict[str, list[str]] = {}
    if args.only:
        unknown = set(args.only.split(",")) - set(served)
        if unknown:
            sys.exit(f"--only: unknown model {sorted(unknown)[0]}; models: {', '.join(served)}")
        served = {k: v for k, v in served.items() if k in args.only.split(",")}
    for name, directory in served.items():
        t0 = time.perf_counter()
        with local_server(directory, *SERVE_OPTIONS, timeout=300) as server:
            results[name] = {}
            print(f"{name}: server answering after {time.perf_counter() - t0:.1f} s", flush=True)
            for c in concurrency:
                r = asyncio.run(level(server.url, texts, c, seconds, args.texts_per_request, server.process.pid))
                results[name][c] = r
                print(f"{name:18s} c={c:<3d} {r['texts_per_s']:9.1f} texts/s  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
                      f"server {r['server_cores']:.2f} cores, {r['server_cpu_ms_per_text']:.2f} CPU-ms/text (client "
                      f"{r['client_cpu_ms_per_text']:.2f})  errors {r['errors']}{' ' + str(r['first_errors']) if r['errors'] else ''}",
                      flush=True)
            if name in ("student", "student_onnx_fp32", "student_onnx_int8"):
                predicted[name] = asyncio.run(labels(server.url, agreement_texts))
            if name == "student_onnx_int8":
                load = asyncio.run(level(server.url, texts, concurrency[-1], load_seconds, args.texts_per_request))

    figures: dict[str, dict[str, Any]] = {}
    for name, by_c in results.items():
        for c, r in by_c.items():
            base = results["teacher"][c]["texts_per_s"] if "teacher" in results and name != "teacher" else None
            figures[f"{name}_c{c}_texts_per_s"] = common.figure(r["texts_per_s"], "texts/s", base)
            figures[f"{name}_c{c}_p50_ms"] = common.figure(r["p50_ms"], "ms")
            figures[f"{name}_c{c}_p99_ms"] = common.figure(r["p99_ms"], "ms")
            figures[f"{name}_c{c}_errors"] = common.figure(r["errors"], "requests")
            cpu_base = results["teacher"][c]["server_cpu_ms_per_text"] if "teacher" in results and name != "teacher" else None
            figures[f"{name}_c{c}_server_cpu_ms_per_text"] = common.figure(r["server_cpu_ms_per_text"], "CPU-ms/text",
                                                                           cpu_base)
    for name in ("student_onnx_fp32", "student_onnx_int8"):
        if name in predicted and "student" in predicted:
            same = sum(a == b for a, b in zip(predicted[name], predicted["student"])) / len(agreement_texts)
            figures[f"{name}_label_agreement"] = common.figure(same, "share of texts", 1.0)
    if load:
        figures["load_run_texts_per_s"] = common.figure(load["texts_per_s"], "texts/s")
        figures["load_run_p99_ms"] = common.figure(load["p99_ms"], "ms")
        figures["load_run_errors"] = common.figure(load["errors"], "requests")
        print(f"load run: student_onnx_int8 c={concurrency[-1]} for {load['seconds']:.0f} s: {load['texts_per_s']:.1f} texts/s, "
              f"p99 {load['p99_ms']:.1f} ms, {load['requests']} requests, {load['errors']} errors", flush=True)
    calls = model_calls(served, texts[:16 if args.smoke else 64])
    for name, rate in calls.items():
        base = calls.get("teacher") if name != "teacher" else None
        figures[f"{name}_model_call_texts_per_cpu_s"] = common.figure(rate, "texts/CPU-s", base)
    top = concurrency[-1]
    if "teacher" in results and "student_onnx_int8" in results:
        int8_ratio = results["student_onnx_int8"][top]["texts_per_s"] / results["teacher"][top]["texts_per_s"]
        cpu_ratio = results["teacher"][top]["server_cpu_ms_per_text"] / results["student_onnx_int8"][top]["server_cpu_ms_per_text"]
        agreement = figures.get("student_onnx_int8_label_agreement", {}).get("value", float("nan"))
        print(f"\ntarget int8 ONNX student >= 40x teacher PyTorch at c={top}: {int8_ratio:.1f}x, label agreement {agreement:.2%} "
              f"(>= 99%){' (random-weight student: agreement not meaningful)' if args.student is None else ''}; "
              f"model call alone, per CPU second: {calls['student_onnx_int8'] / calls['teacher']:.1f}x; served, server CPU "
              f"per text: {cpu_ratio:.1f}x")
    if "textcnn_onnx" in results:
        print(f"target TextCNN ONNX >= 1,000 texts/s at c={top}: {results['textcnn_onnx'][top]['texts_per_s']:.0f}")
    info["settings"] = {"seconds_per_level": seconds, "texts_per_request": args.texts_per_request, "load_run_seconds": load_seconds,
                        "teacher": str(args.teacher or "random 12x768" if not args.smoke else "smoke"),
                        "student": str(args.student or "random TinyBERT-4 shape" if not args.smoke else "smoke")}
    common.report("serve", args, figures, info)
    if load.get("errors"):
        sys.exit(f"the load run had {load['errors']} errors: {load['first_errors']}")


def _args():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="artifact directory (reused when fresh)")
    p.add_argument("--teacher", type=Path, default=None, help="a finetune artifact (default: a random-weight 12x768 classifier)")
    p.add_argument("--student", type=Path, default=None, help="a distill artifact (default: a random-weight TinyBERT-4 shape)")
    p.add_argument("--only", default="", help="comma-separated models to serve (default: all six)")
    p.add_argument("--texts-per-request", type=int, default=4, help="texts in each request")
    return common.parse(p)  # --smoke (common.parser): tiny models made in the run, levels 1 and 8 for 0.5 s


if __name__ == "__main__":
    main()
