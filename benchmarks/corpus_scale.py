"""Every corpus stage at two corpus sizes: MB/s per core, peak private memory, on-disk bytes per input byte.

    python benchmarks/corpus_scale.py [--sizes 20 200] [--quick] [--smoke] [--out bench-corpus-scale.json]

The corpus is corpora/CLUECorpusSmall_sampled.txt (one document a line) repeated until each size, every
copy varied (its documents in another order, each document's sentences rotated), so phrases and
vocabularies do not see one text many times over. `--quick` measures 5 and 20 MB. `--smoke` needs no
data: a tiny corpus made in the run from a few sentences, for the test that keeps this script working.

Each stage runs from the CLI in a subprocess (`nlp-pipe -q STAGE ...`, one worker process, so the
rate is per core): segment, vocab (word and bert), phrases (2 passes), word2vec (1 epoch), and the
pretrain data build (data/pretraining.py, the token cache pretrain builds before its first step) from
the raw text and from the segment artifact. Beside the build, plain `tokenizers` `encode_batch` of the
same lines with the same vocabulary (Google's Chinese BERT vocab.txt; the built-in one in smoke mode)
runs in the same way: `ratio` is the build's per-core rate over it. CPU time is user + system of the
subprocess and its children (for the build and the plain encoding: of the work alone, start-up and
imports left out; the CLI stages include their start-up of a few CPU seconds); peak private memory
is the largest sum of Private_Clean + Private_Dirty over the process tree (which counts the pages of
files a process memory-maps), peak anonymous memory that of Anonymous (what no file backs: the heap),
sampled every 0.2 s (/proc, Linux); on-disk bytes are the artifact's (or the cache entry's) files over the corpus's bytes.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

_SMOKE_SENTENCES = ("今天天气很好，我们一起去公园散步。", "这家酒店的服务非常周到，房间也很干净！",
                    "北京大学的研究人员发布了新的语言模型。", "价格有点贵，但是质量不错？",
                    "他说：“明天见。”然后就离开了。", "The iPhone 15 costs 5999 元，比去年便宜。")
_BUILD = """
import sys, json
from pathlib import Path
from transformers import BertTokenizer
from nlp_pipe.data import pretraining
from nlp_pipe.data.blocks import BlockSpec
from nlp_pipe.text.corpus import ReadOptions
from nlp_pipe.text.segmenter import SegmenterSpec
import os
tok = BertTokenizer(vocab=sys.argv[1])
t0 = sum(os.times()[:4])
spec = pretraining.BuildSpec(BlockSpec(128, "sop", 0, tok.cls_token_id, tok.sep_token_id), "auto", ReadOptions(),
                             SegmenterSpec(), 200, 4)
built = pretraining.build([Path(sys.argv[2])], "bench", tok, spec, Path(sys.argv[3]), num_proc=1)
print(json.dumps({"dir": str(built.cache_dir), "blocks": len(built.train), "work_cpu_s": sum(os.times()[:4]) - t0}))
"""
_PLAIN = """
import json, os, sys
from transformers import BertTokenizer
backend = BertTokenizer(vocab=sys.argv[1]).backend_tokenizer
t0 = sum(os.times()[:4])
with open(sys.argv[2], encoding="utf-8") as fh:
    lines = [line for line in fh.read().splitlines() if line.strip()]
for start in range(0, len(lines), 1000):
    for enc in backend.encode_batch(lines[start:start + 1000], add_special_tokens=False):
        enc.ids, enc.offsets
print(json.dumps({"work_cpu_s": sum(os.times()[:4]) - t0}))
"""


def make_corpus(source: list[str], size_mb: float, path: Path, seed: int = 0) -> Path:
    """`source` documents repeated to `size_mb`, each copy shuffled and its documents' sentences rotated."""
    rng = random.Random(seed)
    target, written = size_mb * 1e6, 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            docs = source[:]
            rng.shuffle(docs)
            for doc in docs:
                parts = doc.split("。")
                k = rng.randrange(len(parts))
                line = "。".join(parts[k:] + parts[:k]) + "\n"
                fh.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
    return path


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for p in frontier:
            try:
                with open(f"/proc/{p}/task/{p}/children", encoding="ascii") as fh:
                    children += [int(c) for c in fh.read().split()]
            except OSError:
                pass
        pids += children
        frontier = children
    return pids


def _memory(pids: list[int]) -> tuple[int, int]:
    """(private bytes: Private_Clean + Private_Dirty, which counts the pages of files it maps; anonymous bytes:
    the heap and other memory no file backs) of the processes."""
    private = anonymous = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        private += int(line.split()[1]) * 1024
                    elif line.startswith("Anonymous:"):
                        anonymous += int(line.split()[1]) * 1024
        except OSError:
            pass
    return private, anonymous


