"""The Train tab's defaults for a model on this device, and the time a run will take before it starts.

Defaults: the tiny backbone trains as the demo does (batch 8, no checkpointing, ten evaluations). A real
backbone starts from ``configs/ucm_3b_lora.yaml`` (batch, gradient accumulation, checkpointing); on a device
where that batch does not fit (the memory plan, :mod:`loop.memory_plan`) the batch is halved and the
accumulation doubled, keeping the effective batch, until it fits; on a CPU a run evaluates twice on at most
``CPU_HELD_OUT`` triplets (an evaluation of 120 images takes ~30 min there at 3B).

Time: the latest finished run's measured rate (the trainer's ``triplets_per_s``) on this model, else an
assumed rate per triplet (``ASSUMED_SECONDS``), named in the estimate's ``basis``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from loop.memory_plan import available_bytes, checkpoint_shape, dtype_bytes, plan_training, training_need
from scorer.checkpoint import read_checkpoint_info
from scorer.config import is_tiny_backbone

if TYPE_CHECKING:
    from loop.services import Services

log = logging.getLogger(__name__)

REAL_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "ucm_3b_lora.yaml"
CPU_HELD_OUT = 32
UCM_PIXELS = 256 * 256  # the image size the plan assumes for the defaults (UCM tiles)
# Seconds per training triplet (forward + backward, with checkpointing at 3B), when no run was measured yet:
# 3B bf16 on 2 CPU cores from issue 15 (1.1–1.35 s an image and 0.8–1.2 s a caption forward, ×4 with
# backward and recomputation), the tiny backbone on the same CPU, and a 3B LoRA step on one H200 (device_check).
ASSUMED_SECONDS = {("real", "cpu"): 13.0, ("real", "cuda"): 0.05, ("tiny", "cpu"): 0.05, ("tiny", "cuda"): 0.01}
EVAL_SECONDS_PER_TRIPLET = {"real": 3.0, "tiny": 0.02}  # forward only: a third of a training triplet, or so


@dataclass(frozen=True)
class RunSettings:
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    evaluations: int
    max_held_out: int | None
    why: str


@dataclass(frozen=True)
class TimeEstimate:
    seconds_per_step: float
    total_seconds: float
    basis: str


def _device(services: Services) -> str:
    import torch

    device = services.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return "cuda" if device.startswith("cuda") else "cpu"


def is_real(checkpoint: str) -> bool:
    return not is_tiny_backbone(read_checkpoint_info(checkpoint).backbone)


def default_settings(services: Services, checkpoint: str) -> RunSettings:
    """The Train tab's batch, accumulation, checkpointing, evaluations and held-out cap for ``checkpoint``."""
    if not is_real(checkpoint):
        return RunSettings(8, 1, False, 10, None, "tiny backbone: the demo's settings")
    recipe = yaml.safe_load(REAL_RECIPE.read_text(encoding="utf-8"))
    batch, accum = int(recipe["batch_size"]), int(recipe["grad_accum"])
    checkpointing = bool(recipe["gradient_checkpointing"])
    device = _device(services)
    shape = checkpoint_shape(checkpoint)
    if shape is not None:
        per_weight = dtype_bytes(services.config.dtype, services.config.device, shape.hidden)
        available, scorer = available_bytes(services.config.device), services.scorer_bytes()
        while batch > 1 and not plan_training(training_need(shape, per_weight, 16, batch, UCM_PIXELS, 96,
                                                            checkpointing).total(), scorer, available).fits:
            batch, accum = batch // 2, accum * 2
    cpu = device == "cpu"
    return RunSettings(batch, accum, checkpointing, 2 if cpu else 10, CPU_HELD_OUT if cpu else None,
                       f"{REAL_RECIPE.name}, batch fitted to this {device}'s free memory")


def measured_rate(services: Services) -> float | None:
    """Triplets per second of the latest finished run of this app (None when none reported it)."""
    for run_id in sorted(services.training.jobs, reverse=True):
        snapshot = services.training.snapshot(run_id)
        rates = [p["triplets_per_s"] for p in snapshot.progress if p.get("triplets_per_s")]
        if snapshot.status == "done" and rates:
            return float(rates[-1])
    return None


def estimate_time(services: Services, checkpoint: str, batch_size: int, grad_accum: int, steps: int,
                  evaluations: int, held_out: int) -> TimeEstimate:
    """Seconds per optimizer step and for the whole run (steps, and evaluations of ``held_out`` triplets)."""
    kind = "real" if is_real(checkpoint) else "tiny"
    triplets = batch_size * grad_accum
    rate = measured_rate(services)
    if rate:
        per_step, basis = triplets / rate, f"measured: the last run trained {rate:.2f} triplets/s"
    else:
        seconds = ASSUMED_SECONDS[(kind, _device(services))]
        per_step = triplets * seconds
        basis = f"assumed: {seconds:g} s a triplet for a {kind} model on {_device(services)} (no run measured yet)"
    evaluation = (evaluations + 1) * held_out * EVAL_SECONDS_PER_TRIPLET[kind]  # +1: the step-0 evaluation
    return TimeEstimate(per_step, per_step * steps + evaluation, basis)
