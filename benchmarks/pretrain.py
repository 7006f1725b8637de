"""Pretraining throughput: the `pretrain` stage against the standard HuggingFace MLM recipe, same run.

    python benchmarks/pretrain.py [--data-dir ../shared/data] [--quick | --smoke] [--out bench-pretrain.json]

Both sides train BERT mini (4 layers x 256, Google's 21,128-token Chinese vocabulary), sequences of
128, batch 32, the same number of AdamW steps with the same warmup/linear schedule, on the same
corpus, MLM only. Headline: corpora/CLUECorpusSmall_sampled.txt, one document a line, where the
baseline's line-by-line examples are mostly full 128-token truncations (little padding: the
conservative case); the full run adds the sentence-a-line version of the same documents:

- stage: `pretrain` with its defaults (blocks packed to full length, whole-word masking, vocabulary
  projection at masked positions only, precision auto = bf16 autocast on CPUs with AMX), sentence_task
  none so both sides train the same objective.
- baseline: transformers' run_mlm_no_trainer.py with --line_by_line: BertForMaskedLM +
  DataCollatorForLanguageModeling (15%, dynamic padding to the longest line of the batch), fp32,
  as the recipe runs on CPU unless told otherwise.

Throughput = real (non-padding) tokens per second of training-step time, the median over windows
of 5 steps; repeats alternate stage and baseline so load changes on a shared machine hit both.
The full run adds same-precision pairs (both fp32, both bf16) to separate the levers.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCH, SEQ, WINDOW = 32, 128, 5


# (figure, corpus file, stage precision, baseline precision); the first is the headline
CASES = [
    ("train_tokens_per_s", "CLUECorpusSmall_sampled.txt", "auto", "fp32"),
    ("train_tokens_per_s_fp32", "CLUECorpusSmall_sampled.txt", "fp32", "fp32"),
    ("train_tokens_per_s_bf16", "CLUECorpusSmall_sampled.txt", "bf16", "bf16"),
    ("train_tokens_per_s_sentence_lines", "CLUECorpusSmall_bert_sampled.txt", "auto", "fp32"),
]


def main() -> None:
    args = common.parse(common.parser(__doc__.splitlines()[0]))
    vocab = common.data_path(args, "vocab", "google_zh_vocab.txt")
    info = common.machine()
    steps, repeats, cases = common.pick(args, (10, 1, CASES[:1]), (10, 1, CASES[:1]), (30, 2, CASES))
    batch = common.pick(args, 2, BATCH, BATCH)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    runs: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        work = Path(tmp)
        tokenizer_dir = _tokenizer(vocab, work)
        lines = {}
        for r in range(repeats):  # stage and baseline alternate, so load changes hit both
            for name, corpus_name, stage_precision, hf_precision in cases:
                corpus = common.data_path(args, "corpora", corpus_name)
                if corpus_name not in lines:
                    lines[corpus_name] = _line_by_line(corpus, tokenizer_dir)
                stage_key, hf_key = ("stage", corpus_name, stage_precision), ("hf", corpus_name, hf_precision)
                if len(runs.get(stage_key, [])) <= r:
                    runs.setdefault(stage_key, []).append(_stage(corpus, tokenizer_dir, work, stage_precision, steps, batch))
                if len(runs.get(hf_key, [])) <= r:
                    runs.setdefault(hf_key, []).append(_hf(lines[corpus_name], tokenizer_dir, hf_precision, steps, batch))
                print(f"repeat {r + 1}/{repeats} {name}: stage {runs[stage_key][-1]['tokens_per_s']:,.0f} tok/s, "
                      f"HF {runs[hf_key][-1]['tokens_per_s']:,.0f} tok/s, load {os.getloadavg()[0]:.2f}", flush=True)
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    info.update(steps=steps, repeats=repeats, batch=batch, seq_len=SEQ,
                runs={"/".join(key): values for key, values in runs.items()})
    common.report("pretrain", args, _figures(runs, cases), info)


def _figures(runs: dict, cases: list[tuple[str, str, str, str]]) -> dict[str, dict]:
    def med(key: tuple[str, str, str], field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    figures = {}
    for name, corpus, stage_precision, hf_precision in cases:
        stage, hf = ("stage", corpus, stage_precision), ("hf", corpus, hf_precision)
        figures[name] = common.figure(med(stage, "tokens_per_s"),
                                      f"real tokens/s, stage {stage_precision} vs HF {hf_precision}, {corpus}",
                                      med(hf, "tokens_per_s"))
        if name == cases[0][0]:
            figures["padding_fraction"] = common.figure(med(stage, "padding_fraction"),
                                                        f"padded share of positions, stage vs HF, {corpus}",
                                                        med(hf, "padding_fraction"))
        elif "sentence_lines" in name:
            figures["padding_fraction_sentence_lines"] = common.figure(
                med(stage, "padding_fraction"), f"padded share of positions, stage vs HF, {corpus}",
                med(hf, "padding_fraction"))
    return figures


def _tokenizer(vocab: Path, work: Path) -> Path:
    from transformers import BertTokenizer

    out = work / "tokenizer"
    BertTokenizer(vocab=str(vocab)).save_pretrained(str(out))  # not BertTokenizerFast(vocab_file=): docs/library-notes.md
    (out / "vocab.txt").write_bytes(vocab.read_bytes())
    return out


def _stage(corpus: Path, tokenizer_dir: Path, work: Path, precision: str, steps: int, batch: int) -> dict:
    """One stage run through the runner; the blocks cache is built by the first run and reused."""
    from nlp_pipe import runner

    config = {"size": "mini", "max_seq_len": SEQ, "batch_size": batch, "steps": steps, "sentence_task": "none",
              "precision": precision, "eval_docs": 0, "save_every": 0, "eval_every": 0, "log_every": WINDOW,
              "lr": 1e-4, "warmup": 0.1}
    plan = runner.plan("pretrain", config, {"corpus": [corpus], "tokenizer": tokenizer_dir}, work / "stage")
    runner.execute(plan, force=True)
    rows = [json.loads(line) for line in (work / "stage" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    windows = [r for r in rows if r["split"] == "train"][1:]  # the first window holds the warm-up steps
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in windows),
            "padding_fraction": statistics.median(r["padding_fraction"] for r in windows),
            "final_mlm_loss": rows[-1]["mlm_loss"]}


def _line_by_line(corpus: Path, tokenizer_dir: Path):
    """run_mlm's --line_by_line preprocessing: every non-empty line one example, truncated to 128."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").split("\n") if line.strip()]
    ds = datasets.Dataset.from_dict({"text": lines})
    return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=SEQ, return_special_tokens_mask=True),
                  batched=True, remove_columns=["text"], desc="line by line")


