"""Word-vector evaluation: analogies (3CosAdd and 3CosMul per section) and word-pair similarity.

3CosAdd and the similarity correlations are gensim's `KeyedVectors.evaluate_word_analogies` and
`evaluate_word_pairs`: only the `restrict_vocab` most frequent words (default 300,000) are asked and may
answer, words are compared upper-cased unless `case_insensitive=False`, and a question with a word
outside that vocabulary is skipped -- counted here as `oov_skipped` per section, never hidden. gensim has
no 3CosMul evaluation (its TODO); that one is ours (Levy & Goldberg 2014, gensim's `most_similar_cosmul`
rule) over the same questions, vectorised over a section's questions. gensim answers one question at a
time: 1,000 questions over 50,000 random 100-d vectors took 19.0 s here against 5.5 s when 3CosAdd was
vectorised with 3CosMul (median of 3 on the shared 2-core machine); the price of one answer to one question.

    evaluate(kv, analogy="vocab/analogy_zh.txt", similarity="vocab/similarity_zh.txt")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from gensim.models import KeyedVectors

from ..core.errors import UserError
from .word2vec_text import is_number

log = logging.getLogger(__name__)

RESTRICT_VOCAB = 300_000  # gensim's default for evaluate_word_analogies / evaluate_word_pairs
METHODS = ("3cosadd", "3cosmul")
_CANDIDATES = 5  # gensim looks at the top 5 answers, skipping the question's own words


def evaluate(kv: KeyedVectors, analogy: str | Path | None = None, similarity: str | Path | None = None, *,
             restrict_vocab: int = RESTRICT_VOCAB, case_insensitive: bool = True) -> dict[str, Any]:
    """{"analogy": ..., "similarity": ...} (None for a file not given): what eval.json holds."""
    return {"analogy": evaluate_analogies(kv, analogy, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
            if analogy else None,
            "similarity": evaluate_similarity(kv, similarity, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
            if similarity else None}


def evaluate_analogies(kv: KeyedVectors, path: str | Path, *, restrict_vocab: int = RESTRICT_VOCAB,
                       case_insensitive: bool = True) -> dict[str, Any]:
    """Accuracy per section and overall for 3CosAdd (gensim) and 3CosMul on a `: section` / `a b c d` file:
    "a is to b as c is to ?" answered with d."""
    vocab = _ok_vocab(kv, restrict_vocab, case_insensitive)
    sections, malformed = _read_analogies(Path(path), case_insensitive)
    by_gensim = _gensim_sections(kv, path, sections, restrict_vocab, case_insensitive)
    norms = np.linalg.norm(np.asarray(kv.vectors[:restrict_vocab]), axis=1)  # == gensim's fill_norms
    result_sections = []
    for (name, questions), answered in zip(sections, by_gensim):
        asked = [q for q in questions if all(w in vocab for w in q)]
        if len(asked) != len(answered["correct"]) + len(answered["incorrect"]):
            raise RuntimeError(f"{path}: section {name}: gensim asked other questions than this reading of the file")
        row: dict[str, Any] = {"section": name, "questions": len(questions), "evaluated": len(asked),
                               "oov_skipped": len(questions) - len(asked)}
        cosmul = _cosmul(kv, norms, vocab, asked, case_insensitive) if asked else []
        for method, correct in (("3cosadd", len(answered["correct"])), ("3cosmul", sum(p == q[3] for p, q in zip(cosmul, asked)))):
            row[method] = {"correct": correct, "accuracy": round(correct / len(asked), 6) if asked else None}
        row["wrong_examples"] = [f"{' '.join(q[:3])} -> not {q[3]}" for q in answered["incorrect"][:5]]
        result_sections.append(row)
    total: dict[str, Any] = {key: sum(s[key] for s in result_sections) for key in ("questions", "evaluated", "oov_skipped")}
    for method in METHODS:
        correct = sum(s[method]["correct"] for s in result_sections)
        total[method] = {"correct": correct, "accuracy": round(correct / total["evaluated"], 6) if total["evaluated"] else None}
    return {"file": str(path), "restrict_vocab": restrict_vocab, "case_insensitive": case_insensitive,
            "malformed_lines": malformed, "sections": result_sections, "total": total}


def _gensim_sections(kv: KeyedVectors, path: str | Path, sections: list[tuple[str, list[tuple[str, ...]]]],
                     restrict_vocab: int, case_insensitive: bool) -> list[dict[str, Any]]:
    """gensim's correct and incorrect questions of each section (none asked when the file has no question:
    gensim divides by the question count)."""
    if not any(questions for _, questions in sections):
        return [{"section": name, "correct": [], "incorrect": []} for name, _ in sections]
    _, answered = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
    answered = answered[:-1]  # its last section is the total
    if [a["section"] for a in answered] != [name for name, _ in sections]:
        raise RuntimeError(f"{path}: gensim read other sections than this reading of the file")
    return answered


def evaluate_similarity(kv: KeyedVectors, path: str | Path, *, restrict_vocab: int = RESTRICT_VOCAB,
                        case_insensitive: bool = True) -> dict[str, Any]:
    """Spearman (and Pearson) correlation of cosine similarity with the scores of `word1 word2 score` lines
    (gensim's evaluate_word_pairs, fields split on any whitespace). Lines starting with # are comments;
    correlations are None below 3 evaluated pairs or when either side is constant."""
    import warnings

    from scipy.stats import ConstantInputWarning

    vocab = _ok_vocab(kv, restrict_vocab, case_insensitive)
    pairs, malformed = _read_pairs(Path(path), case_insensitive)
    if not pairs:  # an analogy file without questions stops too; this one printed an empty table, exit 0
        raise UserError(f"{path}: no `word word score` line ({malformed} malformed); a similarity file holds one pair and "
                        "its score a line")
    if malformed:
        log.warning("%s: %d malformed line(s) skipped (a line is `word word score`)", path, malformed)
    evaluated = sum(a in vocab and b in vocab for a, b, _ in pairs)
    spearman = pearson = None
    if evaluated > 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)  # a constant side: nan, reported as None
            pearson_result, spearman_result, _ = kv.evaluate_word_pairs(str(path), delimiter=None, restrict_vocab=restrict_vocab,
                                                                        case_insensitive=case_insensitive)
        spearman, pearson = (None if np.isnan(v) else round(float(v), 6) for v in (spearman_result[0], pearson_result[0]))
    return {"file": str(path), "restrict_vocab": restrict_vocab, "case_insensitive": case_insensitive,
            "pairs": len(pairs), "evaluated": evaluated, "oov_skipped": len(pairs) - evaluated,
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
        if len(parts) != 3 or not is_number(parts[2]):
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


def _cosmul(kv: KeyedVectors, norms: np.ndarray, vocab: dict[str, int], questions: list[tuple[str, ...]],
            case_insensitive: bool) -> list[str]:
    """Predicted d for every question by 3CosMul (most_similar_cosmul's score), with gensim's answer rule."""
    n = len(norms)
    vectors = np.asarray(kv.vectors[:n])
    chunk = max(1, min(256, 4_000_000 // max(n, 1)))  # score matrices of chunk x n floats stay ~50 MB
    predictions: list[str] = []
    for start in range(0, len(questions), chunk):
        part = questions[start:start + chunk]
        index = np.array([[vocab[w] for w in q[:3]] for q in part])  # a, b, c
        words, position = np.unique(index, return_inverse=True)  # questions of a section share their words
        shifted = (1 + ((vectors[words] / norms[words][:, None]) @ vectors.T) / norms) / 2
        position = position.reshape(index.shape)
        scores = shifted[position[:, 1]] * shifted[position[:, 2]] / (shifted[position[:, 0]] + 0.000001)
        k = min(_CANDIDATES, n)
        scores[np.arange(len(part))[:, None], index] = -np.inf  # the question's own words never answer
        top = np.argpartition(scores, n - k, axis=1)[:, n - k:]
        for i, q in enumerate(part):
            ranked = top[i][np.argsort(-scores[i, top[i]], kind="stable")]
            predictions.append(_pick(ranked, scores[i], kv, q, case_insensitive))
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
