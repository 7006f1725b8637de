"""The GPU check: pretraining throughput and MFU, fine-tuning and inference speed, GPU-vs-CPU loss parity.

    python benchmarks/gpu.py [--out bench-gpu.json]            # one GPU: about 5 minutes on an H200
    python benchmarks/gpu.py --quick --out bench-gpu.json      # CPU, tiny shapes: a check that it all runs
    python benchmarks/gpu.py --smoke                           # the same as --quick

Figures (nothing is downloaded; models are random, data is synthetic token ids of full 128-token blocks):
- pretrain_tokens_per_s / pretrain_mfu: BERT-base 12x768 (vocabulary 21,128, sequence 128) through the
  project's own Trainer (accelerate, bf16 autocast, fused AdamW) with the masked-only MLM head
  (nlp_pipe.models.bert_pretraining), packed blocks (no padding), SDPA attention, dynamic 15% whole-token
  masking (nlp_pipe.data.masking); with and without torch.compile (`--compile`). MFU = model FLOPs per
  second / the GPU's dense bf16 peak (989 TFLOP/s for H100/H200 SXM; --peak-tflops for others). Model
  FLOPs per token = 6 x non-embedding parameters + 12 x layers x hidden x sequence (attention) + 6 x hidden
  x vocabulary x the masked share (the head runs at masked positions only).
- finetune_texts_per_s: a 12x768 BertForSequenceClassification trained through the Trainer, batch 32 x 128.
- inference_texts_per_s: TinyBERT-4 (4x312) vs 12x768 forward passes, batch 32 x 128, bf16, inference_mode.
- parity: the first 20 training losses of a tiny BERT (2x64) on the GPU against the same run on the CPU,
  fp32 with TF32 off; the largest relative difference must stay below 1e-3.

On a bare GPU machine that has torch but not this project's other packages, carry them as wheels
(docs/performance.md, "Running the GPU check").
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
VOCAB, SEQ = 21128, 128


def shapes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"base": (2, 64, 2), "tiny": (1, 32, 2), "batch": 4, "seq": 32, "steps": 4, "warmup": 1, "vocab": 512}
    return {"base": (12, 768, 12), "tiny": (4, 312, 12), "batch": 128, "seq": SEQ, "steps": 40, "warmup": 8, "vocab": VOCAB}


def bert_config(layers: int, hidden: int, heads: int, vocab: int, seq: int, intermediate: int | None = None) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max(512, seq))


class Blocks:
    """Synthetic packed pretraining blocks: `[CLS] ids [SEP]`, every token its own word."""

    def __init__(self, n: int, seq: int, vocab: int, seed: int = 0) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.ids = rng.integers(5, vocab, (n, seq)).tolist()
        for row in self.ids:
            row[0], row[-1] = 2, 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.ids[i]
        return {"input_ids": row, "token_type_ids": [0] * len(row), "word_labels": [-1] + [0] * (len(row) - 2) + [-1]}


def flops_per_token(layers: int, hidden: int, seq: int, vocab: int, params_nonembedding: int, masked: float) -> float:
    return 6 * params_nonembedding + 12 * layers * hidden * seq + 6 * hidden * vocab * masked


def pretrain(shape: dict[str, Any], compile_model: bool, device: str) -> dict[str, Any]:
    from nlp_pipe.data.masking import MaskingCollator
    from nlp_pipe.models import bert_pretraining as bert
    from nlp_pipe.training.options import TrainOptions
    from nlp_pipe.training.trainer import Trainer

    layers, hidden, heads = shape["base"]
    config = bert_config(layers, hidden, heads, shape["vocab"], shape["seq"])
    # two log windows: the second one's tokens/s leaves out the first steps (allocator warm-up, compilation)
    options = TrainOptions(steps=shape["steps"], batch_size=shape["batch"], lr=1e-4, warmup=0.0, log_every=shape["steps"] // 2,
                           eval_every=0, save_every=10**9, precision="bf16" if device == "cuda" else "fp32",
                           compile=compile_model, seed=0)
    collator = MaskingCollator(0, 4, shape["vocab"], (0, 1, 2, 3, 4), seed=0)
    data = Blocks(shape["batch"] * (shape["steps"] + 2), shape["seq"], shape["vocab"])
    with tempfile.TemporaryDirectory() as tmp, Trainer(options, Path(tmp) / "out", run_config={}, name="gpu-pretrain") as trainer:
        (Path(tmp) / "out").mkdir()
        model = bert.create(config, "none", "sdpa")
        wrapped = bert.MaskedOnlyPretraining(model)
        t0 = time.perf_counter()
        summary = trainer.fit(wrapped, data, collate=collator.collate, transform=collator.mask,
                              forward=lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                     token_type_ids=b["token_type_ids"], labels=b["labels"]))
        wall = time.perf_counter() - t0
        records = [json.loads(line) for line in (Path(tmp) / "out" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steady = [r for r in records if r.get("split") == "train"][-1]["tokens_per_s"]
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "decoder" not in n)
    fpt = flops_per_token(layers, hidden, shape["seq"], shape["vocab"], params, 0.15)
    return {"tokens_per_s": steady, "tokens_per_s_with_warmup": summary.tokens_per_s, "flops_per_token": fpt,
            "train_seconds": summary.train_seconds, "wall_s": wall,
            "steps": summary.steps, "precision": summary.precision}


def finetune(shape: dict[str, Any], device: str) -> float:
    import torch
    from transformers import BertForSequenceClassification

    from nlp_pipe.training.options import TrainOptions
    from nlp_pipe.training.trainer import Trainer

    layers, hidden, heads = shape["base"]
    config = bert_config(layers, hidden, heads, shape["vocab"], shape["seq"])
    config.num_labels = 2
    blocks = Blocks(32 * (shape["steps"] + 2), shape["seq"], shape["vocab"])
    options = TrainOptions(steps=shape["steps"], batch_size=32 if device == "cuda" else shape["batch"], lr=3e-5,
                           log_every=shape["steps"], eval_every=0, save_every=10**9,
                           precision="bf16" if device == "cuda" else "fp32", seed=0)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        ids = torch.tensor([r["input_ids"] for r in rows])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 1] % 2}

    with tempfile.TemporaryDirectory() as tmp, Trainer(options, Path(tmp) / "out", run_config={}, name="gpu-finetune") as trainer:
        (Path(tmp) / "out").mkdir()
        summary = trainer.fit(BertForSequenceClassification(config), blocks, collate=collate)
    return summary.steps * options.batch_size / max(summary.train_seconds, 1e-9)


def inference(shape: dict[str, Any], device: str) -> dict[str, float]:
    import torch
    from transformers import BertModel

    from nlp_pipe.metrics.throughput import texts_per_second

    out = {}
    for name, (layers, hidden, heads) in (("base", shape["base"]), ("tinybert4", shape["tiny"])):
        config = bert_config(layers, hidden, heads, shape["vocab"], shape["seq"], 1200 if name == "tinybert4" and hidden == 312 else None)
        model = BertModel(config).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out[name] = texts_per_second(model, 32 if device == "cuda" else shape["batch"], shape["seq"], repeats=5)
    return out


def parity(steps: int = 20) -> dict[str, Any]:
    """First losses of one tiny run on CPU and (when there is one) on the GPU, fp32, TF32 off."""
    import torch

    from nlp_pipe.data.masking import MaskingCollator
    from nlp_pipe.models import bert_pretraining as bert

    def losses(device: str) -> list[float]:
        torch.manual_seed(0)
        model = bert.MaskedOnlyPretraining(bert.create(bert_config(2, 64, 2, 512, 32), "none", "eager")).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        collator = MaskingCollator(0, 4, 512, (0, 1, 2, 3, 4), seed=0)
        data = Blocks(8 * steps, 32, 512)
        import numpy as np

        found = []
        for step in range(steps):
            batch = collator.mask(collator.collate([data[i] for i in range(8 * step, 8 * step + 8)]),
                                  np.random.default_rng(step))
            out = model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")})
            out["loss"].backward()
            optimizer.step()
            optimizer.zero_grad()
            found.append(float(out["loss"].detach()))
        return found

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = losses("cpu")
    other = losses("cuda") if torch.cuda.is_available() else cpu
    worst = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(cpu, other))
    return {"compared": "cuda vs cpu" if torch.cuda.is_available() else "cpu vs cpu (no GPU)", "steps": steps,
            "max_relative_difference": worst, "ok": worst < 1e-3, "cpu_losses": cpu[:5], "other_losses": other[:5]}


def peak_tflops(args) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    args = _args()
    import torch

    info = common.machine()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.quick:
        sys.exit("no GPU here: run with --quick for the CPU check, or on a GPU machine")
    info["gpu"] = torch.cuda.get_device_name() if device == "cuda" else None
    shape = shapes(args.quick)
    peak = peak_tflops(args)
    figures: dict[str, Any] = {}
    for compiled in (False, True):
        if compiled and (args.no_compile or args.quick):  # compiling costs minutes on a CPU: --quick leaves it out
            continue
        result = pretrain(shape, compiled, device)
        tag = "_compiled" if compiled else ""
        figures[f"pretrain_tokens_per_s{tag}"] = common.figure(result["tokens_per_s"], "tokens/s")
        if peak:
            mfu = result["tokens_per_s"] * result["flops_per_token"] / (peak * 1e12)
            figures[f"pretrain_mfu{tag}"] = common.figure(mfu, "share of peak", 0.40)
        print(f"pretrain{tag}: {result['tokens_per_s']:,.0f} tokens/s ({result['precision']})", file=sys.stderr)
    figures["finetune_texts_per_s"] = common.figure(finetune(shape, device), "texts/s")
    speeds = inference(shape, device)
    figures["inference_texts_per_s_tinybert4"] = common.figure(speeds["tinybert4"], "texts/s", speeds["base"])
    checked = parity(5 if args.quick else 20)
    figures["parity_max_relative_difference"] = common.figure(checked["max_relative_difference"], "relative", 1e-3)
    info["parity"] = checked
    info["peak_bf16_tflops"] = peak
    if device == "cpu":  # tiny shapes on a CPU: nothing to compare with a GPU's figures
        figures = {k: {**f, "smoke": "CPU, tiny shapes"} for k, f in figures.items()}
    common.report("gpu", args, figures, info)
    if not checked["ok"]:
        sys.exit(f"parity failed: losses differ by {checked['max_relative_difference']:.2e} (relative) between devices")


def _args():
    p = common.parser("GPU check: pretraining MFU, fine-tuning and inference speed, GPU/CPU loss parity")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, for MFU (default: known H100/H200/A100)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    return common.parse(p)


if __name__ == "__main__":
    main()
