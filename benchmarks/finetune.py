"""Fine-tuned BERT (the checkpoint pipelines/pretrain_bert.yaml pretrains) against TextCNN on ChnSentiCorp.

    python benchmarks/finetune.py [--quick] [--out bench-finetune.json] [--checkpoint DIR] [--work DIR]

Without --checkpoint, the BERT-mini of pipelines/pretrain_bert.yaml is built first through that pipeline
(300 steps; 10 with --quick) under runs/bench/{full,quick}/pretrain_bert, and reused while fresh.

The checkpoint is pretrained from scratch on the CLUE sample and Douban book reviews, text that holds no
ChnSentiCorp dev/test rows (leakage note in the data README); its size, pretraining budget and corpora
are recorded, and the corpora are scanned for dev/test texts before anything is trained. Both
classifiers train in the same run on the same split through the stages (segment, word2vec, textcnn,
finetune) into --work, so a rerun reuses fresh artifacts: TextCNN in static mode on word vectors made
by benchmarks/textcnn.py's vectors() (no ChnSentiCorp dev/test text either), BERT by the finetune
stage with FINETUNE below. Both decide binary labels with their dev F1-optimal threshold.
Figures (value = BERT, baseline = TextCNN): test_accuracy, test_macro_f1, test_accuracy_unseen (the test
rows whose text is not in train: the 869 of test_unseen.tsv), predict_texts_per_s
(TextClassifier.load(dir).predict over the test texts, batch 64, one warm-up, median of 3; TextCNN's
time includes jieba segmentation, BERT's the tokenizer). Set OMP_NUM_THREADS for predict figures that
compare across runs: without it they run on whatever thread count a training stage's probe left in this
process (1 on a loaded machine), or torch's default when every artifact was fresh; the table says which.

--quick: 1,000 train rows (the 345 whose text is also a test text, so the unseen rows are exactly those of
test_unseen.tsv as with the full split, plus a seeded sample of the rest) / 300 dev rows (seeded sample) /
the full 1,200-row test set, written to --work/data; one fine-tuning epoch at 128 tokens (too few steps
for BERT to learn much: a check that everything runs, not a result), 3 word2vec epochs, 4 TextCNN
epochs, predict speed over the first 300 test texts: about 2 minutes on 2 idle cores once the checkpoint
exists (building the 10-step checkpoint: about 1 minute more).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import textcnn as textcnn_bench  # noqa: E402  (stage() and vectors(): the same word vectors as that benchmark)

import common  # noqa: E402
from nlp_pipe import TextClassifier  # noqa: E402
from nlp_pipe.core import manifest as manifests

QUICK_ROWS = {"train": 1000, "dev": 300, "test": None}  # None: every row (accuracies on the full test set)
QUICK_PREDICT_TEXTS = 300  # --quick: predict speed over the first 300 test texts
# Chosen by dev accuracy for pretrain_bert.yaml's BERT-mini (4x256, 300 steps) on the full train split,
# 4 epochs, one evaluation an epoch (dev accuracy after epochs 1-4; best dev with the F1 threshold):
#   lr 1e-4, layer_decay 0.9: 0.708 0.876 0.873 0.881 (0.8825)
#   lr 3e-4, layer_decay 0.9: 0.856 0.890 0.908 0.906 (0.9083)   <- chosen
#   lr 3e-4, layer_decay 1.0: 0.798 0.888 0.896 0.897 (0.9008)
#   lr 6e-4, layer_decay 0.9: 0.770 0.893 0.903 -     (0.9058)
# so a lightly pretrained mini model wants a lr well above BERT-base's 2e-5..5e-5; layer-wise decay
# (embeddings at 0.9^5 of it) keeps the lower pretrained layers nearer their weights; batch 32 as in
# BERT's recipe; max_seq_len 0 = the 95th percentile of training lengths (248 tokens); early stopping
# on dev macro-F1 keeps the best epoch's weights. About 3 minutes an epoch on one thread.
FINETUNE = {"epochs": 4, "batch_size": 32, "lr": 3e-4, "warmup": 0.1, "layer_decay": 0.9, "max_seq_len": 0,
            "patience": 2, "monitor": "macro_f1", "seed": 42}
FINETUNE_QUICK = {**FINETUNE, "epochs": 1, "max_seq_len": 128}  # 128 tokens: distill's length, under half the time
FINETUNE_SMOKE = {**FINETUNE_QUICK, "max_seq_len": 32, "batch_size": 8}
TEXTCNN: dict = {}  # the stage's defaults, as benchmarks/textcnn.py runs them, so the two benchmarks agree
TEXTCNN_QUICK = {"epochs": 4}
TEXTCNN_SMOKE = {"epochs": 1}
# BERT figures of a checkpoint pretrained fewer steps than this are smoke figures (--quick's has 10 steps:
# 0.67 test accuracy against TextCNN's 0.85 measures the budget, not the stage); the full run's has 300.
MEANINGFUL_PRETRAIN_STEPS = 100


def main() -> None:
    args = _args()
    info = common.machine()
    args.checkpoint = args.checkpoint or common.pretrained(args)
    manifest = manifests.read_manifest(args.checkpoint)
    if manifest is None and not (args.checkpoint / "config.json").exists():
        sys.exit(f"{args.checkpoint}: neither an artifact nor a model directory; pass a pretrain artifact or HF model directory")
    ckpt = checkpoint_info(args.checkpoint, manifest or {})  # no manifest: a downloaded model, budget and corpora unknown
    splits = data_files(args)
    ckpt["leak_check"] = leak_check(ckpt["corpora"], [splits["dev"], splits["test"]]) if ckpt["corpora"] else \
        {"checked": 0, "found": 0, "examples": [], "note": "pretraining corpora unknown (no manifest): not checked"}
    ckpt["unk_rate_test"] = unk_rate(args.checkpoint, splits["test"])
    print(f"checkpoint {args.checkpoint}: {ckpt['layers']}x{ckpt['hidden']}, {ckpt['parameters']:,} parameters, "
          f"vocab {ckpt['vocab_size']:,}; pretrained {ckpt['pretraining'].get('steps')} steps x "
          f"{ckpt['pretraining'].get('batch')} sequences = {ckpt['pretraining'].get('tokens', 0):,.0f} tokens "
          f"on {', '.join(Path(c).name for c in ckpt['corpora'])}; dev/test texts found in it: "
          f"{ckpt['leak_check']['found']} of {ckpt['leak_check']['checked']}; [UNK] share of test tokens "
          f"{ckpt['unk_rate_test']:.2%}", file=sys.stderr)
    if ckpt["leak_check"]["found"] > 0.01 * ckpt["leak_check"]["checked"]:
        sys.exit(f"{args.checkpoint} was pretrained on text holding ChnSentiCorp dev/test rows "
                 f"({ckpt['leak_check']['found']} found, e.g. {ckpt['leak_check']['examples'][:1]}): its scores would leak")

    work = work_dir(args)
    data = segments(args, splits)
    vec = textcnn_bench.vectors(args, work)

    results: dict[str, dict[str, Any]] = {}
    unseen_expected = _rows(common.data_path(args, "chnsenticorp", "test_unseen.tsv"))
    runs = {"textcnn": ("textcnn", common.pick(args, TEXTCNN_SMOKE, TEXTCNN_QUICK, TEXTCNN), {**data, "vectors": str(vec)}),
            "bert": ("finetune", finetune_config(args), {"checkpoint": str(args.checkpoint), **data})}
    for kind, (stage_name, config, inputs) in runs.items():
        out = work / stage_name
        elapsed, others, m = common.timed(lambda: textcnn_bench.stage(stage_name, config, inputs, out))
        metrics = m["metrics"]
        results[kind] = {"dir": out, "config": config, "train_s": m["wall_time_s"], "ran_now_s": round(elapsed, 1),
                         "other_processes_cores": None if others is None else round(others, 2),
                         **{k: metrics[k] for k in ("dev_accuracy", "dev_macro_f1", "test_accuracy", "test_macro_f1")}}
        unseen = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("test_unseen")
        if unseen:  # test rows whose text is not in train (ChnSentiCorp repeats 331 of its 1,200 test texts)
            results[kind].update({"test_unseen_accuracy": unseen["accuracy"], "test_unseen_rows": unseen["rows"]})
            if unseen["rows"] != unseen_expected:
                print(f"note: {unseen['rows']} test rows are unseen in this train split, test_unseen.tsv has {unseen_expected}",
                      file=sys.stderr)
        if kind == "bert":
            results[kind].update({k: metrics.get(k) for k in ("steps", "best_step", "max_seq_len", "truncated", "tokens_per_s")})
            argmax = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("test_argmax")
            if argmax:
                results[kind]["test_argmax"] = {k: argmax[k] for k in ("accuracy", "macro_f1")}
        print(f"{kind:8s} dev acc {metrics['dev_accuracy']:.4f}  test acc {metrics['test_accuracy']:.4f}  "
              f"test macro-F1 {metrics['test_macro_f1']:.4f}  train {m['wall_time_s']:.0f}s  (ran {elapsed:.0f}s now)")

    texts = [line.rstrip("\n").split("\t", 1)[1] for line in open(splits["test"], encoding="utf-8")][1:]
    texts = texts[:QUICK_PREDICT_TEXTS] if args.quick else texts
    speeds: dict[str, list[tuple[float, float | None]]] = {}
    for kind in ("textcnn", "bert"):
        clf = TextClassifier.load(results[kind]["dir"])
        clf.predict(texts[:64], batch_size=64)  # warm-up: jieba's dictionary, first-call allocations
        speeds[kind] = []
        for _ in range(3):
            elapsed, others, _ = common.timed(lambda: clf.predict(texts, batch_size=64))
            speeds[kind].append((len(texts) / elapsed, others))
        results[kind]["predict_texts_per_s"] = common.median([s for s, _ in speeds[kind]])
    import torch

    threads = torch.get_num_threads()
    _print_table(results, threads, len(texts))
    info = {**info, "checkpoint": ckpt, "torch_threads": threads, "test_texts": len(texts),
            "rows": {s: _rows(p) for s, p in splits.items()},
            "results": {k: {kk: (str(vv) if isinstance(vv, Path) else vv) for kk, vv in r.items()} for k, r in results.items()}}
    common.note_quiet_ratio(info, speeds["bert"], speeds["textcnn"])
    bert, cnn = results["bert"], results["textcnn"]
    if bert["test_accuracy"] < cnn["test_accuracy"]:
        print(f"BERT ({ckpt['layers']}x{ckpt['hidden']}, {ckpt['pretraining'].get('steps')} pretraining steps) stays below "
              f"TextCNN on test accuracy ({bert['test_accuracy']:.4f} < {cnn['test_accuracy']:.4f}): a small model with "
              "little pretraining; more pretraining steps, a larger model or a published Chinese BERT are the levers.")
    small = too_small(ckpt)
    figures = {
        "test_accuracy": common.figure(bert["test_accuracy"], "accuracy", cnn["test_accuracy"], small),
        "test_macro_f1": common.figure(bert["test_macro_f1"], "macro-F1", cnn["test_macro_f1"], small),
        **({"test_accuracy_unseen": common.figure(bert["test_unseen_accuracy"], "accuracy", cnn["test_unseen_accuracy"], small)}
           if "test_unseen_accuracy" in bert and "test_unseen_accuracy" in cnn else {}),
        "predict_texts_per_s": common.figure(bert["predict_texts_per_s"], "texts/s", cnn["predict_texts_per_s"]),
    }
    common.report("finetune", args, figures, info)


def too_small(ckpt: dict[str, Any]) -> str | None:
    """Why the checkpoint's accuracy figures mean nothing (pretrained too few steps), or None."""
    steps = ckpt["pretraining"].get("steps")
    if steps is not None and steps < MEANINGFUL_PRETRAIN_STEPS:
        return f"BERT pretrained {steps} steps (< {MEANINGFUL_PRETRAIN_STEPS})"
    return None


