"""TinyBERT distillation (Jiao et al. 2020): student shapes, layer mapping and the losses.

    config = student_config(teacher.config, "tinybert4")           # or a JSON file of BertConfig fields
    student = BertForSequenceClassification(config)
    distiller = Distiller(teacher, student, mode="intermediate")    # later: mode="prediction"
    trainer.fit(distiller, data, collate=collate, forward=lambda model, batch: model(**batch))
    student.save_pretrained(out)                                    # the projections are not part of it

`Distiller` holds the frozen teacher (eval mode, no gradients), the student and the learned
projections; its forward returns {"loss": weighted total, "<name>_loss": each active component,
unweighted}. Its state_dict holds the student and projections only: checkpoints stay the student's
size and the teacher is reloaded from its own directory.

Losses follow the official TinyBERT code (huawei-noah/Pretrained-Language-Model, general_distill.py
and task_distill.py):
- attention: MSE between the *pre-softmax* scores QK^T/sqrt(d) (mask added) of student layer m and
  teacher layer g(m), every head. HF only outputs post-softmax probabilities, so the models run a
  registered attention function ("nlp_pipe_scores": eager attention that reports the scores) while
  distilling. It is not stored in config.json: a saved student loads with the default attention.
  Heads must match in number (TinyBERT compares head by head).
- embedding / hidden: MSE(H_S W + b, H_T) for the embedding output and every mapped layer. The
  official code uses ONE projection (`fit_dense`) for the embeddings and all layers; that is
  projection="shared" (the default); "per_layer" gives each its own; "identity" none (equal sizes).
- prediction: soft cross-entropy sum(-softmax(z_T/t) * log_softmax(z_S/t)) over classes, averaged
  over the other dimensions, no t^2 factor (the official code also divides by the class count).
- per-layer losses are summed over layers, as in the official code.
Deviation: TinyBERT averages over every position, padding included (zeroing padded scores with
`torch.where(score <= -1e2, 0, score)`). Here padded tokens are excluded: hidden and embedding MSE
average over real tokens, attention MSE over (real query, real key) pairs, so a loss does not
depend on how much padding a batch has. On packed batches without padding both agree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface, BertConfig, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ..core.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, int]] = {
    "tinybert4": {"num_hidden_layers": 4, "hidden_size": 312, "intermediate_size": 1200, "num_attention_heads": 12},
    "tinybert6": {"num_hidden_layers": 6, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
}
SHARED_FIELDS = ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id")  # teacher's, always
SCORES_ATTENTION = "nlp_pipe_scores"
DEFAULT_WEIGHTS = {"embedding": 1.0, "hidden": 1.0, "attention": 1.0, "prediction": 1.0, "hard": 0.0}
Mode = Literal["intermediate", "prediction", "both"]
Projection = Literal["shared", "per_layer", "identity"]


def student_config(teacher_config: BertConfig, preset: str | Path) -> BertConfig:
    """The teacher's config (vocabulary, positions, labels, dropout ...) with a student's shape.

    `preset`: a PRESETS name or a JSON file of BertConfig fields; the fields in SHARED_FIELDS always
    come from the teacher, since distillation feeds both models the same ids."""
    if str(preset) in PRESETS:
        fields = dict(PRESETS[str(preset)])
    elif str(preset).endswith(".json"):
        try:
            fields = json.loads(Path(preset).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"student config {preset} is not a readable JSON object of BertConfig fields ({exc})") from None
        known = BertConfig().to_dict()
        for key, value in fields.items():
            if key not in known:
                raise UserError(f"student config {preset}: '{key}' is not a BertConfig field{did_you_mean(key, known)}")
            if key in SHARED_FIELDS and value != getattr(teacher_config, key):
                raise UserError(f"student config {preset}: {key}={value} differs from the teacher's "
                                f"{getattr(teacher_config, key)}; the student must share it (drop the field)")
    else:
        raise UserError(f"unknown student preset '{preset}'{did_you_mean(str(preset), PRESETS)}: choose one of "
                        f"{', '.join(PRESETS)} or give a .json file of BertConfig fields")
    config = BertConfig.from_dict({**teacher_config.to_dict(), **fields, "architectures": None})
    if config.hidden_size % config.num_attention_heads:
        raise UserError(f"student hidden_size {config.hidden_size} is not a multiple of "
                        f"num_attention_heads {config.num_attention_heads}")
    return config


def student_for(teacher_config: BertConfig, shape: str) -> BertConfig:
    """`student_config` of a preset or a .json file, with the teacher's number of attention heads when they differ
    (attention scores are compared head by head): TinyBERT-4 of a 4-head BERT-mini has 4 heads of 78."""
    config = student_config(teacher_config, Path(shape) if shape.endswith(".json") else shape)
    heads = teacher_config.num_attention_heads
    if config.num_attention_heads != heads:
        if config.hidden_size % heads:
            raise UserError(f"distill: the student's hidden size {config.hidden_size} does not split into the teacher's "
                            f"{heads} attention heads; choose a student shape whose hidden size it divides")
        # a preset follows the teacher quietly; heads the user wrote in a shape file are worth a word on the terminal
        log.log(logging.WARNING if shape.endswith(".json") else logging.INFO,
                "the student takes the teacher's %d attention heads (its shape had %d): attention scores are "
                "compared head by head", heads, config.num_attention_heads)
        config.num_attention_heads = heads
    return config


def layer_map(student_layers: int, teacher_layers: int, mapping: Sequence[int] | None = None) -> list[int]:
    """Teacher layer (1..N) that student layer m = 1..M learns from; the embeddings (0) map to 0.

    Uniform by default: g(m) = floor(m * N / M), e.g. 4 -> 12 gives [3, 6, 9, 12]. When M does not
    divide N the floor spreads the gaps unevenly (3 -> 8 gives [2, 5, 8]); the last student layer
    always learns from the last teacher layer. `mapping` overrides it: M increasing layers in 1..N."""
    if not 1 <= student_layers <= teacher_layers:
        raise UserError(f"a student of {student_layers} layers cannot be mapped onto a teacher of {teacher_layers}: give a "
                        f"student with at most {teacher_layers} layers, e.g. --student-shape FILE.json holding "
                        f'{{"num_hidden_layers": {teacher_layers}, "hidden_size": ..., "intermediate_size": ...}} '
                        "(pipelines/students/ has one), or a larger teacher")
    if mapping is None:
        return [m * teacher_layers // student_layers for m in range(1, student_layers + 1)]
    mapping = [int(layer) for layer in mapping]
    if (len(mapping) != student_layers or any(b <= a for a, b in zip(mapping, mapping[1:]))
            or mapping[0] < 1 or mapping[-1] > teacher_layers):
        raise UserError(f"layer mapping {mapping}: give {student_layers} increasing teacher layers "
                        f"between 1 and {teacher_layers} (one per student layer)")
    return mapping


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """sum over classes of -softmax(z_T/t) * log_softmax(z_S/t), averaged over the other dimensions."""
    targets = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1).mean()


def _scores_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **_: object):
    """Eager attention that reports the masked pre-softmax scores instead of the probabilities."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), scores


