"""TextCNN on ChnSentiCorp against a character n-gram TF-IDF + logistic regression baseline.

    python benchmarks/textcnn.py [--quick | --smoke] [--out bench-textcnn.json] [--work runs/bench_textcnn]

Word vectors are trained by the word2vec stage only on text that excludes ChnSentiCorp dev and
test (the CLUE sample corpus, Douban book reviews and the ChnSentiCorp train split; see the
leakage note in the data README). Every step runs through the stages (segment, word2vec,
textcnn, baseline) into --work, so a rerun reuses fresh artifacts. The baseline is the textcnn
stage's own: TF-IDF over character 1-3 grams (min_df 2, sublinear tf) + LogisticRegression(C=4),
fitted on the same train split in the same run (its figures come from the textcnn manifest).
Figures: test_accuracy, test_accuracy_unseen (test rows whose text is not in train) and
test_macro_f1 (value = the best TextCNN mode by dev accuracy, baseline = TF-IDF + LR),
train_s (baseline = the `baseline` stage's wall time), predict_texts_per_s (TextClassifier.load
of each artifact, segmentation included).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import TextClassifier, runner  # noqa: E402
from nlp_pipe.core import manifest as manifests

MODES = ("non-static", "static", "multichannel")  # the stage's default first: --quick runs only that one


def stage(name: str, config: dict, inputs: dict, out: Path) -> dict:
    plan = runner.plan(name, config, inputs, out)
    if plan.fresh:
        print(f"[{name}] fresh: {out}", file=sys.stderr)
        return manifests.read_manifest(out)
    print(f"[{name}] running ({plan.reason})", file=sys.stderr)
    return runner.execute(plan)


def vectors(args, work: Path) -> Path:
    """Segment the leak-free corpora, join them with the train split's words, train word2vec."""
    sources = {"clue": common.data_path(args, "corpora", "CLUECorpusSmall_sampled.txt"),
               "books": common.data_path(args, "corpora", "book_review_cls.txt")}
    stage("segment", {}, {"corpus": [str(sources["clue"])]}, work / "seg_clue")
    stage("segment", {"header": False, "text_column": "1", "label_column": "0"}, {"corpus": [str(sources["books"])]}, work / "seg_books")
    joined = work / "w2v_corpus.txt"
    parts = [work / "seg_clue" / "corpus.txt", work / "seg_books" / "corpus.txt", work / "seg_train" / "corpus.txt"]
    text = "".join(p.read_text(encoding="utf-8") for p in parts)
    if not joined.exists() or joined.read_text(encoding="utf-8") != text:
        joined.write_text(text, encoding="utf-8")
    config = {"vector_size": common.pick(args, 16, 200, 200), "window": 5, "min_count": 2,
              "epochs": common.pick(args, 1, 3, 10), "sg": 1}
    stage("word2vec", config, {"corpus": str(joined)}, work / "word2vec")
    return work / "word2vec"


def speed(directory: Path, texts: list[str]) -> float:
    """Texts per second of TextClassifier.load(directory).predict over `texts`: one warm-up, median of 3."""
    clf = TextClassifier.load(directory)
    clf.predict(texts[:64])  # warm-up: jieba dictionary and first-call allocations
    speeds = []
    for _ in range(3):
        t0 = time.perf_counter()
        clf.predict(texts)
        speeds.append(len(texts) / (time.perf_counter() - t0))
    return common.median(speeds)


def main() -> None:
    args = _args()
    info = common.machine()
    work = args.work or (common.bench_dir(args, "textcnn") if args.smoke else Path("runs/bench_textcnn"))
    for split in ("train", "dev", "test"):
        stage("segment", {}, {"corpus": [str(common.data_path(args, "chnsenticorp", f"{split}.tsv"))]}, work / f"seg_{split}")
    vec = vectors(args, work)
    results = {}
    for mode in MODES[:1] if args.quick else MODES:
        config = {"mode": mode, **({"epochs": 1} if args.smoke else {})}  # the stage's defaults otherwise: what a user gets
        t0 = time.perf_counter()
        manifest = stage("textcnn", config, {"train": str(work / "seg_train"), "dev": str(work / "seg_dev"),
                                            "test": str(work / "seg_test"), "vectors": str(vec)}, work / f"textcnn_{mode}")
        m = manifest["metrics"]
        results[mode] = {"dev_accuracy": m["dev_accuracy"], "test_accuracy": m["test_accuracy"], "test_macro_f1": m["test_macro_f1"],
                         "test_unseen_accuracy": m["test_unseen_accuracy"], "train_s": manifest["wall_time_s"],
                         "dir": work / f"textcnn_{mode}", "baseline": {k: v for k, v in m.items() if k.startswith("baseline_")}}
        print(f"{mode:13s} dev acc {m['dev_accuracy']:.4f}  test acc {m['test_accuracy']:.4f}  test macro-F1 {m['test_macro_f1']:.4f}  "
              f"train {manifest['wall_time_s']:.0f}s  (ran {time.perf_counter() - t0:.0f}s now)")
    best = max(results, key=lambda k: results[k]["dev_accuracy"])
    test_texts = [line.rstrip("\n").split("\t", 1)[1] for line in open(common.data_path(args, "chnsenticorp", "test.tsv"),
                                                                       encoding="utf-8")][1:]
    speed_texts = test_texts[:300] if args.quick else test_texts  # --quick: predict speed over the first 300
    data = {split: str(work / f"seg_{split}") for split in ("train", "dev", "test")}
    base_manifest = stage("baseline", {}, data, work / "baseline")
    b = results[best]["baseline"]  # the textcnn stage fitted the baseline on the same split in the same run
    print(f"best TextCNN mode by dev accuracy: {best}; TF-IDF + LR (same run): test acc {b['baseline_test_accuracy']:.4f}, "
          f"unseen {b['baseline_test_unseen_accuracy']:.4f}, macro-F1 {b['baseline_test_macro_f1']:.4f}, "
          f"train {b['baseline_train_s']:.1f}s; TextCNN unseen {results[best]['test_unseen_accuracy']:.4f}")
    if results[best]["test_unseen_accuracy"] < b["baseline_test_unseen_accuracy"]:
        print(f"TextCNN ({best}) stays below the TF-IDF + LR baseline on unseen test rows "
              f"({results[best]['test_unseen_accuracy']:.4f} < {b['baseline_test_unseen_accuracy']:.4f}).")
    figures = {
        "test_accuracy": common.figure(results[best]["test_accuracy"], "accuracy", b["baseline_test_accuracy"]),
        "test_accuracy_unseen": common.figure(results[best]["test_unseen_accuracy"], "accuracy", b["baseline_test_unseen_accuracy"]),
        "test_macro_f1": common.figure(results[best]["test_macro_f1"], "macro-F1", b["baseline_test_macro_f1"]),
        "train_s": common.figure(results[best]["train_s"], "s", base_manifest["wall_time_s"]),
        "predict_texts_per_s": common.figure(speed(results[best]["dir"], speed_texts), "texts/s",
                                             speed(work / "baseline", speed_texts)),
    }
    for mode, r in results.items():
        figures[f"test_accuracy_{mode}"] = common.figure(r["test_accuracy"], "accuracy", b["baseline_test_accuracy"])
    common.report("textcnn", args, figures, info)


def _args():
    p = common.parser("TextCNN on ChnSentiCorp vs TF-IDF + logistic regression")
    p.add_argument("--work", type=Path, default=None,
                   help="artifact directory, reused when fresh (default runs/bench_textcnn; runs/bench/smoke/textcnn with --smoke)")
    return common.parse(p)


if __name__ == "__main__":
    main()