def _hf(data, tokenizer_dir: Path, precision: str, steps: int, batch: int) -> dict:
    """transformers/examples/pytorch/language-modeling/run_mlm_no_trainer.py, its training loop."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, get_scheduler

    # bf16 as the stage's Trainer applies it (autocast around the forward), not Accelerator(mixed_precision=...):
    # accelerate keeps that process-wide and this process also runs the stage (training/loop.py, Precision)
    accelerator = Accelerator(mixed_precision="no")
    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4,
                                       num_attention_heads=4, intermediate_size=1024))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    loader = DataLoader(data, shuffle=True, collate_fn=collator, batch_size=batch)
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [{"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(0.1 * steps), num_training_steps=steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    windows, tokens, slots, seconds = [], 0, 0, 0.0
    batches = iter(loader)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        batch = next(batches)
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        seconds += time.perf_counter() - start
        tokens += int(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
        if step % WINDOW == 0:
            windows.append((tokens / seconds, 1 - tokens / slots))
            tokens, slots, seconds = 0, 0, 0.0
    windows = windows[1:]  # as for the stage: the first window holds the warm-up steps
    return {"tokens_per_s": statistics.median(w[0] for w in windows),
            "padding_fraction": statistics.median(w[1] for w in windows), "final_mlm_loss": loss.item()}


if __name__ == "__main__":
    main()