AttentionInterface.register(SCORES_ATTENTION, _scores_attention)
AttentionMaskInterface.register(SCORES_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


class Distiller(nn.Module):
    """Teacher (frozen) + student + projections; forward(**batch) -> {"loss", "<component>_loss"}.

    mode: "intermediate" (embedding + hidden + attention: general distillation and the first step of
    task distillation), "prediction" (soft cross-entropy on the logits, plus hard-label cross-entropy
    when weights["hard"] > 0 and the batch has labels), or "both". Models are HF BERTs: BertModel,
    BertForMaskedLM, BertForPreTraining, BertForSequenceClassification; intermediate mode runs only
    their encoders (`base_model`), prediction mode needs heads with the same `logits` shape.
    `weights` overrides entries of DEFAULT_WEIGHTS. Under DDP in intermediate mode the student's head
    (and pooler) get no gradient: use find_unused_parameters=True.
    """

    def __init__(self, teacher: PreTrainedModel, student: PreTrainedModel, *, mode: Mode = "intermediate",
                 mapping: Sequence[int] | None = None, projection: Projection = "shared",
                 temperature: float = 1.0, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        t, s = teacher.config, student.config
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise UserError(f"unknown distillation loss weights {sorted(unknown)}; known: {', '.join(DEFAULT_WEIGHTS)}")
        if mode not in ("intermediate", "prediction", "both"):
            raise UserError(f"distillation mode '{mode}': choose intermediate, prediction or both")
        if temperature <= 0:
            raise UserError(f"distillation temperature must be > 0, got {temperature}")
        self.teacher, self.student = teacher.eval().requires_grad_(False), student
        self.temperature = temperature
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.intermediate, self.prediction = mode != "prediction", mode != "intermediate"
        self.layers = layer_map(s.num_hidden_layers, t.num_hidden_layers, mapping) if self.intermediate else []
        self.projections = nn.ModuleList()
        if self.prediction and (teacher.base_model is teacher or student.base_model is student):
            raise UserError("prediction-layer distillation needs teacher and student with heads (logits), not bare BertModels")
        if self.intermediate:
            if s.num_attention_heads != t.num_attention_heads:
                raise UserError(f"attention distillation compares head by head: the student has {s.num_attention_heads} "
                                f"heads, the teacher {t.num_attention_heads}; give the student as many heads")
            if projection == "identity" and s.hidden_size != t.hidden_size:
                raise UserError(f"projection 'identity' needs equal hidden sizes (student {s.hidden_size}, "
                                f"teacher {t.hidden_size}); use 'shared' or 'per_layer'")
            if projection not in ("shared", "per_layer", "identity"):
                raise UserError(f"projection '{projection}': choose shared, per_layer or identity")
            count = {"shared": 1, "per_layer": len(self.layers) + 1, "identity": 0}[projection]
            self.projections.extend(nn.Linear(s.hidden_size, t.hidden_size) for _ in range(count))
            for model in (teacher, student):
                model.set_attn_implementation(SCORES_ATTENTION)
                if model.config._attn_implementation != SCORES_ATTENTION:  # the family ignores AttentionInterface
                    raise UserError(f"{type(model).__name__} does not report attention scores through transformers' "
                                    "AttentionInterface; attention distillation needs a family that does (bert, ernie, "
                                    "albert, electra)")
        self.register_state_dict_post_hook(_drop_teacher)
        self.register_load_state_dict_post_hook(_teacher_not_missing)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # no dropout in the targets
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if self.intermediate:
            inputs.update(output_hidden_states=True, output_attentions=True)
        with torch.no_grad():
            teacher_out = self._run(self.teacher, inputs)
        student_out = self._run(self.student, inputs)
        losses: dict[str, torch.Tensor] = {}
        if self.intermediate:
            real = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool()
            losses["embedding_loss"] = _token_mse(self._project(0, student_out.hidden_states[0]), teacher_out.hidden_states[0], real)
            losses["hidden_loss"] = _total(_token_mse(self._project(m, student_out.hidden_states[m]), teacher_out.hidden_states[g], real)
                                        for m, g in enumerate(self.layers, start=1))
            pairs = (real[:, None, :, None] & real[:, None, None, :]).expand_as(student_out.attentions[0])
            losses["attention_loss"] = _total(_score_mse(student_out.attentions[m - 1], teacher_out.attentions[g - 1], pairs)
                                           for m, g in enumerate(self.layers, start=1))
        if self.prediction:
            losses["prediction_loss"] = soft_cross_entropy(student_out.logits, teacher_out.logits, self.temperature)
            if self.weights["hard"] > 0 and labels is not None:
                logits = student_out.logits.float()
                losses["hard_loss"] = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1))
        total = _total(self.weights[name.removesuffix("_loss")] * value for name, value in losses.items())
        return {"loss": total, **losses}

    def _run(self, model: PreTrainedModel, inputs: dict):
        return (model if self.prediction else model.base_model)(**inputs)

    def _project(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        if not self.projections:
            return hidden
        return self.projections[min(index, len(self.projections) - 1)](hidden)


def _total(values: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of loss tensors (per-layer losses add up, as in the official code)."""
    return torch.stack(list(values)).sum()


def _token_mse(student: torch.Tensor, teacher: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student[real].float(), teacher[real].float())


def _score_mse(student: torch.Tensor, teacher: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    # where() on each side before subtracting: masked scores are ~finfo.min and may be -inf in fp16
    zero = student.new_zeros(())
    diff = torch.where(pairs, student, zero).float() - torch.where(pairs, teacher, zero).float()
    return diff.square().sum() / pairs.sum().clamp(min=1)


def _drop_teacher(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[key]


def _teacher_not_missing(module: nn.Module, incompatible) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if ".teacher." not in "." + k]
