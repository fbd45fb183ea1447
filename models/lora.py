"""Low-rank adapters (LoRA) for the encoder's linear layers.

Why LoRA: fine-tuning the encoder is what lifts sentiment past a frozen-encoder baseline, but the
product must ship its trained parts as small files. An adapter of rank r on a d_out x d_in layer
stores r * (d_in + d_out) numbers instead of d_in * d_out, and merges into the weights for inference,
so serving costs nothing extra.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T B^T) * alpha / r, with base frozen and B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale


def add_adapters(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float) -> list[str]:
    """Wrap every nn.Linear whose qualified name ends with one of `targets`; freeze everything else."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in targets):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, rank, alpha, dropout))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"no linear layer matches the adapter targets {targets}")
    return wrapped


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, keyed '<layer>.lora_a' / '<layer>.lora_b'."""
    return {f"{name}.{part}": getattr(module, part).detach().clone()
            for name, module in model.named_modules() if isinstance(module, LoRALinear)
            for part in ("lora_a", "lora_b")}


def merge_adapters(model: nn.Module, state: dict[str, torch.Tensor], scale: float) -> int:
    """Fold saved adapters into a plain model's weights (W += scale * B A); returns layers merged."""
    layers = sorted({key.rsplit(".", 1)[0] for key in state})
    with torch.no_grad():
        for name in layers:
            linear = model.get_submodule(name)
            linear.weight += scale * (state[f"{name}.lora_b"] @ state[f"{name}.lora_a"])
    return len(layers)
