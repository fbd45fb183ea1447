"""The shared text encoder: one forward pass per post produces the vector every head reads.

Throughput on a CPU depends mostly on padding: posts are sorted by length and batched so that each
batch is padded only to its own longest post (dynamic padding), then results are put back in order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModel, AutoTokenizer

E5_PREFIX = "query: "  # multilingual-e5 was trained with this prefix for symmetric tasks


def resolve_encoder(name_or_path: str, cache_dir: str | os.PathLike[str]) -> str:
    """'builtin:multilingual-e5-small' builds the offline default; anything else is a hub id or a local path."""
    if name_or_path == "builtin:multilingual-e5-small":
        from models.encoder_build import build_encoder
        return str(build_encoder(cache_dir))
    return name_or_path


class TextEncoder(torch.nn.Module):
    """Tokenizer + transformer + mean pooling."""

    def __init__(self, name_or_path: str, max_tokens: int = 128, prefix: str = E5_PREFIX) -> None:
        super().__init__()
        local = Path(name_or_path).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
        self.model = AutoModel.from_pretrained(name_or_path, local_files_only=local, add_pooling_layer=False)
        self.max_tokens = max_tokens
        self.prefix = prefix

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer([self.prefix + t for t in texts], padding=True, truncation=True,
                              max_length=self.max_tokens, return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    @torch.no_grad()  # not inference_mode: the vectors may train a head (models/train.py)
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Mean-pooled vectors for texts, in input order, batched by similar length."""
        lengths = [len(self.tokenizer.tokenize(self.prefix + t)[: self.max_tokens]) for t in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        out = torch.empty(len(texts), self.dim)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenize([texts[i] for i in idx])
            out[idx] = self(batch["input_ids"], batch["attention_mask"]).float()
        return out

    def quantize_int8(self) -> None:
        """Dynamic int8 quantization of the linear layers: faster on CPUs, measured by `triage eval`."""
        self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
