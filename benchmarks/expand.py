"""Vocabulary expansion on a domain corpus: fewer tokens per text, and which start for the new rows
continues pretraining better (init mean-chars against init random).

    python benchmarks/expand.py [--quick | --smoke] [--out bench-expand.json] [--category 酒店] [--checkpoint DIR]

Domain: one category of online_shopping_10_cats (default 酒店, hotel reviews), shuffled with a fixed
seed and split into train texts and held-out texts. Base checkpoint: --checkpoint (any local BERT
directory, e.g. bert-base-chinese), else a tiny BertForMaskedLM (2 layers x 128, the 21,128-token
Google Chinese vocab) trained here with a plain MLM loop on the train texts in character tokens: a
stand-in for a downloaded BERT that already reads such text. (The same tiny model trained for a few
hundred steps on CLUECorpusSmall predicts little more than character frequencies; new rows cannot
borrow context from it, and every init starts alike. `nlp-pipe pretrain` is not used for the base,
so the figures measure `expand` alone.) Then, through the runner as `nlp-pipe` runs them: `segment`
on the train texts and `expand` twice (init mean-chars and random, the same words). Each expanded
model continues MLM training on the train texts (same blocks, masks and order); held-out MLM loss
is measured on fixed masks at step 0 and every quarter, split into new-word and old-token targets.
Step 0 is also measured for mean-chars rows with the plain mean bias (bias_shift 0), for reference.

Figures: tokens_per_text on the held-out texts (value: expanded tokenizer, baseline: original);
heldout_mlm_loss_step0 and heldout_mlm_loss_final (value: mean-chars, baseline: random).
"""

from __future__ import annotations

import csv
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import runner  # noqa: E402

