"""Checkpoints that travel and a training model in the precision asked: a checkpoint whose backbone folder sits
beside it loads after both moved; a LoRA run's frozen base stays bf16 with only the trained parameters in fp32."""

from __future__ import annotations

import shutil

import pytest
import torch

from scorer.checkpoint import load_checkpoint, new_scorer, read_checkpoint_info, save_checkpoint
from scorer.qwen2_5_vl.backbone import resolve_backbone_path


@pytest.fixture
def beside(tmp_path):
    """models/backbone (a copy of the tiny backbone) and models/scorer, a checkpoint that points at it."""
    models = tmp_path / "models"
    shutil.copytree(resolve_backbone_path("tiny"), models / "backbone-tiny")
    model, processor = new_scorer(str(models / "backbone-tiny"), dtype="float32")
    save_checkpoint(model, processor, models / "scorer")
    return models


def test_a_checkpoint_loads_after_its_folder_moved(beside, tmp_path):
    moved = tmp_path / "elsewhere" / "models"
    moved.parent.mkdir()
    beside.rename(moved)
    assert read_checkpoint_info(moved / "scorer").backbone == str((moved / "backbone-tiny").resolve())
    model, _ = load_checkpoint(moved / "scorer")
    assert model.config.backbone == str((moved / "backbone-tiny").resolve())


def test_a_checkpoint_without_its_backbone_says_which_paths_it_looked_for(beside, tmp_path):
    moved = tmp_path / "alone"
    (beside / "scorer").rename(moved)
    assert load_checkpoint(moved)[0] is not None  # the backbone is still at its absolute path
    shutil.rmtree(beside / "backbone-tiny")
    with pytest.raises(FileNotFoundError, match=r"neither at .*models/backbone-tiny nor at .*backbone-tiny"):
        load_checkpoint(moved)


def test_a_lora_run_keeps_the_frozen_base_in_bf16_and_trains_in_fp32():
    from trainer.config import TrainConfig
    from trainer.model_setup import build_model, set_trainable

    config = TrainConfig(model="tiny", train_backbone="lora", dtype="bf16", lora_r=2)
    model, _ = build_model(config, torch.device("cpu"))
    set_trainable(model, config, uses_logit_scale=True, uses_logit_bias=False)
    trained = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.dtype for name, p in model.backbone.named_parameters() if not p.requires_grad}
    assert any("lora_" in name for name in trained) and any(name.startswith("image_head") for name in trained)
    assert set(trained.values()) == {torch.float32}
    assert frozen and set(frozen.values()) == {torch.bfloat16}


def test_a_full_fine_tune_stays_fp32_whatever_the_dtype():
    from trainer.config import TrainConfig
    from trainer.model_setup import base_dtype

    assert base_dtype(TrainConfig(train_backbone="full", dtype="bf16"), torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of auto, bf16, fp16, fp32"):
        TrainConfig(dtype="int8")
