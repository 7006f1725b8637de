"""benchmarks/gpu.py --quick runs on CPU without the corpus packages (the full check needs a GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_quick_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    # as on the GPU image: torch, transformers and accelerate, none of jieba, gensim, datasets, evaluate
    script = ("import runpy, sys\nfor m in ('jieba', 'gensim', 'datasets', 'evaluate', 'rjieba', 'sklearn'): sys.modules[m] = None\n"
              f"sys.argv = ['gpu.py', '--quick', '--out', {str(out)!r}]\n"
              f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    figures = result["figures"]
    assert figures["pretrain_tokens_per_s"]["value"] > 0 and figures["finetune_texts_per_s"]["value"] > 0
    # both speeds measured (which is faster is a timing, left to the benchmark: on a loaded machine either can win)
    assert figures["inference_texts_per_s_tinybert4"]["value"] > 0 and figures["inference_texts_per_s_tinybert4"]["baseline"] > 0
    assert result["machine"]["parity"]["ok"] and result["machine"]["parity"]["steps"] == 5
