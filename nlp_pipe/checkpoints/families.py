"""Which model families each stage takes, by the `model_type` in a checkpoint's config.json.

The Chinese checkpoints users fine-tune: BERT-architecture models (bert-base-chinese, RoBERTa-wwm-ext,
MacBERT, RBT3: model_type bert), ERNIE 3.0 (ernie), ALBERT (albert; the Chinese ones ship a BERT
tokenizer), ELECTRA discriminators (electra) and MegatronBERT (megatron-bert). Each entry below is
covered by a test with a tiny random model of that type (tests/test_model_families.py):

- finetune, extract: every family (Auto classes).
- expand: every family (input embeddings and, where there is one, the tied MLM decoder are resized).
- pretrain --init and augment --mlm: families with an MLM head our masked-only head can drive
  (an ELECTRA discriminator has none).
- distill teacher: families whose attention follows transformers' AttentionInterface, so the
  pre-softmax scores TinyBERT distils can be read (MegatronBERT's attention does not).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import UserError
from ..core.files import CONFIG_JSON

ALL = ("bert", "ernie", "albert", "electra", "megatron-bert")
MLM_HEAD = ("bert", "ernie", "albert", "megatron-bert")
SUPPORTED: dict[str, tuple[str, ...]] = {
    "finetune": ALL,
    "extract": ALL,
    "expand": ALL,
    "pretrain": MLM_HEAD,
    "augment": MLM_HEAD,
    "distill": ("bert", "ernie", "albert", "electra"),
}
_WHY = {"pretrain": "it needs an MLM head", "augment": "it needs an MLM head",
        "distill": "it reads each layer's attention scores through transformers' AttentionInterface"}


def is_classifier(architectures: list[str] | None) -> bool:
    """Whether a transformers config's `architectures` name a *ForSequenceClassification model."""
    return any(a.endswith("ForSequenceClassification") for a in architectures or [])


def model_type(checkpoint: Path) -> str:
    try:
        return str(json.loads((checkpoint / CONFIG_JSON).read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError):
        return ""  # the loader's own error says what is wrong with the directory


def require(checkpoint: Path, stage: str, role: str = "checkpoint") -> str:
    """The checkpoint's model_type, or a one-line error naming the families `stage` supports."""
    kind = model_type(checkpoint)
    if kind and kind not in SUPPORTED[stage]:
        why = f" ({_WHY[stage]})" if stage in _WHY else ""
        raise UserError(f"{stage}: {role} {checkpoint} is a '{kind}' model; {stage} takes {', '.join(SUPPORTED[stage])}"
                        f"{why}. See the model families table in README.md")
    return kind
