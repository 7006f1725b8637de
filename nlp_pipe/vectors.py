"""Word vectors shared by `word2vec`, `import-vectors`, `nlp-pipe word2vec-eval` and `textcnn`.

    kv = load_keyed_vectors("runs/demo/word2vec")            # artifact dir, vectors.txt or .txt.bz2
    evaluate(kv, analogy="vocab/analogy_zh.txt", similarity="vocab/similarity_zh.txt")
    matrix, stats = embedding_matrix("runs/demo/word2vec", vocab_tokens)   # rows in vocab order

A vectors artifact holds `vectors.txt` (word2vec text format: `COUNT DIM`, then `word v1 v2 ...`),
`vectors.kv` (gensim `KeyedVectors.save`; big arrays beside it as `vectors.kv.*.npy`) and `eval.json`.
`vectors.kv` is a pickle: it is only loaded from an artifact whose manifest says a vector stage made
it and whose recorded sha256 it still matches; any other file is read as text.

Evaluation mirrors gensim's `KeyedVectors.evaluate_word_analogies` / `evaluate_word_pairs` (same
answers, same accuracy): only the `restrict_vocab` most frequent words (default 300,000) are asked
and may answer, words are compared upper-cased unless `case_insensitive=False`, and a question with
a word outside that vocabulary is skipped -- counted as `oov_skipped`, never hidden. Besides gensim's
3CosAdd it scores 3CosMul (Levy & Goldberg 2014, gensim's `most_similar_cosmul`) over the same words.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from gensim import matutils
from gensim.models import KeyedVectors

from . import artifacts
from .config import option
from .corpus import Counts
from .errors import UserError

log = logging.getLogger(__name__)

VECTORS_TXT = "vectors.txt"
VECTORS_KV = "vectors.kv"
EVAL_JSON = "eval.json"
VECTOR_STAGES = ("word2vec", "import-vectors")
RESTRICT_VOCAB = 300_000  # gensim's default for evaluate_word_analogies / evaluate_word_pairs
METHODS = ("3cosadd", "3cosmul")
_ARRAYS = ("vectors", "vectors_vocab", "vectors_ngrams")  # stored as .npy beside vectors.kv, so they mmap
_BATCH_ROWS = 4096
_CANDIDATES = 5  # gensim looks at the top 5 answers, skipping the question's own words


# ---------------------------------------------------------------- word2vec text format

def read_word2vec_text(path: str | Path, *, keep: Collection[str] | None = None, counts: Counts | None = None,
                       limit: int = 0, on_decode_error: str = "stop") -> KeyedVectors:
    """Stream a word2vec text file (plain, .bz2 or .gz) into KeyedVectors, checking every row.

    Only the vectors are held in memory, never the text. A header that disagrees with the rows, a
    non-numeric value or a wrong row length stops with the line number. `keep` restricts to those
    words; duplicates keep the first row. `counts` receives rows in/out and dropped rows by reason
    (duplicate, not_in_vocab, space_in_word, blank_line, undecodable).
    """
    path = Path(path)
    counts = counts if counts is not None else Counts()
    with _open_binary(path) as fh:
        lines = _decoded(fh, path, on_decode_error, counts)
        n_rows, dim = _header(next(lines, (1, ""))[1], path)
        capacity = min(n_rows, limit or n_rows, len(keep) if keep is not None else n_rows)
        try:
            matrix = np.empty((capacity, dim), dtype=np.float32)
        except (MemoryError, ValueError):
            raise UserError(f"{path}: the header (line 1) announces {n_rows} x {dim} floats, more than memory holds; "
                            f"fix the header, or import fewer (limit, vocab)") from None
        words: list[str] = []
        seen: set[str] = set()
        batch: list[tuple[int, str, list[str]]] = []
        line_no = 1
        for line_no, text in lines:
            if not text:
                counts.drop("blank_line")
                continue
            counts.rows_in += 1
            if counts.rows_in > n_rows:
                raise UserError(f"{path}: line {line_no}: more rows than the {n_rows} announced by the header (line 1); fix the header")
            word, values = _split_row(text, dim, path, line_no)
            if word is None:
                counts.drop("space_in_word")  # cannot be stored in word2vec text format
            elif word in seen:
                counts.drop("duplicate")
            elif keep is not None and word not in keep:
                counts.drop("not_in_vocab")
            else:
                seen.add(word)
                batch.append((line_no, word, values))
                if len(batch) == _BATCH_ROWS:
                    _store(batch, matrix, words, path)
            if limit and counts.rows_in == limit:
                break
        _store(batch, matrix, words, path)
    if not limit and counts.rows_in < n_rows:
        raise UserError(f"{path}: the header (line 1) announces {n_rows} vectors but the file ends after "
                        f"{counts.rows_in} rows (line {line_no}); fix the header or the file")
    counts.rows_out = len(words)
    return _keyed_vectors(words, matrix if len(words) == capacity else matrix[: len(words)].copy())


def write_word2vec_text(kv: KeyedVectors, path: Path) -> None:
    """`COUNT DIM`, then `word v1 ... vDIM` a line in index order; %.9g round-trips float32 exactly."""
    row_format = " ".join(["%.9g"] * kv.vector_size)
    bad = [w for w in kv.index_to_key if not w or " " in w or "\n" in w]
    if bad:
        raise UserError(f"{path.name}: words with spaces or newlines cannot be stored in word2vec text format: {bad[:5]}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(kv)} {kv.vector_size}\n")
        for start in range(0, len(kv), _BATCH_ROWS):
            rows = np.asarray(kv.vectors[start:start + _BATCH_ROWS], dtype=np.float32).tolist()
            keys = kv.index_to_key[start:start + _BATCH_ROWS]
            fh.write("".join(f"{w} {row_format % tuple(r)}\n" for w, r in zip(keys, rows)))


def save_vectors(kv: KeyedVectors, out: Path) -> None:
    """Write vectors.txt and vectors.kv into an artifact directory, then read both back to check them."""
    write_word2vec_text(kv, out / VECTORS_TXT)
    _save_kv_and_check(kv, out)


def _save_kv_and_check(kv: KeyedVectors, out: Path) -> None:
    # kv.save detaches the big arrays from kv while it pickles the rest: nothing may read kv meanwhile
    kv.save(str(out / VECTORS_KV), separately=[a for a in _ARRAYS if getattr(kv, a, None) is not None])
    with open(out / VECTORS_TXT, encoding="utf-8") as fh:  # header, row count, first and last rows
        header = fh.readline()
        first = last = fh.readline()
        rows = int(bool(first))
        for last in fh:
            rows += 1
    assert header == f"{len(kv)} {kv.vector_size}\n" and rows == len(kv), (header, rows, len(kv))
    for line, i in ((first, 0), (last, len(kv) - 1)) if len(kv) else ():
        word, *values = line.rstrip("\n").split(" ")
        assert word == kv.index_to_key[i] and np.array_equal(np.array(values, np.float32), kv.vectors[i]), word
    reloaded = KeyedVectors.load(str(out / VECTORS_KV), mmap="r")
    assert reloaded.vectors.shape == kv.vectors.shape and reloaded.index_to_key[:10] == kv.index_to_key[:10]


def load_keyed_vectors(path: str | Path, *, mmap: bool = True) -> KeyedVectors:
    """Vectors from a word2vec/import-vectors artifact dir, or a word2vec text file (.txt, .bz2, .gz)."""
    path = Path(path)
    if path.is_dir():
        manifest = artifacts.require_manifest(path, "Pass a word2vec or import-vectors artifact, or a word2vec text file.")
        if manifest.get("stage") not in VECTOR_STAGES:
            raise UserError(f"{path} is a '{manifest.get('stage')}' artifact, not word vectors (word2vec or import-vectors)")
        recorded = {f["name"]: f["sha256"] for f in manifest.get("files", [])}
        kv_file = path / VECTORS_KV
        if not kv_file.is_file() or recorded.get(VECTORS_KV) != artifacts.sha256_file(kv_file):  # a pickle: only our own
            raise UserError(f"{path / VECTORS_KV} does not match its manifest; rebuild the artifact (--force)")
        return KeyedVectors.load(str(path / VECTORS_KV), mmap="r" if mmap else None)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a vectors artifact dir or a word2vec text file")
    counts = Counts()
    kv = read_word2vec_text(path, counts=counts)
    if counts.dropped:
        log.warning("%s: rows dropped while reading: %s", path, dict(counts.dropped))
    return kv


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    try:
        if name.endswith(".bz2"):
            return bz2.open(path, "rb")
        if name.endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror or exc})") from None


def _decoded(fh: IO[bytes], path: Path, on_error: str, counts: Counts) -> Iterator[tuple[int, str]]:
    offset = 0
    for number, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if on_error == "stop" or number == 1:
                raise UserError(f"{path}: line {number}, byte offset {offset + exc.start}: not UTF-8 "
                                f"({raw[exc.start:exc.start + 4]!r}); fix the file "
                                f"(import-vectors can skip such lines: --on-decode-error skip)") from None
            counts.rows_in += 1
            counts.drop("undecodable")
            offset += len(raw)
            continue
        offset += len(raw)
        yield number, text.lstrip("\ufeff").rstrip(" \t\r\n") if number == 1 else text.rstrip(" \t\r\n")


def _header(text: str, path: Path) -> tuple[int, int]:
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) < 1:
        raise UserError(f"{path}: line 1 should be the word2vec header `COUNT DIM`, got {text[:60]!r} "
                        f"(headerless GloVe-style files need one added: `sed -i '1i COUNT DIM' FILE`)")
    return int(parts[0]), int(parts[1])


def _split_row(text: str, dim: int, path: Path, line_no: int) -> tuple[str | None, list[str]]:
    parts = text.split(" ")  # like gensim: only spaces separate, so a word may hold other whitespace
    if len(parts) == dim + 1 and parts[0]:
        return parts[0], parts[1:]
    if len(parts) > dim and (not parts[0] or not all(map(_is_number, parts[1:len(parts) - dim]))):
        return None, []  # a word that is or holds a space: the row is fine, the word cannot be stored
    raise UserError(f"{path}: line {line_no}: {len(parts) - 1} values for '{parts[0]}', but the header (line 1) "
                    f"says dimension {dim}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _store(batch: list[tuple[int, str, list[str]]], matrix: np.ndarray, words: list[str], path: Path) -> None:
    if not batch:
        return
    try:
        values = np.array([v for _, _, v in batch], dtype=np.float32)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        for line_no, word, row in batch:  # find the culprit for the message
            for value in row:
                if not _is_number(value) or not np.isfinite(np.float32(value)):
                    raise UserError(f"{path}: line {line_no}: value {value!r} for '{word}' is not a finite number")
    start = len(words)
    matrix[start:start + len(batch)] = values
    words.extend(w for _, w, _ in batch)
    batch.clear()


def _keyed_vectors(words: list[str], matrix: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(matrix.shape[1], count=0, dtype=np.float32)
    kv.index_to_key = words
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    kv.vectors = matrix
    kv.next_index = len(words)
    return kv


# ---------------------------------------------------------------- evaluation

def evaluate(kv: KeyedVectors, analogy: str | Path | None = None, similarity: str | Path | None = None, *,
             restrict_vocab: int = RESTRICT_VOCAB, case_insensitive: bool = True) -> dict[str, Any]:
    """{"analogy": ..., "similarity": ...} (None for a file not given): what eval.json holds."""
    options = {"restrict_vocab": restrict_vocab, "case_insensitive": case_insensitive}
    return {"analogy": evaluate_analogies(kv, analogy, **options) if analogy else None,
            "similarity": evaluate_similarity(kv, similarity, **options) if similarity else None}


def evaluate_analogies(kv: KeyedVectors, path: str | Path, *, restrict_vocab: int = RESTRICT_VOCAB,
                       case_insensitive: bool = True) -> dict[str, Any]:
    """Accuracy per section and overall for 3CosAdd and 3CosMul on a `: section` / `a b c d` file.

    Answers "a is to b as c is to ?" with d; 3CosAdd matches gensim's evaluate_word_analogies exactly.
    """
    vocab = _ok_vocab(kv, restrict_vocab, case_insensitive)
    sections, malformed = _read_analogies(Path(path), case_insensitive)
    norms = np.linalg.norm(np.asarray(kv.vectors[:restrict_vocab]), axis=1)  # == gensim's fill_norms
    result_sections = []
    for name, questions in sections:
        asked = [q for q in questions if all(w in vocab for w in q)]
        row: dict[str, Any] = {"section": name, "questions": len(questions), "evaluated": len(asked),
                               "oov_skipped": len(questions) - len(asked)}
        predictions = _answer(kv, norms, vocab, asked, case_insensitive) if asked else {m: [] for m in METHODS}
        for method in METHODS:
            correct = sum(p == q[3] for p, q in zip(predictions[method], asked))
            row[method] = {"correct": correct, "accuracy": round(correct / len(asked), 6) if asked else None}
        row["wrong_examples"] = [f"{' '.join(q[:3])} -> {p} (expected {q[3]})"
                                 for p, q in zip(predictions["3cosadd"], asked) if p != q[3]][:5]
        result_sections.append(row)
    total: dict[str, Any] = {key: sum(s[key] for s in result_sections) for key in ("questions", "evaluated", "oov_skipped")}
    for method in METHODS:
        correct = sum(s[method]["correct"] for s in result_sections)
        total[method] = {"correct": correct, "accuracy": round(correct / total["evaluated"], 6) if total["evaluated"] else None}
    return {"file": str(path), "restrict_vocab": restrict_vocab, "case_insensitive": case_insensitive,
            "malformed_lines": malformed, "sections": result_sections, "total": total}


def evaluate_similarity(kv: KeyedVectors, path: str | Path, *, restrict_vocab: int = RESTRICT_VOCAB,
                        case_insensitive: bool = True) -> dict[str, Any]:
    """Spearman (and Pearson) correlation of cosine similarity with the scores of `word1 word2 score` lines.

    Lines starting with # are comments; correlations are None below 3 evaluated pairs (gensim reports them)."""
    from scipy import stats

    vocab = _ok_vocab(kv, restrict_vocab, case_insensitive)
    pairs, malformed = _read_pairs(Path(path), case_insensitive)
    gold, model = [], []
    for a, b, score in pairs:
        if a in vocab and b in vocab:  # cosine as gensim's similarity(): unitvec(a) . unitvec(b)
            gold.append(score)
            model.append(float(np.dot(matutils.unitvec(kv.vectors[vocab[a]]), matutils.unitvec(kv.vectors[vocab[b]]))))
    spearman = pearson = None
    if len(gold) > 2 and len(set(gold)) > 1 and len(set(model)) > 1:
        spearman = round(float(stats.spearmanr(gold, model)[0]), 6)
        pearson = round(float(stats.pearsonr(gold, model)[0]), 6)
    return {"file": str(path), "restrict_vocab": restrict_vocab, "case_insensitive": case_insensitive,
            "pairs": len(pairs), "evaluated": len(gold), "oov_skipped": len(pairs) - len(gold),
            "malformed_lines": malformed, "spearman": spearman, "pearson": pearson}