def measure(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """CPU seconds (the process tree's), wall seconds and peak private memory of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            private, anonymous = _memory(_tree(proc.pid))
            peak[:] = [max(peak[0], private), max(peak[1], anonymous)]
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(command[:6])} ...\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "peak_private_mb": round(peak[0] / 1e6, 1),
            "peak_anonymous_mb": round(peak[1] / 1e6, 1), "stdout": out}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def stage_rows(corpus: Path, vocab_txt: Path, work: Path, only: bool) -> dict[str, dict[str, Any]]:
    """Every stage's figures on `corpus` (fresh artifacts under `work`); `only`: segment and the pretrain data."""
    mb = corpus.stat().st_size / 1e6
    cli = [sys.executable, "-m", "nlp_pipe"]
    seg = work / "seg"
    runs: dict[str, tuple[list[str], Path | None]] = {
        "segment": ([*cli, "segment", "--corpus", str(corpus), "--out", str(seg), "--workers", "1"], seg),
        "vocab word": ([*cli, "vocab", "--corpus", str(seg), "--out", str(work / "vw")], work / "vw"),
        "vocab bert": ([*cli, "vocab", "--kind", "bert", "--corpus", str(seg), "--out", str(work / "vb")], work / "vb"),
        "phrases (2 passes)": ([*cli, "phrases", "--corpus", str(seg), "--passes", "2", "--out", str(work / "ph")],
                               work / "ph"),
        "word2vec (1 epoch)": ([*cli, "word2vec", "--corpus", str(seg), "--epochs", "1", "--workers", "1", "--out",
                                str(work / "w2v")], work / "w2v"),
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, (command, out) in runs.items():
        if name == "segment" or not only:
            rows[name] = _row(measure(command), mb, out)
    plain = measure([sys.executable, "-c", _PLAIN, str(vocab_txt), str(corpus)])
    rows["plain tokenizers encode_batch"] = _row(plain, mb, None)
    for name, source in (("pretrain data from raw text", corpus), ("pretrain data from the segment artifact", seg)):
        cache = work / f"cache-{name.split()[-2]}"
        result = measure([sys.executable, "-c", _BUILD, str(vocab_txt), str(source), str(cache)])
        rows[name] = _row(result, mb, Path(json.loads(result["stdout"].splitlines()[-1])["dir"]))
        plain_rate = rows["plain tokenizers encode_batch"]["mb_per_core_s"]
        rows[name]["ratio_to_plain_tokenizers"] = round(rows[name]["mb_per_core_s"] / plain_rate, 2)
    return rows


def _row(result: dict[str, Any], mb: float, out: Path | None) -> dict[str, Any]:
    row = {k: v for k, v in result.items() if k != "stdout"}
    last = result["stdout"].strip().splitlines()[-1:] or [""]
    work = json.loads(last[0]).get("work_cpu_s") if last[0].startswith("{") else None
    if work is not None:  # the build or the encoding alone, without the interpreter's start and imports
        row["work_cpu_s"] = round(work, 2)
    row["mb_per_core_s"] = round(mb / max(work or result["cpu_s"], 1e-3), 3)
    if out is not None:
        row["disk_per_input_byte"] = round(disk_bytes(out) / (mb * 1e6), 2)
    return row


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=None, help="corpus sizes in MB (default 20 200)")
    p.add_argument("--pretrain-only", action="store_true", help="segment and the pretrain data build only")
    args = common.parse(p)  # --smoke (common.parser): a tiny corpus made in the run, one size, seconds
    work = Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    try:
        if args.smoke:
            rng = random.Random(0)
            source = ["".join(rng.choice(_SMOKE_SENTENCES) for _ in range(rng.randint(2, 12))) for _ in range(300)]
            sizes = args.sizes or [0.03]
            vocab_txt = common.ROOT / "tests" / "fixtures" / "bert_zh" / "vocab.txt"
        else:
            source = [line for line in common.data_path(args, "corpora", "CLUECorpusSmall_sampled.txt")
                      .read_text(encoding="utf-8").splitlines() if line.strip()]
            sizes = args.sizes or ([5, 20] if args.quick else [20, 200])
            vocab_txt = common.data_path(args, "vocab", "google_zh_vocab.txt")
        figures: dict[str, dict[str, Any]] = {}
        table: dict[str, dict[str, Any]] = {}
        for size in sizes:
            folder = work / f"{size:g}mb"
            folder.mkdir()
            corpus = make_corpus(source, size, folder / "corpus.txt")
            table[f"{size:g} MB"] = rows = stage_rows(corpus, vocab_txt, folder, args.pretrain_only)
            for name, row in rows.items():
                key = f"{name.replace(' ', '_')}_{size:g}mb"
                baseline = table[f"{size:g} MB"]["plain tokenizers encode_batch"]["mb_per_core_s"] if "pretrain" in name else None
                figures[key] = {**common.figure(row["mb_per_core_s"], "MB/s per core", baseline), **row}
            shutil.rmtree(folder, ignore_errors=True)
        for size, rows in table.items():
            print(f"\n{size}: stage | MB/s per core | CPU s | wall s | peak private MB | peak anonymous MB | disk / input")
            for name, row in rows.items():
                print(f"  {name} | {row['mb_per_core_s']} | {row['cpu_s']} | {row['wall_s']} | {row['peak_private_mb']} | "
                      f"{row['peak_anonymous_mb']} | {row.get('disk_per_input_byte', '-')}")
        common.report("corpus_scale", args, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
