"""Loading local Hugging Face checkpoints in the stages: one-line errors for what is missing, and quiet about
weights a model class leaves out or adds (an MLM head skipped, a new classifier), which the stages expect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.files import CONFIG_JSON
from . import families

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@contextmanager
def quiet() -> Iterator[None]:
    """transformers' warnings off for the block (its verbosity is global), restored afterwards."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def require(checkpoint: Path, stage: str) -> None:
    """A one-line error unless `checkpoint` is a directory with config.json and its tokenizer files."""
    if not checkpoint.is_dir():
        raise UserError(f"{stage}: checkpoint {checkpoint} is not a directory; pass a HuggingFace model directory")
    missing = [what for what, files in (("config.json", ("config.json",)), ("tokenizer (tokenizer.json or vocab.txt)", TOKENIZER_FILES))
               if not any((checkpoint / f).is_file() for f in files)]
    if missing:
        raise UserError(f"{stage}: checkpoint {checkpoint} has no {' and no '.join(missing)}; pass a HuggingFace model "
                        "directory saved with its tokenizer (e.g. a pretrain artifact)")


def load_tokenizer(path: Path) -> Any:
    """The directory's fast tokenizer, from local files only."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: AutoTokenizer cannot load a tokenizer there ({_first_line(exc)}); the checkpoint must be a "
                        "HuggingFace directory with its tokenizer (tokenizer.json or vocab.txt)") from None
    if not tokenizer.is_fast:
        raise UserError(f"{path} has no fast tokenizer (save it with tokenizer.json)")
    return tokenizer


def load_model(cls: Any, path: Path, **kwargs: Any) -> Any:
    """`cls.from_pretrained(path, **kwargs)` from local files, quietly, with a one-line error when it fails."""
    with quiet():
        try:
            return cls.from_pretrained(str(path), local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot load {path} as {cls.__name__} ({_first_line(exc)})") from None


def check_vocabulary(tokenizer: Any, model: Any, stage: str, checkpoint: Path) -> None:
    """Every id the tokenizer can emit needs a row in the model's input embeddings: a tokenizer grown on its own
    (tokenizer.add_tokens without resize_token_embeddings) trains and saves fine, then fails on the first text
    containing one of its new words. `nlp-pipe expand` grows both together."""
    rows = model.get_input_embeddings().num_embeddings
    ids = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    if ids > rows:
        raise UserError(f"{stage}: the tokenizer of {checkpoint} has {ids:,} token ids but the model only {rows:,} embedding "
                        f"rows: a text with one of the {ids - rows:,} tokens past them would fail. Grow the tokenizer and the "
                        "embeddings together with `nlp-pipe expand`")


def load_checked(cls: Any, checkpoint: Path, stage: str, role: str = "checkpoint") -> tuple[Any, Any]:
    """Tokenizer and `cls` model of `checkpoint`, in eval mode, once it is a model directory of a family `stage`
    takes and its tokenizer's every id has an embedding row (one-line errors otherwise)."""
    tokenizer = checked_tokenizer(checkpoint, stage, role)
    model = load_model(cls, checkpoint).eval()
    check_vocabulary(tokenizer, model, stage, checkpoint)
    return tokenizer, model


def checked_tokenizer(checkpoint: Path, stage: str, role: str = "checkpoint") -> Any:
    """The tokenizer of `checkpoint` once it is a model directory (`require`) of a family `stage` takes, with
    the padding token every stage that reads a checkpoint pads its batches with."""
    require(checkpoint, stage)
    families.require(checkpoint, stage, role)
    tokenizer = load_tokenizer(checkpoint)
    if tokenizer.pad_token_id is None:
        raise UserError(f"{stage}: the tokenizer in {checkpoint} has no padding token")
    return tokenizer


def max_positions(checkpoint: Path) -> int:
    """The longest input `checkpoint`'s position embeddings take (config.json; BERT's 512 when it does not say)."""
    return int(json.loads((checkpoint / CONFIG_JSON).read_text(encoding="utf-8")).get("max_position_embeddings", 512))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