def finetune_config(args) -> dict[str, Any]:
    return common.pick(args, FINETUNE_SMOKE, FINETUNE_QUICK, FINETUNE)


def checkpoint_info(directory: Path, manifest: dict) -> dict[str, Any]:
    """Size from config.json and the weights, budget from the manifest and pretraining.json, corpora
    from the manifest's inputs (an upstream artifact, e.g. a segment, stands for its own inputs)."""
    from safetensors import safe_open

    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    shapes = {}
    for weights in directory.glob("*.safetensors"):
        with safe_open(str(weights), "pt") as fh:
            shapes.update({k: fh.get_slice(k).get_shape() for k in fh.keys()})
    if not shapes:  # a checkpoint without safetensors weights
        from transformers import AutoModel

        shapes = {k: list(v.shape) for k, v in AutoModel.from_pretrained(str(directory)).state_dict().items()}
    # the encoder (embeddings, layers, pooler) that fine-tuning keeps; pretraining heads ("cls.") are dropped
    params = sum(_prod(s) for k, s in shapes.items() if not k.startswith("cls."))
    cfg, metrics = manifest.get("config", {}), manifest.get("metrics", {})
    settings_path = directory / "pretraining.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.exists() else {}
    pretraining: dict[str, Any] = {"stage": manifest.get("stage"), "steps": metrics.get("steps")}
    if manifest.get("stage") == "pretrain":
        batch = cfg.get("batch_size", 0) * cfg.get("grad_accum", 1) * metrics.get("processes", 1)
        sequences = (metrics.get("steps") or 0) * batch
        pretraining.update({
            "batch": batch, "max_seq_len": cfg.get("max_seq_len"), "sequences": sequences,
            "tokens": round(sequences * cfg.get("max_seq_len", 0) * (1 - metrics.get("padding_fraction", 0.0))),
            "passes_over_data": round(sequences / metrics["blocks"], 2) if metrics.get("blocks") else None,
            "corpus_block_tokens": metrics.get("block_tokens"), "documents": metrics.get("documents"),
            "lr": cfg.get("lr"), "objectives": settings.get("objectives"),
            "wall_time_s": manifest.get("wall_time_s"), "device": manifest.get("device"),
            "final_eval": {k: v for k, v in metrics.items() if k.startswith("eval_")}})
    return {"dir": str(directory), "model_type": config.get("model_type"), "parameters": params,
            "layers": config.get("num_hidden_layers"), "hidden": config.get("hidden_size"),
            "heads": config.get("num_attention_heads"), "vocab_size": config.get("vocab_size"),
            "max_position_embeddings": config.get("max_position_embeddings"),
            "pretraining": pretraining, "corpora": sorted(_sources([str(directory)], top=True)) if manifest else []}


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _sources(paths: list[str], top: bool = False) -> set[str]:
    """The text files behind `paths`: a file as it is, an artifact by its corpus inputs and those of the
    checkpoint it started from (`init`, `checkpoint`), a directory without manifest as it is."""
    found: set[str] = set()
    for p in paths:
        upstream = manifests.read_manifest(p) if Path(p).is_dir() else None
        if upstream is None:
            if not top:
                found.add(p)
            continue
        inputs = upstream.get("inputs", {})
        found |= _sources([q for key in ("corpus", "init", "checkpoint") for q in inputs.get(key, {}).get("paths", [])])
    return found


