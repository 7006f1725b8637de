"""TinyBERT-4 distilled from the fine-tuned ChnSentiCorp classifier, with and without augmentation, against
the same student shape fine-tuned directly; and the CPU speed-up of TinyBERT-4 over a BERT-base shape.

    python benchmarks/distill.py [--quick | --smoke] [--out bench-distill.json] [--teacher DIR] [--pretrained DIR] [--work DIR]

Without --teacher / --pretrained, both are built first (benchmarks/finetune.py's classifier and
pipelines/pretrain_bert.yaml's BERT-mini, under runs/bench/) and reused while fresh.

--quick: finetune.py's quick split (1,000 train / 300 dev rows, the full 1,200-row test set), 1,000 reviews
for general distillation, 1 augmented copy per text, 1 prediction-layer epoch, 2 direct epochs.
The train/dev/test segments and the word vectors (for augment) are benchmarks/finetune.py's, under its
--work: the split its teacher was trained on, built there unless fresh.
Teacher: the fine-tuned classifier of benchmarks/finetune.py (--teacher, default its artifact); the MLM
that augments and the teacher of general distillation: the pretrained model of pipelines/pretrain_bert.yaml
(--pretrained), distilled on --general-rows Douban book reviews. Every model runs through the stages
(distill --mode general, augment, distill --mode task, finetune) into --work, so a rerun reuses fresh artifacts. Texts are cut at
--max-seq-len tokens for teacher and students alike (retention compares like with like).
Student TinyBERT-4 (4x312, FFN 1200) takes the teacher's attention-head count (compared head by head).
"direct" is the same shape from random weights, fine-tuned on the labels without any distillation.
Speed: random-weight BertForSequenceClassification 12x768 (BERT-base shape) vs TinyBERT-4 (12 heads),
fp32, batch 32 x 128 tokens, --threads intra-op threads, median of 5 forwards; plus the int8 student.
Figures: student_test_accuracy (value = distilled student with augmentation, baseline = teacher; ratio =
retention), student_test_accuracy_no_aug, direct_student_test_accuracy (baseline = teacher),
student_test_accuracy_unseen (the test rows whose text is not in train; baseline = the directly fine-tuned student),
cpu_speedup_base_to_tiny4 (value = TinyBERT-4 texts/s, baseline = 12x768 texts/s), cpu_speedup_int8.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune as finetune_bench  # noqa: E402
from textcnn import stage, vectors  # noqa: E402

import common  # noqa: E402
from nlp_pipe.core import manifest as manifests  # noqa: E402
from nlp_pipe.metrics.throughput import texts_per_second  # noqa: E402
from nlp_pipe.models.int8 import quantize_int8  # noqa: E402
from nlp_pipe.models.tinybert import student_config  # noqa: E402


def speed(args) -> dict[str, float]:
    """texts/s of a 12x768 and a TinyBERT-4 classifier (random weights) and of the int8 TinyBERT-4."""
    from transformers import BertConfig, BertForSequenceClassification

    base = BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    tiny = student_config(base, "tinybert4")
    torch.manual_seed(0)
    out = {}
    batch, seq, repeats = common.pick(args, (2, 16, 1), (32, 128, 3), (32, 128, 5))
    for name, config in (("base", base), ("tiny4", tiny)):
        model = BertForSequenceClassification(config).eval()
        out[name] = texts_per_second(model, batch, seq, repeats=repeats, threads=args.threads)
        if name == "tiny4":
            out["tiny4_int8"] = texts_per_second(quantize_int8(model), batch, seq, vocab_size=21128,
                                                    repeats=repeats, threads=args.threads)
        print(f"{name:6s} {sum(p.numel() for p in model.parameters()) / 1e6:6.1f}M params  {out[name]:7.1f} texts/s", flush=True)
        del model
    print(f"tiny4 int8      {out['tiny4_int8']:7.1f} texts/s")
    return out


def head(source: Path, copy: Path, lines: int | None) -> Path:
    """The first `lines` lines of `source` as a file in the work directory (all of them: `source` itself)."""
    if lines is None:
        return source
    with open(source, encoding="utf-8") as fh:
        text = "".join(line for _, line in zip(range(lines), fh))
    if not copy.exists() or copy.read_text(encoding="utf-8") != text:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text, encoding="utf-8")
    return copy


SMOKE_STUDENT = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128}  # --smoke: TinyBERT-4's 4x312 costs a minute


def student_shape(args, work: Path) -> str:
    """tinybert4, or with --smoke a JSON file of a smaller student."""
    if not args.smoke:
        return "tinybert4"
    path = work / "smoke_student.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(SMOKE_STUDENT), encoding="utf-8")
    return str(path.resolve())


def student_init(work: Path, teacher: Path, shape: str) -> Path:
    """A random student classifier checkpoint (the teacher's tokenizer and head count) for the direct baseline."""
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    from nlp_pipe.models.tinybert import student_for

    out = work / "tiny4_random"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        BertForSequenceClassification(student_for(AutoConfig.from_pretrained(teacher), shape)).save_pretrained(out)
        AutoTokenizer.from_pretrained(teacher).save_pretrained(out)
    return out


def main() -> None:
    args = _args()
    info = common.machine()
    args.pretrained = args.pretrained or common.pretrained(args)
    finetune_args = argparse.Namespace(data_dir=args.data_dir, quick=args.quick, smoke=args.smoke, checkpoint=args.pretrained,
                                       work=None)
    args.teacher = args.teacher or finetune_bench.classifier(finetune_args)
    sizes = {"copies": (1, 1, 2), "prediction_epochs": (1.0, 1.0, 2.0), "direct_epochs": (1.0, 2.0, 3.0)}
    for key, size in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, common.pick(args, *size))
    if args.smoke:
        args.max_seq_len = 32
    for path in (args.teacher, args.pretrained):
        if not (path / "manifest.json").exists() and not (path / "config.json").exists():
            sys.exit(f"error: {path} is neither an artifact nor a model directory")
    work = args.work or common.bench_dir(args, "distill")
    # the stage's own speed table; the figure is measured below
    fast = {"speed_batch": common.pick(args, 2, 8, 8), "speed_seq_len": common.pick(args, 16, 64, 64)}
    splits = finetune_bench.segments(finetune_args)  # the teacher's split, and its word vectors for augment
    vec = vectors(args, finetune_bench.work_dir(finetune_args))
    general = work / "general"
    reviews = head(common.data_path(args, "corpora", "book_review_cls.txt"), work / "general_corpus.tsv",
                   1000 if args.quick else args.general_rows)
    shape = student_shape(args, work)
    stage("distill", {"mode": "general", "student_shape": shape, "lr": 3e-4, "eval_docs": 100, "epochs": 1,
                      "batch_size": 32, "max_seq_len": args.max_seq_len, "format": "tsv", "header": False,
                      "text_column": "1", "label_column": "none", **fast},
          {"teacher": str(args.pretrained), "corpus": [str(reviews)]}, general)
    aug = work / "augment"
    stage("augment", {"copies": args.copies, "p": 0.4, "top_k": 15, "max_seq_len": args.max_seq_len},
          {"corpus": splits["train"], "mlm": str(args.pretrained), "vectors": str(vec)}, aug)
    task = {"mode": "task", "epochs": 1, "prediction_epochs": args.prediction_epochs, "lr": 1e-4, "quantize": "int8",
            "batch_size": 32, "max_seq_len": args.max_seq_len, **fast}
    inputs = {"teacher": str(args.teacher), **splits, "student": str(general)}
    results = {}
    for name, extra in (("no_aug", {}), ("aug", {"augmented": str(aug)})):
        m = stage("distill", task, {**inputs, **extra}, work / f"task_{name}")["metrics"]
        results[name] = m
        print(f"distilled ({name}): student test acc {m['student_test_accuracy']:.4f}, teacher {m['teacher_test_accuracy']:.4f}, "
              f"retention {m['retention']:.1%}, int8 {m['int8_test_accuracy']:.4f}", flush=True)
    direct = stage("finetune", {"epochs": args.direct_epochs, "batch_size": 32, "lr": 1e-4, "max_seq_len": args.max_seq_len},
                   {"checkpoint": str(student_init(work, args.teacher, shape)), **splits}, work / "direct")["metrics"]
    print(f"direct (no distillation): test acc {direct['test_accuracy']:.4f}")
    n_test = sum(map(sum, json.loads((work / "direct" / "metrics.json").read_text(encoding="utf-8"))["test"]["confusion_matrix"]))
    for name in ("aug", "no_aug"):
        gap = results[name]["student_test_accuracy"] - direct["test_accuracy"]
        noise = 1.96 * math.sqrt(2 * direct["test_accuracy"] * (1 - direct["test_accuracy"]) / n_test)
        print(f"distilled ({name}) - direct: {gap * 100:+.2f} points on {n_test} test texts "
              f"({'beyond' if abs(gap) > noise else 'within'} the ±{noise * 100:.1f}-point 95% noise band of two such accuracies)")
    unseen = {name: json.loads((work / d / "metrics.json").read_text(encoding="utf-8")).get("test_unseen")
              for name, d in (("aug", "task_aug"), ("direct", "direct"))}
    speeds = speed(args)
    teacher_acc = results["aug"]["teacher_test_accuracy"]
    # the students learn from the pretrained model (general distillation, augment's MLM) and its fine-tuned teacher
    small = finetune_bench.too_small(finetune_bench.checkpoint_info(args.pretrained, manifests.read_manifest(args.pretrained) or {}))
    figures = {
        "student_test_accuracy": common.figure(results["aug"]["student_test_accuracy"], "accuracy", teacher_acc, small),
        "student_test_accuracy_no_aug": common.figure(results["no_aug"]["student_test_accuracy"], "accuracy", teacher_acc, small),
        "direct_student_test_accuracy": common.figure(direct["test_accuracy"], "accuracy", teacher_acc, small),
        "int8_student_test_accuracy": common.figure(results["aug"]["int8_test_accuracy"], "accuracy", teacher_acc, small),
        **({"student_test_accuracy_unseen": common.figure(unseen["aug"]["accuracy"], "accuracy", unseen["direct"]["accuracy"],
                                                          small)}
           if unseen["aug"] and unseen["direct"] else {}),
        "cpu_speedup_base_to_tiny4": common.figure(speeds["tiny4"], "texts/s", speeds["base"]),
        "cpu_speedup_int8": common.figure(speeds["tiny4_int8"], "texts/s", speeds["base"]),
    }
    t = results["aug"]
    info["models"] = {"teacher": str(args.teacher), "teacher_params": t["teacher_params"], "student_params": t["student_params"],
                      "augmented_rows": t["augmented_rows"], "copies": args.copies, "max_seq_len": args.max_seq_len,
                      "threads": args.threads, "teacher_vs_student_cpu_speedup_measured_in_stage": t["cpu_speedup"]}
    common.report("distill", args, figures, info)


def _args():
    p = common.parser("TinyBERT-4 distillation on ChnSentiCorp vs its teacher and direct fine-tuning; CPU speed-up")
    p.add_argument("--teacher", type=Path, default=None, help="fine-tuned teacher (default: benchmarks/finetune.py's, built)")
    p.add_argument("--pretrained", type=Path, default=None, help="pretrained BERT (default: pretrain_bert.yaml's, built)")
    p.add_argument("--work", type=Path, default=None, help="artifact directory (default runs/bench/{full,quick}/distill)")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per text for teacher and students")
    p.add_argument("--copies", type=int, default=None, help="augmented copies per training text (default 2; 1 with --quick)")
    p.add_argument("--general-rows", type=int, default=10000, help="Douban book reviews for general distillation")
    p.add_argument("--prediction-epochs", type=float, default=None,
                   help="prediction-layer epochs of task distillation (default 2; 1 with --quick)")
    p.add_argument("--direct-epochs", type=float, default=None,
                   help="epochs of the direct fine-tuning baseline (default 3; 2 with --quick)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for the speed figure")
    return common.parse(p)


if __name__ == "__main__":
    main()
