"""FocalTripletLoss: the original Remote_Scorer objective, image as anchor, captions as positive/negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import nn

# The original project's weights of its three triplet terms (trainer.py of nastyjam02/Remote_Scorer).
DEFAULT_TERM_WEIGHTS = {"random": 0.5, "hard": 2.0, "other": 0.5}


class FocalTripletLoss(nn.Module):
    """Focal triplet loss, exactly as the original project.

    For each (anchor a, positive p, negative n), all L2-normalised embeddings::

        d(x, y) = ||x − y||₂
        b       = max(d(a, p) − d(a, n) + m, 0)
        L       = mean(b · (1 + b)^γ)            m = 0.5, γ = 2

    The anchor is the image, the positive its caption. Negatives come in the named groups of
    ``trainer.negatives`` ("random", "hard", "other"), each with its own weight
    (default :data:`DEFAULT_TERM_WEIGHTS`, the original's).

    Inputs of :meth:`forward`: ``anchor`` (B, d), ``positive`` (B, d), and ``negatives`` =
    {group: (negative (k, d), owner (k,) row of the anchor each negative belongs to)}.
    Returns {"focal_<group>_loss": weight × L_group} for every non-empty group.
    Reference: Lin et al., "Focal Loss for Dense Object Detection" (2017), applied to triplets.
    """

    def __init__(self, margin: float = 0.5, gamma: float = 2.0, weights: dict[str, float] | None = None):
        super().__init__()
        self.margin = margin
        self.gamma = gamma
        self.weights = dict(DEFAULT_TERM_WEIGHTS if weights is None else weights)

    def triplet(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """(k, d) × 3 → scalar: mean of b·(1+b)^γ."""
        basic = torch.clamp(F.pairwise_distance(anchor, positive) - F.pairwise_distance(anchor, negative)
                            + self.margin, min=0.0)
        return (basic * (1.0 + basic) ** self.gamma).mean()

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negatives: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        parts = {}
        for group, (negative, owner) in negatives.items():
            if group not in self.weights:
                raise ValueError(f"FocalTripletLoss has no weight for negative group {group!r}; "
                                 f"known: {sorted(self.weights)}")
            if owner.numel() == 0:
                continue
            parts[f"focal_{group}_loss"] = self.weights[group] * self.triplet(anchor[owner], positive[owner], negative)
        return parts
