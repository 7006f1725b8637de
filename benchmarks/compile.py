"""`torch.compile` (inductor, what `--compile` does to the Trainer's training steps) against eager, on CPU.

    python benchmarks/compile.py [--quick | --smoke] [--steps 20] [--out bench-compile.json]

Three workloads with random ids (no data needed), fp32, the same seed on both sides:
- finetune: a BertForSequenceClassification (4x256, vocabulary 21,128) training step, batch 16 x 64;
- distill: the prediction-layer Distiller (teacher 4x256, student 2x128 with heads), training step;
- predict: a BertForSequenceClassification forward under inference_mode, batch 32 x 128.
Figures: steps/s after compiling (median of the timed steps), compile seconds (the first step), and
the largest absolute difference of the losses (or logits) against eager: "identical" means 0.
--smoke compiles with the `eager` backend (dynamo's graph capture without inductor's code generation, which
alone takes minutes on a CPU): it checks the script, not inductor.
pretrain was measured before (docs/performance.md: 0.76-0.79x).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402


def bert(layers: int, hidden: int, labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=4 * hidden, max_position_embeddings=512, num_labels=labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def batches(n: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(100, 21128, (batch, seq), generator=g),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=g)} for _ in range(n)]


def train_run(model, data, compiled: bool, loss_of, backend: str = "inductor") -> tuple[list[float], float, list[float]]:
    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    run = torch.compile(model, backend=backend) if compiled else model
    losses, times = [], []
    for batch in data:
        t0 = time.perf_counter()
        loss = loss_of(run, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return losses, times[0], times[1:]


def predict_run(model, data, compiled: bool, backend: str = "inductor") -> tuple[list[torch.Tensor], float, list[float]]:
    model = copy.deepcopy(model).eval()
    run = torch.compile(model, backend=backend) if compiled else model
    outs, times = [], []
    with torch.inference_mode():
        for batch in data:
            t0 = time.perf_counter()
            outs.append(run(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits)
            times.append(time.perf_counter() - t0)
    return outs, times[0], times[1:]


def compare(name: str, eager, compiled, figures: dict) -> None:
    (a, _, eager_times), (b, first, compiled_times) = eager, compiled
    if isinstance(a[0], torch.Tensor):
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
    else:
        diff = max(abs(x - y) for x, y in zip(a, b))
    e, c = 1 / common.median(eager_times), 1 / common.median(compiled_times)
    figures[f"{name}_steps_per_s_compiled"] = common.figure(c, "steps/s", e)
    figures[f"{name}_compile_s"] = common.figure(first, "s (first step, compiling)")
    figures[f"{name}_max_abs_diff"] = common.figure(diff, "max |compiled - eager| (losses or logits)")
    print(f"{name}: eager {e:.2f}/s, compiled {c:.2f}/s ({c / e:.2f}x), compile {first:.0f} s, max diff {diff:.2e}",
          file=sys.stderr)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    args = common.parse(p)
    info = common.machine()
    backend = "eager" if args.smoke else "inductor"
    steps = common.pick(args, 3, 6, args.steps)
    layers, hidden = common.pick(args, (1, 32), (2, 64), (4, 256))
    figures: dict = {}

    def ce(m, b):
        return torch.nn.functional.cross_entropy(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                                 b["labels"])

    model = bert(layers, hidden)
    data = batches(steps, *common.pick(args, (2, 16), (16, 64), (16, 64)))
    compare("finetune", train_run(model, data, False, ce), train_run(model, data, True, ce, backend), figures)

    from nlp_pipe.models.tinybert import Distiller

    teacher, student = bert(layers, hidden), bert(2, hidden // 2)
    distiller = Distiller(teacher, student, mode="prediction")

    def kd_loss(m, b):
        return m(**b)["loss"]

    compare("distill", train_run(distiller, data, False, kd_loss), train_run(distiller, data, True, kd_loss, backend), figures)
    data = batches(steps, *common.pick(args, (2, 16), (32, 128), (32, 128)))
    compare("predict", predict_run(model, data, False), predict_run(model, data, True, backend), figures)
    common.report("compile", args, figures, info)


if __name__ == "__main__":
    main()
