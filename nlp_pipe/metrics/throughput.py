"""Inference speed and size of a model, measured the same way in stage reports and benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn


def texts_per_second(model: Any, batch_size: int = 32, seq_len: int = 128, vocab_size: int | None = None,
                     repeats: int = 5, threads: int | None = None) -> float:
    """Inference speed on random full-length ids: batch_size / median seconds per forward (fp32,
    inference_mode, one warm-up forward not counted). `threads` sets torch's intra-op threads meanwhile."""
    vocab_size = vocab_size or model.config.vocab_size
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    was_training, old_threads = model.training, torch.get_num_threads()
    model.eval()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(**batch)
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(**batch)
                seconds.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return batch_size / statistics.median(seconds)


def param_count(model: nn.Module) -> int:
    """Parameters of `model` (a quantised model's packed int8 weights are not parameters)."""
    return sum(p.numel() for p in model.parameters())
