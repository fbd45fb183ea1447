"""The shared text encoder: one forward pass per post produces the vector every head reads.

Pooling "first+mean" gives each post two halves in one vector: the first token's state, which
fine-tuning is free to turn into whatever the heads need, and the mean of all token states, which
training keeps close to the base model's own sentence embedding (models/train.py). The heads read
both halves; topic matching reads only the mean half (`similarity_part`), because cosine similarity
to a few example phrases only works in an embedding space trained for similarity: fine-tuning the
single mean-pooled vector for sentiment and intent had dropped topic accuracy from 0.77 to 0.51 on
the team's telecom set. Pooling "mean" (artifacts trained before) gives the mean half alone.

Throughput on a CPU depends mostly on padding: posts are sorted by length and batched so that each
batch is padded only to its own longest post (dynamic padding), then results are put back in order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

E5_PREFIX = "query: "  # multilingual-e5 was trained with this prefix for symmetric tasks
POOLINGS = ("mean", "first+mean")


def resolve_encoder(name_or_path: str, cache_dir: str | os.PathLike[str]) -> str:
    """'builtin:multilingual-e5-small' builds the offline default; anything else is a hub id or a local path."""
    if name_or_path == "builtin:multilingual-e5-small":
        from models.encoder_build import build_encoder
        return str(build_encoder(cache_dir))
    return name_or_path


class TextEncoder(torch.nn.Module):
    """Tokenizer + transformer + pooling (see the module docstring)."""

    def __init__(self, name_or_path: str, max_tokens: int = 128, prefix: str = E5_PREFIX,
                 load_weights: bool = True, pooling: str = "mean") -> None:
        """load_weights=False: tokenizer only, for an encoder that will run from a cached ONNX export."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        local = Path(name_or_path).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
        self.model = (AutoModel.from_pretrained(name_or_path, local_files_only=local, add_pooling_layer=False)
                      if load_weights else None)
        self.max_tokens = max_tokens
        self.prefix = prefix
        self.hidden_size = int(AutoConfig.from_pretrained(name_or_path, local_files_only=local).hidden_size)
        self.dim = self.hidden_size * (2 if pooling == "first+mean" else 1)
        self._session: Any = None

    def use_onnxruntime(self, session: Any) -> None:
        """Compute vectors with an ONNX Runtime session of this encoder; the torch weights are released."""
        self._session = session
        self.model = None

    def vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled vectors of one tokenized batch: the single encoder call every head reads."""
        if self._session is None:
            return self(batch["input_ids"], batch["attention_mask"]).float()
        feeds = {name: batch[name].numpy() for name in ("input_ids", "attention_mask")}
        return torch.from_numpy(self._session.run(None, feeds)[0])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._padded(self._token_rows(texts))

    def _token_rows(self, texts: Sequence[str]) -> list[list[int]]:
        """Prefixed, truncated token ids per text, unpadded."""
        prefixed = [self.prefix + t for t in texts]
        return self.tokenizer(prefixed, truncation=True, max_length=self.max_tokens)["input_ids"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return mean if self.pooling == "mean" else torch.cat([hidden[:, 0], mean], dim=-1)

    def similarity_part(self, vectors: torch.Tensor) -> torch.Tensor:
        """The mean-pooled half of pooled vectors (all of them with pooling "mean"): what topics compare."""
        return vectors[:, -self.hidden_size:]

    @torch.no_grad()  # not inference_mode: the vectors may train a head (models/train.py)
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Pooled vectors for texts, in input order, batched by similar length.

        Each text is tokenized once, already truncated (a 3,000-token news text costs no more than a
        128-token one), and padded only to the longest text of its batch.
        """
        rows = self._token_rows(texts)
        order = sorted(range(len(texts)), key=lambda i: len(rows[i]))
        out = torch.empty(len(texts), self.dim)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self.vectors(self._padded([rows[i] for i in idx]))
        return out

    def _padded(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Right-padded ids and attention mask (what the tokenizer's padding=True gives), so that a text is
        tokenized once even when it is sorted by length before batching."""
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[r, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}
