"""Projection heads: pooled backbone features → the shared embedding space."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Module):
    """[Linear → LayerNorm → ReLU → Dropout] × (layers − 1) → Linear.

    With layers=2 and hidden=out=768 this is the original project's head, and the parameter names
    (``model.0``, ``model.1``, ``model.4``) match its ``heads.safetensors`` so those load unchanged.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a projection head needs at least 1 layer, got {layers}")
        parts: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            parts += [nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            dim = hidden_dim
        parts.append(nn.Linear(dim, out_dim))
        self.model = nn.Sequential(*parts)
        for module in self.model:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.model(x)
