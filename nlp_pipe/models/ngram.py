"""TF-IDF over character (and word) n-grams + a linear classifier: the `baseline` stage's model.

Saved without pickle: config.json (model_type "ngram-lr"), ngrams.json (the n-gram features in
column order with their idf) and model.safetensors (coef [classes, features], intercept [classes]).
Prediction needs only numpy: counts -> (1 + log tf if sublinear) * idf -> L2 norm -> softmax of the
linear scores, which is what scikit-learn's TfidfVectorizer + LogisticRegression compute.
A binary model is stored as two rows (-w/2, +w/2), so softmax gives scikit-learn's sigmoid.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from safetensors.numpy import load_file, save_file

from ..core.files import CONFIG_JSON, NGRAMS_JSON, WEIGHTS

Analyzer = Literal["char", "word", "char+word"]
_SPACES = re.compile(r"\s\s+")


@dataclass
class NgramConfig:
    num_labels: int
    analyzer: Analyzer = "char"
    char_ngrams: tuple[int, int] = (1, 3)
    word_ngrams: tuple[int, int] = (1, 2)
    sublinear_tf: bool = True
    lowercase: bool = True
    model_type: str = field(default="ngram-lr", init=False)

    @property
    def uses_words(self) -> bool:
        return self.analyzer != "char"


def features(text: str, words: Sequence[str] | None, config: NgramConfig) -> list[str]:
    """The n-gram features of one text: "c:" + character n-grams, "w:" + space-joined word n-grams."""
    out: list[str] = []
    if config.analyzer in ("char", "char+word"):
        s = _SPACES.sub(" ", text.lower() if config.lowercase else text)
        lo, hi = config.char_ngrams
        out += ["c:" + s[i:i + n] for n in range(lo, min(hi, len(s)) + 1) for i in range(len(s) - n + 1)]
    if config.analyzer in ("word", "char+word"):
        ws = [w.lower() if config.lowercase else w for w in (words or [])]
        lo, hi = config.word_ngrams
        out += ["w:" + " ".join(ws[i:i + n]) for n in range(lo, min(hi, len(ws)) + 1) for i in range(len(ws) - n + 1)]
    return out


class NgramModel:
    def __init__(self, config: NgramConfig, ngrams: list[str], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        if coef.shape != (config.num_labels, len(ngrams)) or idf.shape != (len(ngrams),):
            raise ValueError(f"n-gram model shapes disagree: coef {coef.shape}, idf {idf.shape}, {len(ngrams)} n-grams")
        self.config, self.ngrams, self.idf = config, ngrams, idf.astype(np.float64)
        self.coef, self.intercept = coef.astype(np.float64), intercept.astype(np.float64)
        self.index = {g: i for i, g in enumerate(ngrams)}

    def probabilities(self, texts: Sequence[str], words: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """[rows, classes] probabilities; `words` (the segmented texts) is needed by word analyzers."""
        if self.config.uses_words and words is None:
            raise ValueError("this n-gram model uses words: pass the segmented texts")
        scores = np.empty((len(texts), self.config.num_labels))
        for row, text in enumerate(texts):
            counts = Counter(self.index[g] for g in features(text, words[row] if words is not None else None, self.config)
                             if g in self.index)
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (1.0 + np.log(tf) if self.config.sublinear_tf else tf) * self.idf[cols]
            norm = np.linalg.norm(values)
            values = values / norm if norm > 0 else values
            scores[row] = self.coef[:, cols] @ values + self.intercept
        scores -= scores.max(axis=1, keepdims=True)
        probs = np.exp(scores)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)

    def save(self, directory: Path) -> None:
        (directory / CONFIG_JSON).write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")
        (directory / NGRAMS_JSON).write_text(json.dumps({"ngrams": self.ngrams, "idf": self.idf.tolist()}, ensure_ascii=False),
                                             encoding="utf-8")
        save_file({"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)},
                  str(directory / WEIGHTS))

    @classmethod
    def load(cls, directory: Path) -> NgramModel:
        raw = json.loads((directory / CONFIG_JSON).read_text(encoding="utf-8"))
        raw.pop("model_type", None)
        raw["char_ngrams"], raw["word_ngrams"] = tuple(raw["char_ngrams"]), tuple(raw["word_ngrams"])
        table = json.loads((directory / NGRAMS_JSON).read_text(encoding="utf-8"))
        weights = load_file(str(directory / WEIGHTS))
        return cls(NgramConfig(**raw), list(table["ngrams"]), np.asarray(table["idf"]), weights["coef"], weights["intercept"])