def leak_check(corpora: list[str], labelled: list[Path], window: int = 20) -> dict[str, Any]:
    """How many dev/test texts (of at least `window` characters) occur in the pretraining corpora:
    a `window`-character piece from each text's middle, searched with whitespace removed."""
    haystack = "".join("".join(Path(c).read_text(encoding="utf-8", errors="replace").split())
                       for c in corpora if Path(c).is_file())
    checked, examples = 0, []
    for path in labelled:
        for line in open(path, encoding="utf-8").readlines()[1:]:
            text = "".join(line.rstrip("\n").split("\t", 1)[-1].split())
            if len(text) < window:
                continue
            checked += 1
            start = (len(text) - window) // 2
            if text[start:start + window] in haystack:
                examples.append(text[:60])
    return {"checked": checked, "found": len(examples), "examples": examples[:5], "window_chars": window,
            "corpus_chars": len(haystack)}


def unk_rate(checkpoint: Path, path: Path) -> float:
    """The share of [UNK] among the checkpoint tokenizer's tokens of the labelled texts in `path`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    texts = [line.rstrip("\n").split("\t", 1)[-1] for line in open(path, encoding="utf-8")][1:]
    ids = [i for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in row]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))


def data_files(args) -> dict[str, Path]:
    """The ChnSentiCorp TSVs; with --quick QUICK_ROWS of each (test: all of it), written under --work/data:
    train keeps every row whose text is also a test text (so the test rows unseen in it are those of
    test_unseen.tsv, as with the full train split) and fills up with a seeded sample of the rest."""
    full = {s: common.data_path(args, "chnsenticorp", f"{s}.tsv") for s in ("train", "dev", "test")}
    if not args.quick:
        return full
    test_texts = {line.rstrip("\n").split("\t", 1)[-1] for line in full["test"].read_text(encoding="utf-8").splitlines(keepends=True)[1:]}
    out = {}
    for split, path in full.items():
        if QUICK_ROWS[split] is None:
            out[split] = path
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        rows = lines[1:]
        keep = [i for i, r in enumerate(rows) if r.rstrip("\n").split("\t", 1)[-1] in test_texts] if split == "train" else []
        rest = sorted(set(range(len(rows))) - set(keep))
        sample = sorted(keep + random.Random(f"quick-{split}").sample(rest, max(0, min(QUICK_ROWS[split] - len(keep), len(rest)))))
        target = work_dir(args) / "data" / f"{split}.tsv"
        text = lines[0] + "".join(rows[i] for i in sample)
        if not target.exists() or target.read_text(encoding="utf-8") != text:  # unchanged: the segments stay fresh
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        out[split] = target
    return out


def _rows(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for _ in fh) - 1


def _print_table(results: dict[str, dict[str, Any]], threads: int, n_test: int) -> None:
    rows = [("classifier", "dev acc", "test acc", "test macro-F1", "train s", "predict texts/s")]
    for kind, r in results.items():
        rows.append((kind, f"{r['dev_accuracy']:.4f}", f"{r['test_accuracy']:.4f}", f"{r['test_macro_f1']:.4f}",
                     f"{r['train_s']:.0f}", f"{r['predict_texts_per_s']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"predict: {n_test} test texts, batch 64, median of 3 after one warm-up, {threads} torch thread(s)")


def work_dir(args) -> Path:
    return args.work or common.bench_dir(args, "finetune")


def segments(args, splits: dict[str, Path] | None = None) -> dict[str, str]:
    """The segment artifacts of this benchmark's train/dev/test split (distill trains on them too)."""
    work = work_dir(args)
    for split, path in (splits or data_files(args)).items():
        textcnn_bench.stage("segment", {}, {"corpus": [str(path)]}, work / f"seg_{split}")
    return {split: str(work / f"seg_{split}") for split in ("train", "dev", "test")}


def classifier(args) -> Path:
    """The fine-tuned BERT of this benchmark (distill's teacher), built through the stages unless fresh."""
    args.checkpoint = args.checkpoint or common.pretrained(args)
    work = work_dir(args)
    data = segments(args)
    textcnn_bench.stage("finetune", finetune_config(args), {"checkpoint": str(args.checkpoint), **data},
                        work / "finetune")
    return work / "finetune"


def _args():
    p = common.parser("Fine-tuned BERT (pretrain_bert.yaml's checkpoint) vs TextCNN on ChnSentiCorp")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the BERT to fine-tune (default: pipelines/pretrain_bert.yaml's, built under runs/bench/)")
    p.add_argument("--work", type=Path, default=None, help="artifact directory (default runs/bench/{full,quick}/finetune)")
    return common.parse(p)


if __name__ == "__main__":
    main()
