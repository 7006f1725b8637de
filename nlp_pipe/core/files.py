"""The names of the files artifacts hold, in one place, and the readers of the plain line formats and of a
segment artifact's dataset.

A stage declares the files it writes (`OUTPUTS` in its module, as DVC declares outs) with these
names; every reader of an artifact's file goes through the helper for its kind, so a name or a
format rule (vocab.txt splits at "\\n" only) is spelled once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

# segment / phrases
CORPUS_TXT = "corpus.txt"  # space-separated words, one text a line
DATASET_DIR = "dataset"  # a `datasets` dataset (datasets.load_from_disk)
SEGMENTER_JSON = "segmenter.json"  # how the text was cut (nlp_pipe.text.segmenter)
PHRASES_TSV = "phrases.tsv"
# vocab / phrases / expand
VOCAB_TXT = "vocab.txt"  # one token a line, index = line number
CHARS_TXT = "chars.txt"  # a TextCNN char stream's characters, one a line, index = line number
NGRAMS_TXT = "ngrams.txt"  # a TextCNN n-gram bag's character n-grams, one a line, index = line number
FREQ_TSV = "vocab.freq.tsv"
W2I_JSON = "w2i.json"
USERDICT_TXT = "jieba_userdict.txt"  # `word freq` a line (nlp_pipe.text.userdict)
WORDS_TSV = "words.tsv"
# word vectors
VECTORS_TXT = "vectors.txt"
VECTORS_KV = "vectors.kv"
EVAL_JSON = "eval.json"
# models and classifiers
CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
LABELS_JSON = "labels.json"  # classifiers: labels, threshold, max_seq_len (nlp_pipe.classifiers.labels)
METRICS_JSON = "metrics.json"
INT8_FILE = "model_int8.pt"
NGRAMS_JSON = "ngrams.json"  # baseline: the n-gram features in column order with their idf (nlp_pipe.models.ngram)
PRETRAINING_JSON = "pretraining.json"
# augment / extract
AUGMENT_STATS_JSON = "augment_stats.json"
FEATURES_NPY = "features.npy"
OFFSETS_NPY = "offsets.npy"
INDEX_JSONL = "index.jsonl"
# several processes (core.shards): each rank's part inside the staging directory, removed once merged
PARTS_DIR = ".parts"


def read_vocab(path: Path) -> list[str]:
    """The tokens of a vocab.txt, in id order. Split at "\\n" only: str.splitlines would also break at
    U+2028, which is a token of Google's Chinese vocabulary, and shift every id after it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass a vocab artifact or a vocab.txt") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: a vocab.txt must be UTF-8 (byte {exc.start} is not)") from None
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def write_vocab(path: Path, tokens: list[str]) -> None:
    """One token a line; a token with whitespace or a repeated token would shift or alias ids."""
    bad = [t for t in tokens if not t or any(ch.isspace() for ch in t)]
    if bad:
        raise UserError(f"{path.name}: tokens with whitespace cannot be stored one a line: {bad[:5]}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{path.name}: duplicate vocabulary entries")  # a bug of the caller, not user input
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    if read_vocab(path) != tokens:
        raise OSError(f"{path} does not read back as written")


def corpus_txt(source: Path, stage: str) -> Path:
    """The corpus.txt of a segment or phrases artifact, with a one-line error when it has none."""
    file = source / CORPUS_TXT
    if not file.is_file():
        raise UserError(f"{stage}: {source} has no {CORPUS_TXT}; pass a segment or phrases artifact")
    return file


def segmented_dataset(artifact: Path, stage: str, keep_in_memory: bool = False) -> Any:
    """The `datasets` dataset of a segment (or augment) artifact: text, words and label columns."""
    import datasets

    folder = artifact / DATASET_DIR
    if not folder.is_dir():
        raise UserError(f"{stage}: {artifact} is not a segment artifact (no {DATASET_DIR}/); pass text files or a segment artifact")
    return datasets.load_from_disk(str(folder), keep_in_memory=keep_in_memory)
