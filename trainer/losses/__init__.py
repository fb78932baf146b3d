"""Training losses, one module each, and the weighted sum the training step logs term by term.

Every loss returns a dict of named parts; the parts whose name ends in ``_loss`` are summed (times the
loss's configured weight) into the training loss, the others (temperature, bias) are only logged.
Under DDP the :class:`Objective` can gather the contrastive losses' embeddings from all processes
(``trainer.distributed``); the focal triplet loss stays per process.
"""

from __future__ import annotations

import torch

from trainer.distributed import gather_contrastive, string_keys
from trainer.losses.contrastive import InfoNCELoss, SigLIPLoss
from trainer.losses.focal_triplet import DEFAULT_TERM_WEIGHTS, FocalTripletLoss

LOSS_NAMES = ("focal_triplet", "infonce", "siglip")

__all__ = ["DEFAULT_TERM_WEIGHTS", "LOSS_NAMES", "FocalTripletLoss", "InfoNCELoss", "Objective", "SigLIPLoss",
           "parse_loss_spec"]


def parse_loss_spec(spec: str, weights: dict[str, float] | None = None) -> dict[str, float]:
    """``"infonce+focal_triplet"`` (+ optional weights) → {"infonce": 1.0, "focal_triplet": 1.0}."""
    names = [name.strip() for name in spec.split("+") if name.strip()]
    unknown = [name for name in names + list(weights or {}) if name not in LOSS_NAMES]
    if not names or unknown:
        raise ValueError(f"loss {spec!r}: unknown or empty loss names {unknown}; choose from {list(LOSS_NAMES)} "
                         f"joined by '+'")
    return {name: float((weights or {}).get(name, 1.0)) for name in names}


class Objective:
    """The selected losses on one batch of embeddings (see ``trainer.data.TripletBatch`` for the indices).

    ``gather=True`` (an initialised process group is required): InfoNCE and SigLIP run on the global batch
    of all processes, deduplicated by image path and caption text (``trainer.distributed``); every process
    computes the same contrastive value, and DDP's gradient mean gives the single-process gradient.
    """

    def __init__(self, weights: dict[str, float], focal: FocalTripletLoss | None = None,
                 contrastive_negatives: bool = True, gather: bool = False):
        self.weights = weights
        self.focal = focal or FocalTripletLoss()
        self.infonce = InfoNCELoss()
        self.siglip = SigLIPLoss()
        self.contrastive_negatives = contrastive_negatives
        self.gather = gather

    @property
    def uses_logit_scale(self) -> bool:
        return "infonce" in self.weights or "siglip" in self.weights

    @property
    def uses_negatives(self) -> bool:
        """Whether the batch's negative captions are used at all (else they need not be encoded)."""
        return "focal_triplet" in self.weights or self.contrastive_negatives

    @property
    def uses_logit_bias(self) -> bool:
        return "siglip" in self.weights

    def __call__(self, image_emb: torch.Tensor, text_emb: torch.Tensor, batch,
                 logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> dict[str, torch.Tensor]:
        """→ named parts (weighted) plus "loss", their sum."""
        parts: dict[str, torch.Tensor] = {}
        if "focal_triplet" in self.weights:
            anchor = image_emb[batch.image_index]  # (B, d)
            positive = text_emb[batch.positive_index]  # (B, d)
            groups = {name: (text_emb[index], owner) for name, (index, owner) in batch.negatives.items()}
            self._add(parts, "focal_triplet", self.focal(anchor, positive, groups))
        if "infonce" in self.weights or "siglip" in self.weights:
            mask = batch.positive_mask(len(image_emb), len(text_emb))  # (n_img, n_txt)
            columns = torch.ones_like(mask[0]) if self.contrastive_negatives else mask.any(dim=0)
            images, texts, mask = image_emb, text_emb[columns], mask[:, columns]
            if self.gather:
                captions = [text for text, kept in zip(batch.texts, columns.tolist()) if kept]
                images, texts, mask = gather_contrastive(images, texts, mask, string_keys(batch.images, mask.device),
                                                         string_keys(captions, mask.device))
            if "infonce" in self.weights:
                self._add(parts, "infonce", self.infonce(images, texts, mask, logit_scale))
            if "siglip" in self.weights:
                self._add(parts, "siglip", self.siglip(images, texts, mask, logit_scale, logit_bias))
        terms = [value for name, value in parts.items() if name.endswith("_loss")]
        if not terms:
            raise ValueError("no loss term applies to this batch (no negatives and no contrastive loss)")
        parts["loss"] = torch.stack(terms).sum()
        return parts

    def _add(self, parts: dict, name: str, new: dict[str, torch.Tensor]) -> None:
        weight = self.weights[name]
        for key, value in new.items():
            parts[key] = weight * value if key.endswith("_loss") else value
