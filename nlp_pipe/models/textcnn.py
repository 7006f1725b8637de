"""TextCNN (Kim, 2014) over pretrained word vectors, saved as config.json + model.safetensors."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"


@dataclass
class TextCNNConfig:
    vocab_size: int
    embedding_dim: int
    num_labels: int
    mode: Literal["static", "non-static", "multichannel"] = "static"
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    filters: int = 100
    dropout: float = 0.5
    max_len: int = 128
    model_type: str = field(default="textcnn", init=False)


class TextCNN(nn.Module):
    """Embedding -> parallel Conv1d (one per kernel size) -> ReLU -> max over time -> dropout -> linear.

    static: the pretrained embedding is frozen; non-static: it is fine-tuned; multichannel:
    a frozen and a fine-tuned copy. Kim applies each filter to both channels and sums; since
    convolution is linear that equals one convolution over the sum of the two embeddings.
    """

    def __init__(self, config: TextCNNConfig, vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        if vectors is not None:
            self.embedding.weight.data.copy_(vectors)
        self.embedding.weight.requires_grad = config.mode == "non-static"
        self.tuned = None
        if config.mode == "multichannel":
            self.tuned = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
            self.tuned.weight.data.copy_(self.embedding.weight.data)
        self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.filters, k) for k in config.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.filters * len(config.kernel_sizes), config.num_labels)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_labels] for word ids [batch, length] (0 = padding)."""
        shortest = max(self.config.kernel_sizes)
        if input_ids.shape[1] < shortest:  # every kernel needs at least its own width
            input_ids = nn.functional.pad(input_ids, (0, shortest - input_ids.shape[1]))
        embedded = self.embedding(input_ids)
        if self.tuned is not None:
            embedded = embedded + self.tuned(input_ids)
        x = embedded.transpose(1, 2)
        # windows reaching into padding are left out of the max, so a text's logits do not depend on
        # how long the other texts of its batch are (a text shorter than a kernel keeps its first window)
        lengths = (input_ids != 0).sum(dim=1, keepdim=True)
        positions = torch.arange(x.shape[2], device=x.device)
        pooled = []
        for conv, k in zip(self.convs, self.config.kernel_sizes):
            h = torch.relu(conv(x))
            valid = positions[: h.shape[2]] < (lengths - k + 1).clamp(min=1)
            pooled.append(h.masked_fill(~valid.unsqueeze(1), 0.0).amax(dim=2))
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))

    def save(self, directory: Path) -> None:
        (directory / CONFIG_JSON).write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))

    @classmethod
    def load(cls, directory: Path) -> TextCNN:
        raw = json.loads((directory / CONFIG_JSON).read_text(encoding="utf-8"))
        raw.pop("model_type", None)
        raw["kernel_sizes"] = tuple(raw["kernel_sizes"])
        model = cls(TextCNNConfig(**raw))
        model.load_state_dict(load_file(str(directory / WEIGHTS)))  # safetensors: no pickle from user paths
        return model.eval()
