"""PNG plots for reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8)
    # label names may be Chinese, which default fonts lack: show class ids and list names in the report
    ax.set_xticks(range(n), [str(i) for i in range(n)])
    ax.set_yticks(range(n), [str(i) for i in range(n)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def histogram(values: Sequence[int], cut: int, path: Path, xlabel: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(60, max(10, len(set(values)))), color="#4c72b0")
    ax.axvline(cut, color="#c44e52", linestyle="--", label=f"cut = {cut}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("texts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
