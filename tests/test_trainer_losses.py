"""The losses against values computed by hand from their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import FocalTripletLoss, InfoNCELoss, Objective, SigLIPLoss, parse_loss_spec


def unit(*xs: float) -> torch.Tensor:
    v = torch.tensor(xs, dtype=torch.float32)
    return v / v.norm()


def test_focal_triplet_matches_the_formula_by_hand():
    # triplet 1: the positive is much closer than the negative → b = 0; triplet 2: the reverse.
    anchor = torch.stack([unit(1, 0), unit(1, 0)])
    positive = torch.stack([unit(0.8, 0.6), unit(0, 1)])
    negative = torch.stack([unit(0, 1), unit(0.8, 0.6)])
    d_close, d_far = math.sqrt(0.2**2 + 0.6**2), math.sqrt(2.0)  # |a−p| for the two positions
    b1 = max(d_close - d_far + 0.5, 0.0)
    b2 = max(d_far - d_close + 0.5, 0.0)
    expected = (b1 * (1 + b1) ** 2 + b2 * (1 + b2) ** 2) / 2
    assert b1 == 0.0 and b2 > 0
    assert FocalTripletLoss(margin=0.5, gamma=2.0).triplet(anchor, positive, negative).item() == pytest.approx(
        expected, rel=1e-5)


def test_focal_triplet_weights_each_negative_group_and_skips_empty_ones():
    loss = FocalTripletLoss()  # original weights: random 0.5, hard 2.0, other 0.5
    anchor = torch.stack([unit(1, 0), unit(0, 1)])
    positive = torch.stack([unit(1, 1), unit(1, 1)])
    negative = unit(-1, 0)[None]
    hard = loss.triplet(anchor[[1]], positive[[1]], negative)
    parts = loss(anchor, positive, {"hard": (negative, torch.tensor([1])),
                                    "other": (torch.empty(0, 2), torch.empty(0, dtype=torch.long))})
    assert set(parts) == {"focal_hard_loss"}
    assert parts["focal_hard_loss"].item() == pytest.approx(2.0 * hard.item())
    with pytest.raises(ValueError, match="no weight for negative group"):
        loss(anchor, positive, {"typo": (negative, torch.tensor([0]))})


def test_infonce_by_hand_with_one_positive_each():
    images = torch.stack([unit(1, 0), unit(0, 1)])
    texts = torch.stack([unit(1, 1), unit(0, 1)])
    positive = torch.eye(2, dtype=torch.bool)
    s = [[float(images[i] @ texts[j]) * 2.0 for j in range(2)] for i in range(2)]  # scale e^{ln 2} = 2

    def nll(row: list[float], k: int) -> float:
        return -math.log(math.exp(row[k]) / sum(math.exp(x) for x in row))

    i2t = (nll(s[0], 0) + nll(s[1], 1)) / 2
    t2i = (nll([s[0][0], s[1][0]], 0) + nll([s[0][1], s[1][1]], 1)) / 2
    parts = InfoNCELoss()(images, texts, positive, torch.tensor(math.log(2.0)))
    assert parts["infonce_i2t_loss"].item() == pytest.approx(i2t / 2, rel=1e-5)
    assert parts["infonce_t2i_loss"].item() == pytest.approx(t2i / 2, rel=1e-5)
    assert parts["logit_scale"].item() == pytest.approx(2.0)


def test_infonce_shared_caption_is_a_positive_of_both_images_not_a_negative():
    """Two images with the identical caption: one column, positive for both (no false negative)."""
    images = torch.stack([unit(1, 0), unit(0.6, 0.8)])
    texts = torch.stack([unit(1, 0.5), unit(-1, 0.2)])  # column 0 = the shared caption, 1 = a negative
    positive = torch.tensor([[True, False], [True, False]])
    s = (images @ texts.T).tolist()  # scale 1
    i2t = sum(-math.log(math.exp(r[0]) / (math.exp(r[0]) + math.exp(r[1]))) for r in s) / 2
    t2i = -math.log((math.exp(s[0][0]) + math.exp(s[1][0])) / (math.exp(s[0][0]) + math.exp(s[1][0])))  # = 0
    parts = InfoNCELoss()(images, texts, positive, torch.tensor(0.0))
    assert parts["infonce_i2t_loss"].item() == pytest.approx(i2t / 2, rel=1e-5)
    assert parts["infonce_t2i_loss"].item() == pytest.approx(t2i / 2, abs=1e-6)


def test_siglip_by_hand():
    images = torch.stack([unit(1, 0), unit(0, 1)])
    texts = torch.stack([unit(1, 1), unit(1, -1)])
    positive = torch.tensor([[True, False], [False, True]])
    scale, bias = 3.0, -1.0
    total = 0.0
    for i in range(2):
        for j in range(2):
            z = 1.0 if positive[i, j] else -1.0
            logit = scale * float(images[i] @ texts[j]) + bias
            total += -math.log(1 / (1 + math.exp(-z * logit)))
    parts = SigLIPLoss()(images, texts, positive, torch.tensor(math.log(scale)), torch.tensor(bias))
    assert parts["siglip_loss"].item() == pytest.approx(total / 2, rel=1e-5)


def test_objective_sums_the_weighted_parts_ending_in_loss():
    from trainer.data import TripletBatch

    images = torch.stack([unit(1, 0), unit(0, 1)])
    texts = torch.stack([unit(1, 0.1), unit(0.1, 1), unit(1, 1)])
    batch = TripletBatch(pixel_values=torch.empty(0), image_grid_thw=torch.empty(0), input_ids=torch.empty(0),
                         attention_mask=torch.empty(0), texts=["a", "b", "c"], images=["x.png", "y.png"],
                         image_index=torch.tensor([0, 1]), positive_index=torch.tensor([0, 1]),
                         negatives={"hard": (torch.tensor([2, 2]), torch.tensor([0, 1]))})
    objective = Objective(parse_loss_spec("infonce+focal_triplet", {"infonce": 0.5}))
    parts = objective(images, texts, batch, torch.tensor(0.0), torch.tensor(0.0))
    terms = {k: v for k, v in parts.items() if k.endswith("_loss")}
    assert set(terms) == {"focal_hard_loss", "infonce_i2t_loss", "infonce_t2i_loss"}
    assert parts["loss"].item() == pytest.approx(sum(v.item() for v in terms.values()))
    alone = InfoNCELoss()(images, texts, batch.positive_mask(2, 3), torch.tensor(0.0))
    assert parts["infonce_i2t_loss"].item() == pytest.approx(0.5 * alone["infonce_i2t_loss"].item())
    assert "logit_scale" in parts and "logit_scale" not in terms


def test_unknown_loss_name_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        parse_loss_spec("infonce+triplett")
