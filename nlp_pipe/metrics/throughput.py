"""Inference speed and size of a model, measured the same way in stage reports and benchmarks: one model, or a
teacher and its student side by side (distill's report)."""

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


def compare(teacher: Any, student: Any, batch_size: int, seq_len: int) -> dict[str, Any]:
    """Parameters of both models and their measured fp32 inference speed (random ids, batch_size x seq_len, at most
    either model's positions) on this machine's CPU, and on its GPU when there is one."""
    t, s = param_count(teacher), param_count(student)
    seq = min(seq_len, teacher.config.max_position_embeddings, student.config.max_position_embeddings)
    sizes: dict[str, Any] = {"teacher_params": t, "student_params": s, "size_ratio": round(t / s, 2), "speed_seq_len": seq}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        speeds = {}
        for name, model in (("teacher", teacher), ("student", student)):
            model.to(device)
            speeds[name] = texts_per_second(model, batch_size, seq)
            model.to("cpu")
        sizes[f"{device}_teacher_texts_per_s"] = round(speeds["teacher"], 1)
        sizes[f"{device}_student_texts_per_s"] = round(speeds["student"], 1)
        sizes[f"{device}_speedup"] = round(speeds["student"] / speeds["teacher"], 2)
    return sizes