def eval_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of `evaluate` for a manifest."""
    metrics: dict[str, Any] = {}
    if result.get("analogy"):
        total = result["analogy"]["total"]
        metrics.update(analogy_accuracy=total["3cosadd"]["accuracy"], analogy_accuracy_3cosmul=total["3cosmul"]["accuracy"],
                       analogy_evaluated=total["evaluated"], analogy_oov_skipped=total["oov_skipped"])
    if result.get("similarity"):
        sim = result["similarity"]
        metrics.update(similarity_spearman=sim["spearman"], similarity_evaluated=sim["evaluated"],
                       similarity_oov_skipped=sim["oov_skipped"])
    return metrics


def eval_tables(result: dict[str, Any]) -> list[tuple[list[str], list[tuple]]]:
    """(header, rows) tables of an `evaluate` result, for the CLI and report.md."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def corr(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    tables = []
    if result.get("analogy"):
        a = result["analogy"]
        rows = [(s["section"], s["questions"], s["evaluated"], s["oov_skipped"], pct(s["3cosadd"]["accuracy"]),
                 pct(s["3cosmul"]["accuracy"])) for s in [*a["sections"], {"section": "total", **a["total"]}]]
        tables.append((["analogy section", "questions", "evaluated", "oov skipped", "3CosAdd", "3CosMul"], rows))
    if result.get("similarity"):
        s = result["similarity"]
        tables.append((["similarity file", "pairs", "evaluated", "oov skipped", "spearman", "pearson"],
                       [(Path(s["file"]).name, s["pairs"], s["evaluated"], s["oov_skipped"], corr(s["spearman"]), corr(s["pearson"]))]))
    return tables


