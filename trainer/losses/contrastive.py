"""In-batch contrastive losses over a batch of distinct images and distinct captions.

Both take ``image_emb`` (n, d) and ``text_emb`` (m, d), L2-normalised, and ``positive`` (n, m) bool:
``positive[i, j]`` is true when caption j describes image i. Images and captions are deduplicated by
the collator, so an identical caption shared by two images is one column positive for both — never a
false negative of itself. Columns without any positive (negative captions of the batch) only act
as extra negatives for the image→text direction.

Under DDP (``TrainConfig.contrastive_gather``) the inputs are the global batch of all processes,
deduplicated by image path and caption text; ``trainer.distributed`` derives why the gradient then
equals one process's on the whole batch.

The temperature ``t = logit_scale`` is used as given: the training loop clamps the parameter to
[0, ln 100] after each optimizer step (open_clip), so its gradient is never cut off here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # the loop clamps the learned temperature at 1/100 (CLIP)


def _multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Rows with ≥ 1 positive: mean of −log(Σ_pos e^l / Σ_all e^l)."""
    rows = positive.any(dim=1)
    logits, positive = logits[rows], positive[rows]
    pos_logits = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(pos_logits, dim=1)).mean()


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP) with a learnable temperature, multi-positive::

        s_ij   = exp(t) · <x_i, y_j>                    t = model.logit_scale
        L_i→t  = mean_i −log(Σ_{j∈P(i)} e^{s_ij} / Σ_j e^{s_ij})
        L_t→i  = mean_j −log(Σ_{i∈P(j)} e^{s_ij} / Σ_i e^{s_ij})    (only captions that are someone's positive)
        L      = (L_i→t + L_t→i) / 2

    With one positive per row this is open_clip's ``ClipLoss``. Returns
    {"infonce_i2t_loss": L_i→t / 2, "infonce_t2i_loss": L_t→i / 2, "logit_scale": exp(t)}.
    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (2021).
    """

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, positive: torch.Tensor,
                logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        scale = logit_scale.exp()
        logits = scale * image_emb.float() @ text_emb.float().T  # (n, m)
        return {
            "infonce_i2t_loss": 0.5 * _multi_positive_nce(logits, positive),
            "infonce_t2i_loss": 0.5 * _multi_positive_nce(logits.T, positive.T),
            "logit_scale": scale.detach(),
        }


class SigLIPLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP) with learnable temperature t and bias b::

        z_ij = +1 if caption j describes image i else −1
        L    = −(1/n) Σ_i Σ_j log σ(z_ij · (e^t <x_i, y_j> + b))

    Returns {"siglip_loss": L, "logit_scale": e^t, "logit_bias": b}.
    Reference: Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (2023).
    """

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, positive: torch.Tensor,
                logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> dict[str, torch.Tensor]:
        scale = logit_scale.exp()
        logits = scale * image_emb.float() @ text_emb.float().T + logit_bias
        signs = positive.float() * 2.0 - 1.0
        loss = -F.logsigmoid(signs * logits).sum() / image_emb.shape[0]
        return {"siglip_loss": loss, "logit_scale": scale.detach(), "logit_bias": logit_bias.detach()}
