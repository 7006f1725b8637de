"""Training records: metrics.jsonl that survives a kill, and the curves PNG drawn from it.

Used by the Trainer; kept apart so trainer.py reads top to bottom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_FIELDS = ("step", "epoch", "lr", "step_s", "tokens_per_s", "padding_fraction")  # a train record's, besides metrics (loop.flush)


class MetricsLog:
    """Append-only JSON lines, one record per log/eval event, written by the main process only.

    On resume, records after the checkpoint's step are dropped (they will be recomputed), so the
    file reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool, keep_until: int) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            # a fresh start (no checkpoint: keep_until 0) recomputes the step-0 evaluation too: keep nothing
            kept = [r for r in self.records() if r.get("step", 0) <= keep_until] if keep_until else []
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_rounded(record), ensure_ascii=False) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], png: Path, title: str) -> None:
    """Losses (train and eval) and accuracies against steps, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", lambda k: "loss" in k), ("accuracy", lambda k: "accuracy" in k)]
    panels = [(name, test) for name, test in panels if any(test(k) for r in records for k in r)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (name, test) in zip(axes[0], panels):
        for split in ("train", "eval"):
            rows = [r for r in records if r.get("split") == split]
            for key in sorted({k for r in rows for k in r if test(k)}):
                points = [(r["step"], r[key]) for r in rows if key in r]
                ax.plot(*zip(*points), marker="o" if split == "eval" else None, markersize=3, label=f"{split} {key}")
        ax.set_xlabel("step")
        ax.set_title(f"{title}: {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _rounded(record: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()}
