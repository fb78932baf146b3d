"""One global contrastive batch across DDP processes (open_clip's ``gather_features``, with gradient).

    gather_contrastive(image_emb, text_emb, positive, image_keys, text_keys) -> (images, texts, positive)

Every process gathers the image and caption embeddings of all processes (rank order), so InfoNCE and
SigLIP see the whole global batch. Per-process counts differ (the collator deduplicates each batch),
so the counts are gathered first and each tensor is padded to the largest before ``all_gather``.

Gradient: :class:`_GatherRows` is ``all_gather`` with its true adjoint as backward — every process's
gradient of its copy of the gathered tensor, summed (``all_reduce``), restricted to this process's own
rows. All processes compute the same global loss L, so each process gets R·∂L/∂x_r (R processes)
for its local embeddings x_r, and DDP's mean over processes gives Σ_r ∂L/∂x_r · ∂x_r/∂θ = ∇_θ L: the
gradient of one process running L on the whole batch. ``logit_scale``/``logit_bias`` enter L directly on
every process, so their gradient is ∂L/∂t on each and stays ∂L/∂t after the mean. The loss is not
scaled by R; per-process terms (the focal triplet loss) keep DDP's usual mean over processes.

Global deduplication: the same image (by path) or caption (by text) can sit in the batches of two
processes. Rows (columns) with equal 64-bit keys (:func:`string_keys`) are one image (caption): the
first copy in rank order is kept, the others are dropped from the contrastive losses (their gradient
from it is zero; the kept copy carries it), and the positives of all copies are merged, exactly as
the collator deduplicates within one batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.distributed as dist


def string_keys(strings: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """(k,) int64: the first 8 bytes of each string's BLAKE2b digest (the same in every process,
    unlike ``hash()``; a collision between two distinct captions of one global batch is ~k²/2⁶⁴)."""
    keys = [int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
            for s in strings]
    return torch.tensor(keys, dtype=torch.long, device=device)


class _GatherRows(torch.autograd.Function):
    """(n_r, ...) on process r → (Σ n_r, ...) in rank order; ``sizes`` = [n_0, n_1, ...]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # Σ over processes of ∂L_r/∂(gathered rows)
        return grad[ctx.rows], None


def _first_copies(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (k,) → (index of the first row of each distinct key (g,), group of every row (k,) in 0..g-1)."""
    distinct, group = torch.unique(keys, return_inverse=True)
    rows = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(distinct),), len(keys), device=keys.device).scatter_reduce(0, group, rows, "amin")
    return first, group


def gather_contrastive(image_emb: torch.Tensor, text_emb: torch.Tensor, positive: torch.Tensor,
                       image_keys: torch.Tensor, text_keys: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This process's (n, d) images, (m, d) captions, (n, m) positive mask and (n,)/(m,) keys → the
    global deduplicated (N, d), (M, d), (N, M): P[g(i), h(j)] is true when some process has caption j
    positive for image i, with g/h mapping each row/column to its key's group (see the module doc)."""
    pairs = positive.nonzero()  # (k, 2) local (image row, caption column)
    counts = torch.tensor([len(image_emb), len(text_emb), len(pairs)], device=image_emb.device)
    every = [torch.empty_like(counts) for _ in range(dist.get_world_size())]
    dist.all_gather(every, counts)
    sizes = torch.stack(every).tolist()  # (R, 3)
    n_sizes, m_sizes, k_sizes = (list(column) for column in zip(*sizes))
    rank = dist.get_rank()
    pairs = pairs + torch.tensor([sum(n_sizes[:rank]), sum(m_sizes[:rank])], device=pairs.device)

    images = _GatherRows.apply(image_emb, n_sizes)  # (Σn, d)
    texts = _GatherRows.apply(text_emb, m_sizes)  # (Σm, d)
    pairs = _GatherRows.apply(pairs, k_sizes)  # (Σk, 2) global rows/columns
    image_rows, image_group = _first_copies(_GatherRows.apply(image_keys, n_sizes))
    text_columns, text_group = _first_copies(_GatherRows.apply(text_keys, m_sizes))
    merged = torch.zeros(len(image_rows), len(text_columns), dtype=torch.bool, device=positive.device)
    merged[image_group[pairs[:, 0]], text_group[pairs[:, 1]]] = True
    return images[image_rows], texts[text_columns], merged
