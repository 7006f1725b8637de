"""Stage registry: CLI name -> module. Modules are imported on first use so `nlp-pipe --help` stays fast.

What a stage module defines is described in nlp_pipe.core.contract.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..core.errors import UserError, did_you_mean

STAGES = {
    "segment": "segment",
    "vocab": "vocab",
    "phrases": "phrases",
    "word2vec": "word2vec",
    "import-vectors": "import_vectors",
    "textcnn": "textcnn",
    "baseline": "baseline",
    "pretrain": "pretrain",
    "expand": "expand",
    "finetune": "finetune",
    "extract": "extract",
    "augment": "augment",
    "distill": "distill",
    "export": "export",
}


def load(name: str) -> ModuleType:
    if name not in STAGES:
        raise UserError(f"unknown stage '{name}'{did_you_mean(name, STAGES)}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{STAGES[name]}")
