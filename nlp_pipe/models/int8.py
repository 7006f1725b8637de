"""Dynamic int8 quantisation of a trained classifier for CPU inference, saved beside its float model.

    save_int8(quantize_int8(student), out)      # model_int8.pt beside the float model's save_pretrained files
    model = load_int8(out)                      # what `nlp-pipe predict --int8` runs
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import transformers
from torch import nn

from ..core.errors import UserError
from ..core.files import INT8_FILE


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with every nn.Linear dynamically quantised to int8 (CPU inference).

    Uses torch.ao.quantization.quantize_dynamic, deprecated in favour of torchao but still working in
    torch 2.13 with the default engine (torch.backends.quantized.engine: x86 or fbgemm on Intel/AMD,
    qnnpack on ARM). Such a model cannot be saved with save_pretrained: see save_int8 / load_int8."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)


def save_int8(model: nn.Module, directory: str | Path) -> Path:
    """Write `model_int8.pt` (the quantised state_dict) beside the float student saved in `directory`."""
    path = Path(directory) / INT8_FILE
    torch.save(model.state_dict(), path)
    return path


def load_int8(directory: str | Path) -> nn.Module:
    """The int8 model of `directory`: its float architecture (config.json) quantised, then model_int8.pt loaded."""
    directory = Path(directory)
    config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    if not (directory / INT8_FILE).is_file() or not config.architectures:
        raise UserError(f"{directory} has no {INT8_FILE} or no architecture in config.json; save the float "
                        f"student with save_pretrained and the int8 one with save_int8 there")
    model = quantize_int8(getattr(transformers, config.architectures[0])(config).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation while unpickling packed weights
        model.load_state_dict(torch.load(directory / INT8_FILE, map_location="cpu", weights_only=True))
    return model
