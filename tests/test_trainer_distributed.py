"""Gathered contrastive losses under DDP = one process on the whole batch, in value and gradient.

Two CPU processes (gloo, real DistributedDataParallel) each hold half of a batch of unequal size, with
an image and a caption text that both processes hold; one process computes the same losses on the two
halves deduplicated as one batch (open_clip's tests/test_siglip_chunked_loss.py, across processes).
"""

from __future__ import annotations

import socket
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.data import TripletBatch
from trainer.losses import Objective, parse_loss_spec

# (image, positive, hard negative) per process: 2 images / 5 captions and 3 images / 4 captions;
# "a.png" and "a harbor with boats" are in both halves (and the harbor is also a negative of both).
HALVES = [
    [("a.png", "a dense forest", "a sandy beach"), ("b.png", "a harbor with boats", "a parking lot"),
     ("a.png", "trees everywhere", "a harbor with boats")],
    [("c.png", "a harbor with boats", "a desert"), ("a.png", "green canopy", "a runway"),
     ("d.png", "a desert", "a harbor with boats")],
]
CASES = [("infonce", True), ("siglip", True), ("infonce+siglip", False)]  # (loss, contrastive_negatives)
NAMES = sorted({name for half in HALVES for triplet in half for name in triplet})
FEATURES = torch.randn(len(NAMES), 6, generator=torch.Generator().manual_seed(0))  # an input vector per name


def make_batch(triplets: list[tuple[str, str, str]]) -> TripletBatch:
    """The collator's deduplication, on names instead of pixels and tokens."""
    images: dict[str, int] = {}
    texts: dict[str, int] = {}
    rows = [(images.setdefault(image, len(images)), texts.setdefault(positive, len(texts)))
            for image, positive, _ in triplets]
    hard = [texts.setdefault(negative, len(texts)) for _, _, negative in triplets]
    empty = torch.empty(0)
    return TripletBatch(pixel_values=empty, image_grid_thw=empty, input_ids=empty, attention_mask=empty,
                        texts=list(texts), images=list(images), image_index=torch.tensor([r[0] for r in rows]),
                        positive_index=torch.tensor([r[1] for r in rows]),
                        negatives={"hard": (torch.tensor(hard), torch.arange(len(triplets)))})


class Towers(nn.Module):
    """Two linear towers; the bias is trained only when SigLIP uses it (DDP needs every trained parameter used)."""

    def __init__(self, loss: str):
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(6, 4), nn.Linear(6, 4)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.logit_bias = nn.Parameter(torch.tensor(-2.0), requires_grad="siglip" in loss)

    def forward(self, image_x: torch.Tensor, text_x: torch.Tensor):
        return (F.normalize(self.image(image_x), dim=-1), F.normalize(self.text(text_x), dim=-1),
                self.logit_scale, self.logit_bias)


def run(towers: nn.Module, batch: TripletBatch, objective: Objective) -> dict:
    """Forward, loss, backward → the loss parts and the gradients of the embeddings."""
    inputs = [FEATURES[[NAMES.index(name) for name in names]] for names in (batch.images, batch.texts)]
    image_emb, text_emb, scale, bias = towers(*inputs)
    image_emb.retain_grad()
    text_emb.retain_grad()
    parts = objective(image_emb, text_emb, batch, scale, bias)
    parts["loss"].backward()
    return {"parts": {k: float(v.detach()) for k, v in parts.items()}, "image": image_emb.grad, "text": text_emb.grad}


def _worker(rank: int, port: int, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        for loss, negatives in CASES:
            towers = DistributedDataParallel(Towers(loss))
            objective = Objective(parse_loss_spec(loss), contrastive_negatives=negatives, gather=True)
            results[loss, negatives] = run(towers, make_batch(HALVES[rank]), objective)
            results[loss, negatives]["params"] = {n: p.grad for n, p in towers.module.named_parameters()}
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gathered(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.parametrize("loss,negatives", CASES)
def test_gathered_losses_equal_one_process_on_the_deduplicated_batch(gathered, loss, negatives):
    towers = Towers(loss)
    whole = make_batch(HALVES[0] + HALVES[1])
    assert (len(whole.images), len(whole.texts)) == (4, 8)  # a.png and the harbor counted once
    single = run(towers, whole, Objective(parse_loss_spec(loss), contrastive_negatives=negatives))
    for rank in range(2):
        mine = gathered[rank][loss, negatives]
        assert mine["parts"] == pytest.approx(single["parts"], rel=1e-5)
        # DDP averaged the parameter gradients: they are the single process's, logit scale and bias included
        for name, parameter in towers.named_parameters():
            torch.testing.assert_close(mine["params"][name], parameter.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss,negatives", CASES)
def test_each_process_gets_world_size_times_the_gradient_of_its_own_embeddings(gathered, loss, negatives):
    """Both processes backpropagate the same L; the gather's backward sums both into each one's rows
    (2·∂L/∂x), which DDP's mean halves again. A copy held by both processes: the copies' sum."""
    whole = make_batch(HALVES[0] + HALVES[1])
    single = run(Towers(loss), whole, Objective(parse_loss_spec(loss), contrastive_negatives=negatives))
    for kind, names in (("image", "images"), ("text", "texts")):
        summed: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(4))
        for rank in range(2):
            for name, grad in zip(getattr(make_batch(HALVES[rank]), names), gathered[rank][loss, negatives][kind]):
                summed[name] = summed[name] + grad
        for name, grad in zip(getattr(whole, names), single[kind]):
            torch.testing.assert_close(summed[name], 2 * grad, rtol=1e-5, atol=1e-6)
