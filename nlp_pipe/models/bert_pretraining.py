"""BERT pretraining model whose MLM head projects onto the vocabulary only at masked positions.

HF's BertForMaskedLM / BertForPreTraining (and the other families' MLM models) compute the 21k-way vocabulary projection for every
position and then ignore 85% of it; on a 4-layer model that projection costs more than the
encoder. `MaskedOnlyPretraining` wraps the HF model (its `bert` encoder and `cls` heads, same
weights, same names) and runs the head on the gathered masked positions only, as Google BERT
(gather_indexes) and UER-py do: 2.2x on CPU (docs/performance.md). Saving the wrapped HF model gives a
directory that `AutoModelForMaskedLM` / `AutoModel` load as usual.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, PreTrainedModel

from ..core.errors import UserError

log = logging.getLogger(__name__)

# (layers, hidden, heads): Google's BERT miniatures (Turc et al. 2019) and BERT-base; FFN = 4 x hidden
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8), "base": (12, 768, 12),
}


def new_config(size: str, config_file: str, vocab_size: int, max_seq_len: int, pad_id: int) -> BertConfig:
    """A BertConfig for a model trained from scratch: a size preset, or the user's config file."""
    if config_file:
        try:
            values = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"pretrain: model_config {config_file} is not a readable JSON BertConfig ({exc})") from None
        config = BertConfig(**{**values, "vocab_size": vocab_size})
    else:
        layers, hidden, heads = PRESETS[size]
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * hidden,
                            max_position_embeddings=max(512, max_seq_len))
    config.pad_token_id = pad_id
    if config.max_position_embeddings < max_seq_len:
        raise UserError(f"pretrain: max_seq_len {max_seq_len} exceeds the model's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    return config


def hf_class(sentence_task: str) -> type[PreTrainedModel]:
    """BertForPreTraining (MLM + NSP/SOP head) with a sentence task, BertForMaskedLM without."""
    return BertForMaskedLM if sentence_task == "none" else BertForPreTraining


def create(config: BertConfig, sentence_task: str, attention: str) -> PreTrainedModel:
    config._attn_implementation = attention
    return hf_class(sentence_task)(config)


def load(init: Path, sentence_task: str, attention: str) -> PreTrainedModel:
    """Continue from a checkpoint of any family with an MLM head (nlp_pipe.checkpoints.families); a missing
    NSP/SOP head or pooler is initialised fresh. A family without SDPA support runs eager attention."""
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    cls = AutoModelForMaskedLM if sentence_task == "none" else AutoModelForPreTraining
    try:
        try:
            model, info = cls.from_pretrained(str(init), attn_implementation=attention, output_loading_info=True)
        except ValueError as exc:
            if "attn_implementation" not in str(exc) and "sdpa" not in str(exc).lower():
                raise
            model, info = cls.from_pretrained(str(init), attn_implementation="eager", output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"pretrain: init {init} cannot be loaded as {cls.__name__} ({str(exc).splitlines()[0]})") from None
    _warn_fresh(init, sentence_task, info.get("missing_keys") or [])
    return model


def _warn_fresh(init: Path, sentence_task: str, missing: list[str]) -> None:
    """One line naming the parts that start from random weights: an encoder-only checkpoint (a distill student,
    AutoModel.save_pretrained) has no MLM head, an MLM-only one no sentence head or pooler."""
    parts = {"MLM head": ("predictions",), f"{sentence_task} head": ("seq_relationship", "sop_classifier"),
             "pooler": ("pooler",)}
    fresh = [name for name, marks in parts.items() if any(m in key.split(".") for key in missing for m in marks)]
    other = [key for key in missing if not any(m in key.split(".") for marks in parts.values() for m in marks)]
    if other:
        fresh.append(f"{len(other)} other tensors (e.g. {other[0]})")
    if fresh:
        log.warning("pretrain: init %s has no %s: %s from random weights", init, " and no ".join(fresh),
                    "it starts" if len(fresh) == 1 else "they start")


def heads(hf_model: Any) -> tuple[Any, Any]:
    """(MLM prediction head: hidden -> vocabulary logits, sentence head: pooled -> 2 logits or None) of a
    BERT-family pretraining model: `cls.predictions`/`cls.seq_relationship` (BERT, ERNIE, MegatronBERT) or
    `predictions`/`sop_classifier` (ALBERT)."""
    if hasattr(hf_model, "cls") and hasattr(hf_model.cls, "predictions"):
        return hf_model.cls.predictions, getattr(hf_model.cls, "seq_relationship", None)
    if hasattr(hf_model, "predictions"):
        return hf_model.predictions, getattr(hf_model, "sop_classifier", None)
    raise UserError(f"{type(hf_model).__name__} has no MLM head this pretraining can drive "
                    "(BERT, ERNIE, MegatronBERT and ALBERT have one)")


class MaskedOnlyPretraining(nn.Module):
    """MLM (+ NSP/SOP) loss and counts, vocabulary projection at masked positions only."""

    def __init__(self, hf_model: BertForMaskedLM | BertForPreTraining) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.mlm_head, self.sentence_head = heads(hf_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                labels: torch.Tensor, sentence_label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        encoded = self.hf_model.base_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        where = labels != -100
        hidden = encoded.last_hidden_state[where]  # (n_masked, hidden): the only rows worth projecting
        logits = self.mlm_head(hidden).float()
        targets = labels[where]
        mlm_loss = F.cross_entropy(logits, targets, reduction="sum")
        out = {"mlm_loss_sum": mlm_loss.detach(), "mlm_count": where.sum()}
        if not self.training:  # a 21k-way argmax per masked token costs ~3% of a training step
            out["mlm_correct"] = (logits.argmax(-1) == targets).sum()
        loss = mlm_loss / out["mlm_count"].clamp(min=1)
        if self.sentence_head is not None and sentence_label is not None:
            sentence_logits = self.sentence_head(encoded.pooler_output).float()
            used = sentence_label != -100  # MLM-only packed blocks carry no sentence label
            sentence_loss = F.cross_entropy(sentence_logits[used], sentence_label[used], reduction="sum")
            out |= {"sentence_loss_sum": sentence_loss.detach(), "sentence_count": used.sum(),
                    "sentence_correct": (sentence_logits.argmax(-1)[used] == sentence_label[used]).sum()}
            loss = loss + sentence_loss / out["sentence_count"].clamp(min=1)
        out["loss"] = loss
        return out
