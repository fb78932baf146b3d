"""The memory planner's decisions from sizes alone: train beside the app's scorer, release it first, or refuse
with the numbers; a swap always releases the old model and is refused when the new one cannot fit."""

from __future__ import annotations

import json
import struct

import pytest

from loop.memory_plan import (
    GIB,
    OVERHEAD_BYTES,
    BackboneShape,
    TrainingNeed,
    backbone_shape,
    lora_params,
    plan_swap,
    plan_training,
    training_need,
)

SHAPE_3B = BackboneShape(params=3_754_622_976, hidden=2048, layers=36, intermediate=11008, vision_hidden=1280,
                         vision_layers=32, vision_intermediate=3420)


def test_a_run_that_fits_beside_the_scorer_keeps_it_loaded():
    plan = plan_training(need=8 * GIB, scorer=7 * GIB, available=16 * GIB)
    assert plan.fits and not plan.release_scorer


def test_a_run_that_fits_only_without_the_scorer_releases_it():
    plan = plan_training(need=12 * GIB, scorer=7 * GIB, available=9 * GIB)
    assert plan.fits and plan.release_scorer
    assert "releases its scorer" in plan.describe()


def test_a_run_that_cannot_fit_is_refused_with_the_numbers():
    plan = plan_training(need=30 * GIB, scorer=7 * GIB, available=9 * GIB)
    assert not plan.fits and not plan.release_scorer
    assert "needs 30.0 GiB" in plan.describe() and "9.0 GiB free" in plan.describe()
    assert "7.0 GiB" in plan.describe()


def test_a_run_on_another_device_gains_nothing_from_releasing_the_scorer():
    assert not plan_training(need=12 * GIB, scorer=7 * GIB, available=9 * GIB, same_device=False).fits


def test_a_swap_releases_the_old_model_and_is_refused_when_the_new_one_cannot_fit():
    plan = plan_swap(new=7 * GIB, old=7 * GIB, available=3 * GIB)  # 7 fits in 3 + 7 freed
    assert plan.fits and plan.release_scorer
    refused = plan_swap(new=15 * GIB, old=7 * GIB, available=3 * GIB)
    assert not refused.fits and "needs 15.0 GiB" in refused.describe()


def test_gradient_checkpointing_and_a_smaller_batch_lower_the_3b_need():
    def need(batch: int, checkpointing: bool) -> TrainingNeed:
        return training_need(SHAPE_3B, 2, 16, batch, 256 * 256, 96, checkpointing)

    big, small = need(8, False), need(2, True)
    assert big.weights() == small.weights() == SHAPE_3B.params * 2  # bf16 frozen base: 7.5 GB, not 15
    assert small.activations() < big.activations() / 10
    assert small.total() < 12 * GIB < big.total()
    assert small.total() == small.weights() + small.optimizer() + small.activations() + OVERHEAD_BYTES


def test_lora_trains_a_few_tens_of_millions_and_a_full_fine_tune_everything_in_fp32():
    lora = training_need(SHAPE_3B, 2, 16, 2, 65536, 96, True)
    assert 10_000_000 < lora_params(SHAPE_3B, 16) == lora.trainable_params < 100_000_000
    full = training_need(SHAPE_3B, 2, 0, 2, 65536, 96, True)
    assert full.trainable_params == SHAPE_3B.params and full.base_bytes == 4


def test_a_backbone_shape_is_read_from_config_and_safetensors_headers(tmp_path):
    config = {"text_config": {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128},
              "vision_config": {"hidden_size": 32, "depth": 2, "intermediate_size": 64}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    header = json.dumps({"a": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]},
                         "b": {"dtype": "BF16", "shape": [5], "data_offsets": [24, 34]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(34))
    shape = backbone_shape(tmp_path)
    assert shape.params == 17 and shape.hidden == 64 and shape.vision_layers == 2
    assert backbone_shape(tmp_path / "missing") is None


@pytest.mark.parametrize("batch", [0, -1])
def test_the_train_form_refuses_a_batch_below_one(batch):
    from loop import TrainForm

    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainForm(batch_size=batch)
