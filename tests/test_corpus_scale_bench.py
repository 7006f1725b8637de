"""benchmarks/corpus_scale.py --smoke runs on a corpus it makes itself and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_corpus_scale_smoke(tmp_path):
    """About 20 s on 2 busy cores: segment, plain tokenizers and the two pretrain data builds, one tiny size."""
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "corpus_scale.py"), "--smoke", "--pretrain-only",
                           "--sizes", "0.03", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))["figures"]
    for source in ("raw_text", "the_segment_artifact"):
        build = figures[f"pretrain_data_from_{source}_0.03mb"]
        assert build["value"] > 0 and build["baseline"] > 0 and build["peak_private_mb"] > 0
        assert 0 < build["disk_per_input_byte"] < 2  # the compact cache
    assert figures["segment_0.03mb"]["disk_per_input_byte"] > 0
