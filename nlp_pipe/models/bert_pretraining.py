"""BERT pretraining model whose MLM head projects onto the vocabulary only at masked positions.

HF's BertForMaskedLM / BertForPreTraining compute the 21k-way vocabulary projection for every
position and then ignore 85% of it; on a 4-layer model that projection costs more than the
encoder. `MaskedOnlyPretraining` wraps the HF model (its `bert` encoder and `cls` heads, same
weights, same names) and runs the head on the gathered masked positions only, as Google BERT
(gather_indexes) and UER-py do: 2.2x on CPU (docs/performance.md). Saving the wrapped HF model gives a
directory that `AutoModelForMaskedLM` / `AutoModel` load as usual.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, PreTrainedModel

from ..core.errors import UserError

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
    """Continue from a checkpoint; a missing NSP/SOP head or pooler is initialised fresh."""
    try:
        config = BertConfig.from_pretrained(str(init))
    except (OSError, ValueError) as exc:
        raise UserError(f"pretrain: init {init} is not a BERT checkpoint directory ({exc})") from None
    if config.model_type != "bert":
        raise UserError(f"pretrain: init {init} is a '{config.model_type}' model; pretrain continues BERT checkpoints only")
    return hf_class(sentence_task).from_pretrained(str(init), attn_implementation=attention)


class MaskedOnlyPretraining(nn.Module):
    """MLM (+ NSP/SOP) loss and counts, vocabulary projection at masked positions only."""

    def __init__(self, hf_model: BertForMaskedLM | BertForPreTraining) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.sentence_head = getattr(hf_model.cls, "seq_relationship", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                labels: torch.Tensor, sentence_label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        encoded = self.hf_model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        where = labels != -100
        hidden = encoded.last_hidden_state[where]  # (n_masked, hidden): the only rows worth projecting
        logits = self.hf_model.cls.predictions(hidden).float()
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
