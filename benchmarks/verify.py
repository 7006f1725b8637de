"""Checking an unchanged input artifact before use, against hashing all of it.

    python benchmarks/verify.py [--quick | --smoke] [--gb 1] [--out bench-verify.json]

Builds an artifact of --gb gigabytes (a real `segment` artifact of the fixtures, padded with one
large file so its size is what a corpus or a vectors matrix would be) through the runner, then
times `check_files` (what every stage does to each input: a stat per file, the sha256 only when the
mtime moved) against `verify` (every file hashed, what `nlp-pipe inspect` does), median of 5 each.
The third figure is the first check after `touch` on the big file: its hash, once (then cached).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import runner  # noqa: E402
from nlp_pipe.core import manifest as manifests  # noqa: E402
from nlp_pipe.core.contract import Result  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reviews.tsv"


def main() -> None:
    args = _args()
    info = common.machine()
    size = int(common.pick(args, 2 / 1024, 0.05, args.gb) * (1 << 30))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        out = Path(tmp) / "seg"
        module = __import__("nlp_pipe.stages.segment", fromlist=["run"])
        original = module.run

        def padded(config, inputs, where):  # the stage's own files plus a big one, all listed in the manifest
            result: Result = original(config, inputs, where)
            with open(where / "big.bin", "wb") as fh:
                block = os.urandom(1 << 20)
                for _ in range(size >> 20):
                    fh.write(block)
            return result

        module.run = padded
        runner.execute(runner.plan("segment", {"workers": 1}, {"corpus": [FIXTURE]}, out))
        module.run = original
        manifest = manifests.read_manifest(out)
        check = [_timed(lambda: manifests.check_files(out, manifest)) for _ in range(5)]
        full = [_timed(lambda: manifests.verify(out)) for _ in range(3 if args.quick else 5)]
        os.utime(out / "big.bin")
        touched = _timed(lambda: manifests.check_files(out, manifest))
        again = _timed(lambda: manifests.check_files(out, manifest))
    gb = size / (1 << 30)
    print(f"{gb:.2f} GB artifact: check {common.median(check) * 1000:.2f} ms, full hash {common.median(full):.2f} s, "
          f"after touch {touched:.2f} s then {again * 1000:.2f} ms")
    figures = {
        "check_unchanged_s": common.figure(common.median(check), "s", common.median(full)),
        "check_after_touch_s": common.figure(touched, "s", common.median(full)),
        "check_after_touch_again_s": common.figure(again, "s", common.median(full)),
        "artifact_gb": common.figure(gb, "GB"),
    }
    common.report("verify", args, figures, info)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    problems = fn()
    elapsed = time.perf_counter() - t0
    if problems:
        raise SystemExit(f"the unchanged artifact did not verify: {problems}")
    return elapsed


def _args():
    p = common.parser("Verifying an unchanged artifact (stat + cached hashes) vs hashing every file")
    p.add_argument("--gb", type=float, default=1.0, help="artifact size in GB (default 1)")
    p.add_argument("--work", type=Path, default=None, help="directory for the temporary artifact (default: the system's)")
    return common.parse(p)


if __name__ == "__main__":
    main()
