"""`nlp-pipe word2vec` against a direct gensim `Word2Vec(corpus_file=...)` call, same corpus, same run.

    python benchmarks/word2vec.py [--quick | --smoke] [--out bench-word2vec.json] [--repeats 3] [--copies 4]

The corpus is real text from --data-dir: the CLUE news/web sample and the Douban book reviews
of book_review_cls.txt (about 4 MB, 0.9M words), segmented once by the segment stage. The
timing runs train on that segmented corpus repeated --copies times (--quick: one copy, one
epoch). Both sides get identical gensim parameters and thread counts; the stage runs end to
end through the runner (plan + execute: training, vectors.txt, vectors.kv, evaluation on the
shipped vocab/ files, report, manifest and hash verification), the baseline is only the
gensim call. Sides alternate each repeat (fair to a drifting load); medians are reported.
Figures: wall time, CPU time of all threads and words/s (stage vs gensim); the stage's time
outside its own gensim calls (build_vocab + train) as a share of them, which a busy machine
disturbs least; analogy accuracy on vocab/analogy_zh.txt (3CosAdd; the stage's eval.json vs
gensim's own evaluate_word_analogies on its model).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gensim.models import Word2Vec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from nlp_pipe import runner  # noqa: E402
from nlp_pipe.core.files import CORPUS_TXT  # noqa: E402
from nlp_pipe.stages import word2vec as stage  # noqa: E402
from nlp_pipe.text.segmenter import default_workers  # noqa: E402

VOCAB = Path(__file__).resolve().parent.parent / "vocab"
ANALOGY, SIMILARITY = VOCAB / "analogy_zh.txt", VOCAB / "similarity_zh.txt"


def segmented_corpus(args, tmp: Path) -> Path:
    """Raw CLUE lines + book-review texts -> the segment stage -> its artifact (corpus.txt inside)."""
    raw = tmp / "raw.txt"
    with open(raw, "w", encoding="utf-8") as out:
        out.write(common.data_path(args, "corpora", "CLUECorpusSmall_sampled.txt").read_text(encoding="utf-8"))
        for line in common.data_path(args, "corpora", "book_review_cls.txt").read_text(encoding="utf-8").splitlines():
            out.write(line.split("\t", 1)[-1] + "\n")
    seconds, _, _ = common.timed(lambda: runner.execute(runner.plan("segment", {}, {"corpus": [str(raw)]}, tmp / "seg"), force=True))
    print(f"segment stage: {raw.stat().st_size / 1e6:.1f} MB raw text in {seconds:.1f} s")
    return tmp / "seg"


def repeated(corpus: Path, copies: int, tmp: Path) -> Path:
    if copies == 1:
        return corpus  # the segment artifact itself
    path = tmp / f"corpus_x{copies}.txt"
    with open(path, "wb") as out:
        for _ in range(copies):
            with open(corpus / CORPUS_TXT, "rb") as src:
                shutil.copyfileobj(src, out)
    return path


def run_stage(corpus: Path, out: Path, config: dict) -> dict:
    """What `nlp-pipe word2vec --corpus CORPUS --analogy ... --similarity ... --out OUT --force` does."""
    inputs = {"corpus": str(corpus), "analogy": str(ANALOGY), "similarity": str(SIMILARITY)}
    return runner.execute(runner.plan("word2vec", config, inputs, out), force=True)


def run_gensim(corpus_file: Path, config: dict) -> Word2Vec:
    """The baseline: the one gensim call, with the parameters the stage passes."""
    c = stage.Config(**config)  # the stage's defaults plus the benchmark's epochs / workers
    return Word2Vec(corpus_file=str(corpus_file), vector_size=c.vector_size, window=c.window, min_count=c.min_count,
                    sample=c.sample, sg=int(c.sg), hs=int(c.hs), negative=c.negative, alpha=c.alpha, seed=c.seed,
                    workers=c.workers, epochs=c.epochs)


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of each side (median reported)")
    p.add_argument("--copies", type=int, default=4, help="copies of the segmented corpus in the timed corpus (full run)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 5; 1 with --quick)")
    args = common.parse(p)
    if args.smoke:
        args.repeats = 1
    info = common.machine()
    copies = common.pick(args, 2, 1, args.copies)  # --smoke: two copies of its tiny corpus, so the copying runs too
    config = {"epochs": args.epochs or (1 if args.quick else 5), "workers": default_workers()}
    with tempfile.TemporaryDirectory(prefix="bench-word2vec-") as tmp:
        tmp = Path(tmp)
        corpus = repeated(segmented_corpus(args, tmp), copies, tmp)
        corpus_file = stage.corpus_file(corpus)
        print(f"timed corpus: {copies} cop{'y' if copies == 1 else 'ies'}, {corpus_file.stat().st_size / 1e6:.1f} MB; "
              f"{config['epochs']} epochs, {config['workers']} threads; load average {info['load_avg']}")
        runs: dict[str, list[dict]] = {"stage": [], "gensim": []}
        for r in range(args.repeats):
            for side in ("stage", "gensim") if r % 2 == 0 else ("gensim", "stage"):
                cpu = time.process_time()  # every thread of this process: less sensitive to other load than wall time
                if side == "stage":
                    seconds, others, manifest = common.timed(lambda: run_stage(corpus, tmp / "w2v", config))
                    metrics = manifest["metrics"]
                    words = metrics["corpus_words"]
                    accuracy = math.nan if metrics["analogy_accuracy"] is None else metrics["analogy_accuracy"]  # no question in vocabulary
                    in_gensim = metrics["build_vocab_s"] + metrics["train_s"]
                else:
                    seconds, others, model = common.timed(lambda: run_gensim(corpus_file, config))
                    words, in_gensim = model.corpus_total_words, seconds
                cpu = time.process_time() - cpu
                if side == "gensim":
                    accuracy = model.wv.evaluate_word_analogies(str(ANALOGY))[0]  # after the clock: not part of the call
                runs[side].append({"wall_s": seconds, "cpu_s": cpu, "words_per_s": words * config["epochs"] / seconds,
                                   "analogy": accuracy, "overhead_s": seconds - in_gensim,
                                   "overhead_pct": 100 * (seconds - in_gensim) / in_gensim})
                busy = "" if others is None else f"  (other processes used {others:.2f} cores meanwhile)"
                print(f"  repeat {r + 1}: {side:6s} {seconds:7.2f} s wall {cpu:7.2f} s cpu "
                      f"{words * config['epochs'] / seconds:9,.0f} words/s  analogy {accuracy:.4f}  "
                      f"outside gensim calls {seconds - in_gensim:5.2f} s{busy}", flush=True)
        evaluation = json.loads((tmp / "w2v" / "eval.json").read_text(encoding="utf-8"))
    med = {side: {k: common.median([r[k] for r in rs]) for k in rs[0]} for side, rs in runs.items()}
    total = evaluation["analogy"]["total"]
    print(f"stage's last eval: {total['evaluated']} of {total['questions']} analogy questions asked "
          f"({total['oov_skipped']} skipped: OOV), 3CosMul {total['3cosmul']['accuracy']}, "
          f"similarity spearman {evaluation['similarity']['spearman']}")
    common.report("word2vec", args, {
        "train_wall_s": common.figure(med["stage"]["wall_s"], "s", med["gensim"]["wall_s"]),
        "train_cpu_s": common.figure(med["stage"]["cpu_s"], "s", med["gensim"]["cpu_s"]),
        "stage_overhead_s": common.figure(med["stage"]["overhead_s"], "s outside the stage's gensim calls"),
        "stage_overhead_pct": common.figure(med["stage"]["overhead_pct"], "% of the stage's gensim calls"),
        "words_per_s": common.figure(med["stage"]["words_per_s"], "words/s", med["gensim"]["words_per_s"]),
        "analogy_accuracy": common.figure(med["stage"]["analogy"], "3CosAdd accuracy", med["gensim"]["analogy"]),
    }, info)


if __name__ == "__main__":
    main()