def _ok_vocab(kv: KeyedVectors, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
    """gensim's ok_vocab: the first `restrict_vocab` words; upper-cased, the first spelling wins."""
    keys = kv.index_to_key[:restrict_vocab]
    if case_insensitive:
        return {k.upper(): kv.get_index(k) for k in reversed(keys)}
    return {k: i for i, k in enumerate(keys)}


def _read_analogies(path: Path, case_insensitive: bool) -> tuple[list[tuple[str, list[tuple[str, ...]]]], int]:
    sections: list[tuple[str, list[tuple[str, ...]]]] = []
    malformed = 0
    for number, line in enumerate(_read_lines(path), start=1):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        words = line.upper().split() if case_insensitive else line.split()
        if not words:
            continue
        if not sections:
            raise UserError(f"{path}: line {number}: a question before the first `: section` line")
        if len(words) != 4:
            malformed += 1  # gensim skips these too (logged at INFO)
            continue
        sections[-1][1].append(tuple(words))
    return sections, malformed


def _read_pairs(path: Path, case_insensitive: bool) -> tuple[list[tuple[str, str, float]], int]:
    pairs, malformed = [], 0
    for line in _read_lines(path):
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) != 3 or not _is_number(parts[2]):
            malformed += 1
            continue
        a, b = (parts[0].upper(), parts[1].upper()) if case_insensitive else (parts[0], parts[1])
        pairs.append((a, b, float(parts[2])))
    return pairs, malformed


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: evaluation file does not exist (shipped ones: vocab/analogy_zh.txt, vocab/similarity_zh.txt)") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: evaluation files must be UTF-8 (byte {exc.start} is not)") from None


