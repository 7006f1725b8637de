"""TextCNN (Kim, 2014) over pretrained word vectors, characters, or both, with an optional linear bag of
character n-grams beside it; saved as config.json + model.safetensors."""

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
    input: Literal["words", "chars", "both"] = "words"  # configs saved before the char stream load as words
    char_vocab_size: int = 0
    char_dim: int = 0
    char_max_len: int = 0
    embedding_dropout: float = 0.0
    ngram_vocab_size: int = 0  # 0: no n-gram bag (and configs saved before it)
    ngram_max: int = 0
    model_type: str = field(default="textcnn", init=False)


class TextCNN(nn.Module):
    """Embedding -> parallel Conv1d (one per kernel size) -> ReLU -> max over time -> dropout -> linear.

    static: the pretrained embedding is frozen; non-static: it is fine-tuned; multichannel:
    a frozen and a fine-tuned copy. Kim applies each filter to both channels and sums; since
    convolution is linear that equals one convolution over the sum of the two embeddings.
    input "chars" reads characters through an embedding trained from scratch (no segmentation, almost no
    unknown tokens); "both" runs the word and the char stream side by side, each with its own convolutions,
    and concatenates their pooled features before the output layer. embedding_dropout drops whole
    embedding vectors (2-D dropout over positions) of both streams while training.

    With ngram_vocab_size, a linear "wide" part (Cheng et al. 2016, wide & deep) adds to the logits
    the sum of one weight vector per character 1..ngram_max-gram present in the text, weighted by the
    n-gram's idf (buffer wide_idf) and L2-normalised over the text, as TF-IDF + LR weighs them. It starts at
    zero (training begins from the CNN alone) unless start_wide sets it from a fitted linear model; it
    carries the exact surface n-grams a CNN over pretrained vectors blurs, and costs one lookup per n-gram.
    """

    def __init__(self, config: TextCNNConfig, vectors: torch.Tensor | None = None, idf: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        words, chars = config.input in ("words", "both"), config.input in ("chars", "both")
        features = config.filters * len(config.kernel_sizes) * (int(words) + int(chars))
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0) if words else None
        self.tuned = None
        self.convs = None
        if self.embedding is not None:
            if vectors is not None:
                self.embedding.weight.data.copy_(vectors)
            self.embedding.weight.requires_grad = config.mode == "non-static"
            if config.mode == "multichannel":
                self.tuned = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
                self.tuned.weight.data.copy_(self.embedding.weight.data)
            self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.filters, k) for k in config.kernel_sizes)
        self.char_embedding = nn.Embedding(config.char_vocab_size, config.char_dim, padding_idx=0) if chars else None
        self.char_convs = (nn.ModuleList(nn.Conv1d(config.char_dim, config.filters, k) for k in config.kernel_sizes)
                           if chars else None)
        self.embedding_dropout = nn.Dropout1d(config.embedding_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(features, config.num_labels)
        self.wide = None
        if config.ngram_vocab_size:
            self.wide = nn.EmbeddingBag(config.ngram_vocab_size, config.num_labels, mode="sum", padding_idx=0)
            nn.init.zeros_(self.wide.weight)
            self.register_buffer("wide_idf", idf.float().clone() if idf is not None else torch.ones(config.ngram_vocab_size))

    def forward(self, input_ids: torch.Tensor | None = None, char_ids: torch.Tensor | None = None,
                ngram_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, num_labels] for word ids and/or char ids [batch, length] (0 = padding), plus the
        n-gram bag's for ngram_ids [batch, n-grams] (distinct ids, 0 = padding) when the model has one."""
        pooled = []
        if self.embedding is not None and self.convs is not None:
            if input_ids is None:
                raise ValueError("this TextCNN reads words: pass input_ids")
            input_ids = self._widen(input_ids)
            embedded = self.embedding(input_ids)
            if self.tuned is not None:
                embedded = embedded + self.tuned(input_ids)
            pooled += self._pool(embedded, input_ids, self.convs)
        if self.char_embedding is not None and self.char_convs is not None:
            if char_ids is None:
                raise ValueError("this TextCNN reads characters: pass char_ids")
            char_ids = self._widen(char_ids)
            pooled += self._pool(self.char_embedding(char_ids), char_ids, self.char_convs)
        logits = self.classifier(self.dropout(torch.cat(pooled, dim=1)))
        if self.wide is not None:
            if ngram_ids is None:
                raise ValueError("this TextCNN has an n-gram bag: pass ngram_ids")
            idf: torch.Tensor = self.wide_idf  # type: ignore[assignment]  # a buffer, typed Tensor | Module
            weights = idf[ngram_ids] * (ngram_ids != 0)
            weights = weights / weights.square().sum(dim=1, keepdim=True).sqrt().clamp(min=1e-6)
            logits = logits + self.wide(ngram_ids, per_sample_weights=weights)
        return logits

    @torch.no_grad()
    def start_wide(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start as a given linear model of the n-gram bag: weight [ngram_vocab_size, num_labels] (row 0,
        padding, is ignored) and bias [num_labels]. The convolutions' output layer starts at zero, so the
        model's first logits are exactly that linear model's and training learns what it misses."""
        if self.wide is None:
            raise ValueError("this TextCNN has no n-gram bag to start")
        self.wide.weight.copy_(weight)
        self.wide.weight[0] = 0.0
        self.classifier.weight.zero_()
        self.classifier.bias.copy_(bias)

    def _widen(self, ids: torch.Tensor) -> torch.Tensor:
        shortest = max(self.config.kernel_sizes)
        if ids.shape[1] < shortest:  # every kernel needs at least its own width
            ids = nn.functional.pad(ids, (0, shortest - ids.shape[1]))
        return ids

    def _pool(self, embedded: torch.Tensor, ids: torch.Tensor, convs: nn.ModuleList) -> list[torch.Tensor]:
        # Dropout1d on [batch, length, dim] zeroes whole positions' vectors (channels = positions)
        x = self.embedding_dropout(embedded).transpose(1, 2) if self.config.embedding_dropout else embedded.transpose(1, 2)
        # windows reaching into padding are left out of the max, so a text's logits do not depend on
        # how long the other texts of its batch are (a text shorter than a kernel keeps its first window)
        lengths = (ids != 0).sum(dim=1, keepdim=True)
        positions = torch.arange(x.shape[2], device=x.device)
        pooled = []
        for conv, k in zip(convs, self.config.kernel_sizes):
            h = torch.relu(conv(x))
            valid = positions[: h.shape[2]] < (lengths - k + 1).clamp(min=1)
            pooled.append(h.masked_fill(~valid.unsqueeze(1), 0.0).amax(dim=2))
        return pooled

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
