"""The recipes shipped in configs/ parse into valid training configs (a typo would fail a user's run)."""

from __future__ import annotations

import pytest
from project_paths import ROOT

from trainer.config import TrainConfig, load_yaml

RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_is_a_valid_train_config(recipe):
    config = TrainConfig.from_dict(load_yaml(recipe))
    assert config.loss and config.batch_size >= 1


def test_the_3b_recipe_trains_lora_on_the_real_model():
    config = TrainConfig.from_dict(load_yaml(ROOT / "configs" / "ucm_3b_lora.yaml"))
    assert config.model == "Qwen/Qwen2.5-VL-3B-Instruct" and config.train_backbone == "lora"