SEQ = 128
SIZES = {  # smoke / quick / full
    "texts": (300, 3000, 10000), "heldout": (40, 300, 1000), "base_steps": (4, 100, 400), "steps": (4, 20, 200),
    "batch": (4, 16, 32), "min_freq": (3, 10, 20),
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--category", default="酒店", help="online_shopping_10_cats category (default: 酒店, hotel reviews)")
    p.add_argument("--checkpoint", type=Path, help="start from this BERT directory instead of training a tiny one")
    p.add_argument("--max-words", type=int, default=1000, help="expand's max_words")
    args = common.parse(p)
    size = {k: common.pick(args, *v) for k, v in SIZES.items()}
    info = common.machine()
    t_start = time.perf_counter()
    train, heldout = domain_texts(args, size)
    with tempfile.TemporaryDirectory(prefix="bench-expand-") as tmp_name:
        tmp = Path(tmp_name)
        base = args.checkpoint or train_base(args, tmp / "base", train, size)
        (tmp / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
        seg = tmp / "segment"
        runner.execute(runner.plan("segment", {}, {"corpus": [str(tmp / "train.txt")]}, seg))
        outs = {}
        for init in ("mean-chars", "random"):
            outs[init] = tmp / f"expand-{init}"
            config = {"init": init, "min_freq": size["min_freq"], "max_words": args.max_words}
            seconds, others, manifest = common.timed(lambda: runner.execute(runner.plan(
                "expand", config, {"checkpoint": str(base), "corpus": [str(seg)]}, outs[init])))
            print(f"expand ({init}): {manifest['metrics']['new_words']} new words in {seconds:.1f} s{_busy(others)}",
                  file=sys.stderr)
        figures, tables = measure(base, outs, train, heldout, size)
        figures["expand_new_words"] = common.figure(manifest["metrics"]["new_words"], "words")
        words = [line.split("\t")[0] for line in (outs["mean-chars"] / "words.tsv").read_text(encoding="utf-8").splitlines()[1:31]]
    print("\n".join(tables + [f"first new words: {' '.join(words)}",
                              f"base checkpoint: {args.checkpoint or 'tiny BertForMaskedLM trained here (plain loop)'}",
                              f"wall time: {time.perf_counter() - t_start:.0f} s"]))
    common.report("expand", args, figures, info)


def domain_texts(args, size: dict) -> tuple[list[str], list[str]]:
    path = common.data_path(args, "online_shopping_10_cats", "online_shopping_10_cats.csv")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        texts = [r["review"].strip().lstrip("\ufeff") for r in csv.DictReader(fh) if r["cat"] == args.category]
    texts = [t for t in texts if t]
    if not texts:
        sys.exit(f"no reviews of category {args.category!r} in {path}")
    random.Random(0).shuffle(texts)
    texts = texts[: size["texts"]]
    n_heldout = min(size["heldout"], len(texts) // 5)
    return texts[n_heldout:], texts[:n_heldout]


def train_base(args, out: Path, texts: list[str], size: dict) -> Path:
    """A tiny BertForMaskedLM on the Google Chinese vocab, trained briefly on `texts` in character tokens."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    vocab = common.data_path(args, "vocab", "google_zh_vocab.txt")
    tokenizer = BertTokenizer(vocab=str(vocab))
    blocks = pack(tokenizer, texts)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=512, max_position_embeddings=SEQ))
    seconds, others, losses = common.timed(lambda: train(model, blocks, tokenizer, size["base_steps"], size["batch"],
                                                         lr=2e-3, seed=0))
    print(f"base: {size['base_steps']} steps in {seconds:.0f} s{_busy(others)}, "
          f"train loss {losses[0]:.2f} -> {sum(losses[-10:]) / len(losses[-10:]):.2f}", file=sys.stderr)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "vocab.txt").write_bytes(vocab.read_bytes())
    return out


def pack(tokenizer, texts: list[str]) -> torch.Tensor:
    """[CLS] + SEQ-2 tokens + [SEP] blocks of texts joined by [SEP] (the partial last block is dropped)."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.sep_token_id]
    body = SEQ - 2
    rows = [[tokenizer.cls_token_id] + stream[i:i + body] + [tokenizer.sep_token_id]
            for i in range(0, len(stream) - body + 1, body)]
    return torch.tensor(rows)


def mask(blocks: torch.Tensor, tokenizer, generator: torch.Generator, vocab_size: int,
         replace: tuple[float, float] = (0.8, 0.1)) -> tuple[torch.Tensor, torch.Tensor]:
    """15% of the non-special positions to predict: replace[0] [MASK], replace[1] random token, rest kept."""
    special = torch.isin(blocks, torch.tensor(tokenizer.all_special_ids))
    chosen = (torch.rand(blocks.shape, generator=generator) < 0.15) & ~special
    labels = torch.where(chosen, blocks, torch.full_like(blocks, -100))
    draw = torch.rand(blocks.shape, generator=generator)
    inputs = blocks.clone()
    inputs[chosen & (draw < replace[0])] = tokenizer.mask_token_id
    randomised = chosen & (draw >= replace[0]) & (draw < replace[0] + replace[1])
    inputs[randomised] = torch.randint(len(tokenizer.all_special_ids), vocab_size, blocks.shape, generator=generator)[randomised]
    return inputs, labels


def masked_logits(model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The vocabulary projection at masked positions only (the 21k-way projection dominates otherwise)."""
    hidden = model.bert(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
    return model.cls.predictions(hidden[labels != -100])


def train(model, blocks: torch.Tensor, tokenizer, steps: int, batch: int, lr: float, seed: int,
          every: int = 0, evaluate=None) -> list[float]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=generator)
    losses = []
    for step in range(steps):
        take = order[torch.arange(step * batch, (step + 1) * batch) % len(blocks)]
        inputs, labels = mask(blocks[take], tokenizer, generator, model.config.vocab_size)
        loss = F.cross_entropy(masked_logits(model, inputs, labels), labels[labels != -100])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if evaluate and every and (step + 1) % every == 0:
            evaluate(step + 1)
            model.train()
    return losses


@torch.no_grad()
def heldout_loss(model, inputs: torch.Tensor, labels: torch.Tensor, old_size: int) -> dict[str, float]:
    """Mean cross-entropy over the fixed masked positions; also split into new-word and old targets."""
    model.eval()
    losses, targets = [], []
    for i in range(0, len(inputs), 64):
        lab = labels[i:i + 64]
        logits = masked_logits(model, inputs[i:i + 64], lab)
        losses.append(F.cross_entropy(logits.float(), lab[lab != -100], reduction="none"))
        targets.append(lab[lab != -100])
    loss, target = torch.cat(losses), torch.cat(targets)
    new = target >= old_size
    return {"loss": loss.mean().item(), "new_targets": loss[new].mean().item() if new.any() else math.nan,
            "old_targets": loss[~new].mean().item(), "share_new": new.float().mean().item()}


def measure(base: Path, outs: dict[str, Path], train_texts: list[str], heldout: list[str], size: dict):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    old_tok = AutoTokenizer.from_pretrained(base)
    new_tok = AutoTokenizer.from_pretrained(outs["mean-chars"])
    assert new_tok.get_vocab() == AutoTokenizer.from_pretrained(outs["random"]).get_vocab()
    before = sum(map(len, old_tok(heldout, add_special_tokens=False)["input_ids"])) / len(heldout)
    after = sum(map(len, new_tok(heldout, add_special_tokens=False)["input_ids"])) / len(heldout)
    figures = {"tokens_per_text": common.figure(round(after, 2), "tokens/text", round(before, 2))}
    train_blocks = pack(new_tok, train_texts)
    eval_inputs, eval_labels = mask(pack(new_tok, heldout), new_tok, torch.Generator().manual_seed(1234),
                                    len(new_tok), replace=(1.0, 0.0))
    old_size, every = len(old_tok), max(1, size["steps"] // 4)
    curves: dict[str, dict[int, dict[str, float]]] = {}
    plain = AutoModelForMaskedLM.from_pretrained(outs["mean-chars"])
    with torch.no_grad():  # bias_shift 0: each new bias back to the plain mean of its pieces' biases
        plain.cls.predictions.bias[old_size:] += torch.tensor([len(p.split()) - 1.0 for p in _pieces(outs["mean-chars"])])
    plain_step0 = heldout_loss(plain, eval_inputs, eval_labels, old_size)
    for init, out in outs.items():
        model = AutoModelForMaskedLM.from_pretrained(out)
        curve = curves.setdefault(init, {})

        def evaluate(step: int, model=model, curve=curve) -> None:
            curve[step] = heldout_loss(model, eval_inputs, eval_labels, old_size)

        evaluate(0)
        seconds, others, _ = common.timed(lambda: train(model, train_blocks, new_tok, size["steps"], size["batch"], lr=3e-4,
                                                        seed=1, every=every, evaluate=evaluate))
        print(f"continued pretraining ({init}): {size['steps']} steps in {seconds:.0f} s{_busy(others)}", file=sys.stderr)
    final = max(curves["random"])
    for key, step in (("heldout_mlm_loss_step0", 0), ("heldout_mlm_loss_final", final)):
        figures[key] = common.figure(round(curves["mean-chars"][step]["loss"], 4), "nats", round(curves["random"][step]["loss"], 4))
    tables = [f"\ntokens per held-out text ({len(heldout)} texts): {before:.2f} -> {after:.2f} ({1 - after / before:.1%} fewer); "
              f"{len(new_tok) - old_size} new words; {len(train_blocks)} train blocks, {len(eval_inputs)} held-out blocks, "
              f"{int((eval_labels != -100).sum())} masked held-out targets ({curves['random'][0]['share_new']:.1%} new words)",
              "", "held-out MLM loss (nats): all targets / new-word targets / old-token targets",
              "step   " + "".join(f"{init:>28s}" for init in curves)]
    for step in sorted(curves["random"]):
        cells = "".join(f"{c[step]['loss']:>10.3f}{c[step]['new_targets']:>9.3f}{c[step]['old_targets']:>9.3f}" for c in curves.values())
        tables.append(f"{step:<7d}{cells}")
    tables.append(f"step 0, mean-chars with the plain mean bias (bias_shift 0): {plain_step0['loss']:.3f} "
                  f"{plain_step0['new_targets']:.3f} {plain_step0['old_targets']:.3f}")
    return figures, tables


def _busy(others: float | None) -> str:
    return f" ({others:.1f} cores busy with other processes)" if others else ""


def _pieces(artifact: Path) -> list[str]:
    """The `pieces` column of an expand artifact's words.tsv (the old ids each new word replaces)."""
    return [line.split("\t")[6] for line in (artifact / "words.tsv").read_text(encoding="utf-8").splitlines()[1:]]


if __name__ == "__main__":
    main()
