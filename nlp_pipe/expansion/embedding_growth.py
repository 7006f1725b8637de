"""Growing a BERT checkpoint's vocabulary-sized matrices for new tokens, and proving nothing else moved.

    model = load_model(path)                          # the class in config.architectures (NSP head kept)
    before = snapshot(model)
    rows, bias, stats = initial_rows(model, pieces, "mean-chars")
    grow(model, old_size, rows, bias)                 # input embeddings, tied decoder and its bias
    model.save_pretrained(out); check_saved(out, before, old_size, len(tokenizer))

New rows start from the word's pieces as the original tokenizer cut it: `mean-chars` averages their
input-embedding rows; `random` draws rows from N(0, initializer_range) with bias 0, as a freshly
initialised BERT; `vectors` maps word2vec vectors into the embedding space with a least-squares
linear map fitted on tokens that have both (words without a vector fall back to mean-chars).

The decoder bias of a mean-chars (or vectors) word is the mean of its pieces' biases minus
`bias_shift` per extra piece. With the plain mean, a word's MLM logit starts as the mean of its
characters' logits, so its probability is about the geometric mean of theirs: a thousand words made
of common characters then take a large share of the probability mass from the characters at every
position (measured: benchmarks/expand.py). A word of k pieces stands for k predictions in one; the
shift of 1 nat per extra piece keeps that mass in check until continued pretraining sets it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..core.errors import UserError

log = logging.getLogger(__name__)

Init = Literal["mean-chars", "random", "vectors"]


def load_model(path: Path) -> Any:
    """The checkpoint as the class it was saved as (BertForPreTraining keeps its NSP head)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: no model config.json AutoConfig can read ({first}); the checkpoint must be a "
                        "HuggingFace model directory (save_pretrained), e.g. a pretrain artifact") from None
    arch = (config.architectures or [""])[0]
    cls = getattr(transformers, arch, None) if arch.startswith(("Bert", "Roberta", "Albert", "Electra")) else None
    cls = cls or transformers.AutoModelForMaskedLM
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot load the model weights as {cls.__name__} ({str(exc).splitlines()[0]})") from None
    return model.eval()