def _answer(kv: KeyedVectors, norms: np.ndarray, vocab: dict[str, int], questions: list[tuple[str, ...]],
            case_insensitive: bool) -> dict[str, list[str]]:
    """Predicted d for every question, by 3CosAdd (gensim's most_similar) and 3CosMul (most_similar_cosmul)."""
    n = len(norms)
    vectors = np.asarray(kv.vectors[:n])
    chunk = max(1, min(256, 4_000_000 // max(n, 1)))  # score matrices of chunk x n floats stay ~50 MB
    predictions: dict[str, list[str]] = {m: [] for m in METHODS}
    for start in range(0, len(questions), chunk):
        part = questions[start:start + chunk]
        index = np.array([[vocab[w] for w in q[:3]] for q in part])  # a, b, c
        unit = vectors[index] / norms[index][..., None]
        means = np.stack([matutils.unitvec((unit[i, 1] + unit[i, 2] - unit[i, 0]) / np.float32(3)).astype(np.float32)
                          for i in range(len(part))])
        add = (means @ vectors.T) / norms  # question-major: each question's scores are one contiguous row
        words, position = np.unique(index, return_inverse=True)  # questions of a section share their words
        shifted = (1 + ((vectors[words] / norms[words][:, None]) @ vectors.T) / norms) / 2
        position = position.reshape(index.shape)
        mul = shifted[position[:, 1]] * shifted[position[:, 2]] / (shifted[position[:, 0]] + 0.000001)
        k = min(_CANDIDATES, n)
        for method, scores in (("3cosadd", add), ("3cosmul", mul)):
            scores[np.arange(len(part))[:, None], index] = -np.inf  # the question's own words never answer
            top = np.argpartition(scores, n - k, axis=1)[:, n - k:]
            for i, q in enumerate(part):
                ranked = top[i][np.argsort(-scores[i, top[i]], kind="stable")]
                predictions[method].append(_pick(ranked, scores[i], kv, q, case_insensitive))
    return predictions


def _pick(ranked: np.ndarray, scores: np.ndarray, kv: KeyedVectors, question: tuple[str, ...], case_insensitive: bool) -> str:
    """gensim's rule: the best of the top 5 that is not a question word (in any casing), else the 5th."""
    predicted = ""
    for i in ranked:
        if scores[i] == -np.inf:
            break
        predicted = kv.index_to_key[i].upper() if case_insensitive else kv.index_to_key[i]
        if predicted not in question[:3]:
            break
    return predicted


# ---------------------------------------------------------------- report and embedding matrix

def neighbours_table(kv: KeyedVectors, words: list[str], topn: int) -> str:
    """Markdown table of each word's nearest neighbours (fastText vectors also answer unseen words)."""
    rows = ["| word | neighbours (cosine) |", "| --- | --- |"]
    for word in words:
        known = word in kv.key_to_index
        if not known and not _has_ngrams(kv):
            rows.append(f"| {word} | not in the vocabulary |")
            continue
        near = ", ".join(f"{w} ({s:.2f})" for w, s in kv.most_similar(word, topn=topn))
        rows.append(f"| {word}{'' if known else ' (unseen: from n-grams)'} | {near} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class ReportOptions:
    """Evaluation and report fields shared by the configs of the vector stages."""

    query: tuple[str, ...] = option((), "words whose nearest neighbours go into report.md, beside a few frequent ones")
    neighbours: int = option(10, "neighbours listed per word in report.md", min=1, max=100)
    restrict_vocab: int = option(RESTRICT_VOCAB, "evaluation: only the N most frequent words ask and answer (gensim's default)", min=1)
    case_insensitive: bool = option(True, "evaluation: compare words upper-cased (gensim's default)")


def finish_artifact(kv: KeyedVectors, out: Path, options: ReportOptions, analogy: list[Path],
                    similarity: list[Path]) -> tuple[dict[str, Any], str]:
    """Save vectors.txt, vectors.kv and eval.json into `out`; returns (metrics, report.md body)."""
    # Writing text holds the GIL, evaluation is mostly numpy that releases it: overlap the two, which
    # only read kv. kv.save comes after (it detaches arrays while pickling), neighbours_table last
    # (most_similar caches norms in kv, which kv.save would pickle).
    with ThreadPoolExecutor(1) as pool:
        text = pool.submit(write_word2vec_text, kv, out / VECTORS_TXT)
        result = evaluate(kv, analogy[0] if analogy else None, similarity[0] if similarity else None,
                          restrict_vocab=options.restrict_vocab, case_insensitive=options.case_insensitive)
        text.result()
    _save_kv_and_check(kv, out)
    (out / EVAL_JSON).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    frequent = _spread_words(kv)
    parts = [f"## Vectors\n{len(kv):,} words x {kv.vector_size} dimensions: `{VECTORS_TXT}` (word2vec text format) "
             f"and `{VECTORS_KV}` (gensim KeyedVectors)."]
    for header, rows in eval_tables(result):
        parts.append("\n".join([f"| {' | '.join(header)} |", "|" + " --- |" * len(header),
                                *(f"| {' | '.join(map(str, r))} |" for r in rows)]))
    if not analogy and not similarity:
        parts.append("No evaluation files given (inputs analogy / similarity; shipped: vocab/analogy_zh.txt, vocab/similarity_zh.txt).")
    parts.append("## Nearest neighbours\n" + neighbours_table(kv, [*frequent, *options.query], options.neighbours))
    return {"vocab_size": len(kv), "vector_size": kv.vector_size, **eval_metrics(result)}, "\n\n".join(parts)


def embedding_matrix(vectors: str | Path | KeyedVectors, tokens: list[str], seed: int = 0, *, pad_token: str = "[PAD]",
                     scale: float | None = None, use_ngrams: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """A float32 [len(tokens), dim] matrix whose row i is the vector of tokens[i], for an embedding layer.

    Out-of-vocabulary rows are drawn from U(-scale, scale); scale defaults to sqrt(3) x the standard
    deviation of the found vectors, so they have the same variance (Kim 2014's choice, U[-0.25, 0.25]
    for word2vec). The `pad_token` row is zeros. With fastText vectors an unseen token gets its n-gram
    vector (`use_ngrams`). stats counts found / ngram / oov / pad rows.
    """
    kv = vectors if isinstance(vectors, KeyedVectors) else load_keyed_vectors(vectors)
    matrix = np.zeros((len(tokens), kv.vector_size), dtype=np.float32)
    found = [(i, kv.key_to_index[t]) for i, t in enumerate(tokens) if t != pad_token and t in kv.key_to_index]
    if found:
        rows, index = zip(*found)
        order = np.argsort(index)  # ascending reads are kind to a memory-mapped matrix
        matrix[np.array(rows)[order]] = kv.vectors[np.array(index)[order]]
    missing = [i for i, t in enumerate(tokens) if t != pad_token and t not in kv.key_to_index]
    ngram = [i for i in missing if use_ngrams and _has_ngrams(kv)]
    for i in ngram:
        matrix[i] = kv.get_vector(tokens[i])
    oov = [i for i in missing if not ngram]  # with n-grams every missing token has a vector
    sample = matrix[[r for r, _ in found]] if found else np.asarray(kv.vectors[:10_000])
    scale = float(np.sqrt(3.0) * sample.std()) if scale is None else scale
    matrix[oov] = np.random.default_rng(seed).uniform(-scale, scale, (len(oov), kv.vector_size)).astype(np.float32)
    stats = {"tokens": len(tokens), "dim": kv.vector_size, "found": len(found), "ngram": len(ngram), "oov": len(oov),
             "pad": sum(t == pad_token for t in tokens), "oov_rate": round(len(oov) / max(len(tokens), 1), 6),
             "init_scale": round(scale, 6), "oov_examples": [tokens[i] for i in oov[:20]]}
    return matrix, stats


def _spread_words(kv: KeyedVectors, ranks: tuple[int, ...] = (20, 50, 100, 200, 500, 1000, 2000, 5000)) -> list[str]:
    """A word near each frequency rank (the very top is function words): the report samples every band."""
    words: list[str] = []
    for rank in ranks:
        word = next((w for w in kv.index_to_key[rank:rank + 200] if len(w) > 1 and w.isalpha() and w not in words), None)
        if word:
            words.append(word)
    return words


def _has_ngrams(kv: KeyedVectors) -> bool:
    return getattr(kv, "bucket", 0) > 0 and getattr(kv, "vectors_ngrams", None) is not None
