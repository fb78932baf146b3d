"""The loop's parts on their own: the schedule, the temperature clamp, the running loss, choosing "best"."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.loop import LoopState, clamp_temperature, make_scheduler, optimizer_step
from trainer.losses import InfoNCELoss
from trainer.losses.contrastive import MAX_LOGIT_SCALE
from trainer.tracking import RunningLoss


def test_schedule_is_linear_warmup_then_cosine_down_to_the_minimum_ratio():
    warmup, max_steps, min_ratio, base = 4, 20, 0.1, 2e-3
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = make_scheduler(optimizer, warmup, max_steps, min_ratio)
    got = []
    for _ in range(max_steps + 1):
        got.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()

    def expected(step: int) -> float:
        if step < warmup:
            return base * step / warmup
        progress = (step - warmup) / (max_steps - warmup)
        return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    assert got == pytest.approx([expected(step) for step in range(max_steps + 1)], rel=1e-9, abs=1e-12)
    assert got[warmup] == pytest.approx(base) and got[max_steps] == pytest.approx(base * min_ratio)


class Towers(nn.Module):
    def __init__(self, logit_scale: float):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale))


class NoAccelerator:
    """The one accelerate call :func:`optimizer_step` makes, on one process."""

    @staticmethod
    def clip_grad_norm_(parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def test_the_temperature_comes_down_again_after_reaching_the_cap():
    model = Towers(MAX_LOGIT_SCALE - 0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=100.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    images = torch.eye(2)
    positive = torch.eye(2, dtype=torch.bool)
    close = torch.nn.functional.normalize(torch.tensor([[1.0, 0.95], [0.95, 1.0]]), dim=1)  # not saturated at 100

    def step(texts: torch.Tensor) -> float:
        parts = InfoNCELoss()(images, texts, positive, model.logit_scale)
        (parts["infonce_i2t_loss"] + parts["infonce_t2i_loss"]).backward()
        grad = float(model.logit_scale.grad)
        optimizer_step(model, model, optimizer, scheduler, NoAccelerator(), max_grad_norm=1e9)
        return grad

    # matching captions: a sharper softmax helps, the step overshoots the cap and is clamped to it
    assert step(close) < 0
    assert model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    # swapped captions: at the cap the gradient is not zero (the loss does not clamp), so it comes down
    grad = step(close.flip(0))
    assert grad > 0
    assert model.logit_scale.item() < MAX_LOGIT_SCALE - 1.0


def test_clamp_temperature_keeps_it_in_zero_to_ln100():
    for start, expected in ((-0.5, 0.0), (1.0, 1.0), (9.0, MAX_LOGIT_SCALE)):
        model = Towers(start)
        clamp_temperature(model)
        assert model.logit_scale.item() == pytest.approx(expected)
        assert model.logit_scale.requires_grad


def test_running_loss_is_the_mean_since_the_last_read():
    running = RunningLoss()
    running.add({"loss": torch.tensor(1.0), "focal_hard_loss": torch.tensor(0.5)})
    running.add({"loss": torch.tensor(3.0), "focal_hard_loss": torch.tensor(1.5)})
    assert running.read() == {"loss": 2.0, "focal_hard_loss": 1.0}
    running.add({"loss": torch.tensor(5.0)})
    running.add({"loss": torch.tensor(7.0), "focal_random_loss": torch.tensor(0.25)})
    assert running.read() == {"loss": 6.0, "focal_random_loss": 0.25}  # each over the steps it was part of
    assert running.read() == {}


def test_best_is_chosen_only_by_a_higher_validation_score():
    state = LoopState()
    assert not state.improves(None)  # a step without evaluation never chooses best
    assert state.improves(0.5)
    state.best = 0.5
    assert not state.improves(0.5) and not state.improves(0.4) and state.improves(0.6)