def vocab_parameters(model: Any) -> dict[str, torch.Tensor]:
    """The vocabulary-sized tensors: input embeddings, and the decoder weight and bias when present."""
    found = {"embeddings": model.get_input_embeddings().weight}
    head = model.get_output_embeddings()
    if head is not None:
        found["decoder"] = head.weight
        if getattr(head, "bias", None) is not None:
            found["decoder_bias"] = head.bias
    return found


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def initial_rows(model: Any, pieces: list[tuple[int, ...]], init: Init, *, seed: int = 0, bias_shift: float = 1.0,
                 vectors: tuple[Any, dict[str, int], list[str]] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(rows, biases, stats) for new tokens. `pieces` are each word's ids under the old tokenizer;
    `vectors` = (KeyedVectors, old vocab token -> id, each new word's spelling) for init=vectors."""
    params = vocab_parameters(model)
    emb = params["embeddings"].float()
    bias = params["decoder_bias"].float() if "decoder_bias" in params else None
    mean_rows = torch.stack([emb[list(p)].mean(0) for p in pieces]) if pieces else emb.new_zeros(0, emb.shape[1])
    mean_bias = torch.stack([bias[list(p)].mean() for p in pieces]) if pieces and bias is not None else emb.new_zeros(len(pieces))
    mean_bias = mean_bias - bias_shift * torch.tensor([len(p) - 1 for p in pieces], dtype=torch.float32)
    stats: dict[str, Any] = {}
    if init == "mean-chars":
        rows, biases = mean_rows, mean_bias
    elif init == "random":
        generator = torch.Generator().manual_seed(seed)
        std = float(getattr(model.config, "initializer_range", 0.02))
        rows = torch.randn(len(pieces), emb.shape[1], generator=generator) * std
        biases = emb.new_zeros(len(pieces))
    else:
        if vectors is None:
            raise ValueError("init=vectors needs vectors")  # the stage checks its input before this
        rows, stats = _vector_rows(emb, mean_rows, *vectors)
        biases = mean_bias
    return rows, biases, stats


def _vector_rows(emb: torch.Tensor, fallback: torch.Tensor, kv: Any, vocab: dict[str, int],
                 words: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Least-squares affine map from word2vec space to the embedding space, fitted on tokens that
    have a vector and a row (characters, mostly); words without a vector keep their mean-chars row."""
    anchors = [(i, kv.key_to_index[t]) for t, i in vocab.items()
               if t in kv.key_to_index and not t.startswith("##") and not (t.startswith("[") and t.endswith("]"))]
    dim = kv.vector_size
    if len(anchors) <= 2 * (dim + 1):
        raise UserError(f"init=vectors: only {len(anchors)} tokens of the checkpoint's vocabulary have word vectors, too few "
                        f"to fit a map from {dim} dimensions (need over {2 * (dim + 1)}); use --init mean-chars")
    x = np.hstack([kv.vectors[[k for _, k in anchors]].astype(np.float64), np.ones((len(anchors), 1))])
    y = emb[[i for i, _ in anchors]].double().numpy()
    weights, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ weights
    r2 = 1 - ((y - fitted) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    rows = fallback.clone()
    found = 0
    for i, word in enumerate(words):
        key = word if word in kv.key_to_index else word.lower() if word.lower() in kv.key_to_index else None
        if key is not None:
            rows[i] = torch.from_numpy(np.append(kv.vectors[kv.key_to_index[key]].astype(np.float64), 1.0) @ weights).float()
            found += 1
    return rows, {"vector_anchors": len(anchors), "vector_fit_r2": round(float(r2), 4), "words_with_vectors": found,
                  "words_without_vectors_mean_chars": len(words) - found}


@torch.no_grad()
def grow(model: Any, old_size: int, rows: torch.Tensor, biases: torch.Tensor) -> None:
    """Resize every vocabulary-sized matrix to old_size + len(rows) and write the new rows.
    Rows past old_size that the checkpoint carried beyond its tokenizer (padding) are replaced."""
    have = model.get_input_embeddings().weight.shape[0]
    if have < old_size:
        raise UserError(f"the checkpoint has {have} embedding rows but its tokenizer {old_size} tokens: "
                        "they do not belong together (use the tokenizer saved with the checkpoint)")
    model.resize_token_embeddings(old_size + len(rows), mean_resizing=False)
    params = vocab_parameters(model)
    params["embeddings"][old_size:] = rows.to(params["embeddings"].dtype)
    if "decoder" in params and params["decoder"] is not params["embeddings"]:  # untied head: same start
        params["decoder"][old_size:] = rows.to(params["decoder"].dtype)
    if "decoder_bias" in params:
        params["decoder_bias"][old_size:] = biases.to(params["decoder_bias"].dtype)


def check_saved(model_cls: Any, out: Path, before: dict[str, torch.Tensor], old_size: int, size: int) -> str:
    """Reload the saved model: vocabulary-sized tensors have `size` rows with the old rows bit-identical,
    the decoder is still tied, every other tensor (position/segment embeddings included) is unchanged."""
    reloaded = model_cls.from_pretrained(str(out), local_files_only=True)
    state = reloaded.state_dict()
    grown = _vocab_names(reloaded)
    for name, old in before.items():
        new = state[name]
        if name in grown:
            if new.shape[0] != size or not torch.equal(new[:old_size], old[:old_size]):
                raise RuntimeError(f"{name}: {new.shape[0]} rows for {size} tokens, or old rows changed")
        elif not torch.equal(new, old):
            raise RuntimeError(f"{name} changed ({tuple(old.shape)} -> {tuple(new.shape)})")
    params = vocab_parameters(reloaded)
    tied = "decoder" in params and params["decoder"].data_ptr() == params["embeddings"].data_ptr()
    if "decoder" in params and getattr(reloaded.config, "tie_word_embeddings", True) and not tied:
        raise RuntimeError("the MLM decoder is no longer tied to the input embeddings")
    return (f"{type(reloaded).__name__} reloads with {size} rows in {', '.join(params)}; the first {old_size} rows and "
            f"every other tensor are bit-identical{'; decoder tied' if tied else ''}")


def _vocab_names(model: Any) -> set[str]:
    params = vocab_parameters(model)
    ptrs = {t.data_ptr() for t in params.values()}
    return {name for name, tensor in model.state_dict().items() if tensor.data_ptr() in ptrs}
