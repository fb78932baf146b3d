"""Poolers: (batch, seq, hidden) features + (batch, seq) mask → (batch, hidden). Chosen by config name."""

from __future__ import annotations

import torch
from torch import nn


class MeanPooler(nn.Module):
    """Average of the unmasked positions."""

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(features.dtype).unsqueeze(-1)  # (batch, seq, 1)
        return (features * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class AttentionPooler(nn.Module):
    """Learned weighted average, as in the original project: s = Linear(H, 1)(x), w = masked softmax(s).

    Zero-initialised, so it starts as mean pooling.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.attention = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(features).squeeze(-1)  # (batch, seq)
        scores = scores.masked_fill(~mask.bool(), torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # (batch, seq, 1)
        return (weights * features).sum(1)


class LastTokenPooler(nn.Module):
    """The hidden state of the last unmasked token (right padding): what a causal LM has read in full."""

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = mask.long().sum(1).clamp(min=1) - 1  # (batch,)
        return features[torch.arange(features.shape[0], device=features.device), last]


def build_pooler(kind: str, hidden_size: int, allowed: tuple[str, ...]) -> nn.Module:
    if kind not in allowed:
        raise ValueError(f"pooling must be one of {allowed}, got {kind!r}")
    if kind == "mean":
        return MeanPooler()
    if kind == "attention":
        return AttentionPooler(hidden_size)
    return LastTokenPooler()
