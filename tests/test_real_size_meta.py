"""The real 3B architecture on the meta device: the towers and LoRA targets land where they should."""

from __future__ import annotations

import pytest
import torch
from project_paths import REFERENCE_3B

from scorer import DualEncoder, LoraSettings, ScorerConfig

# Published per-block counts (../shared/reference/qwen2.5-vl-3b-instruct/README.md).
LORA_R16_TEXT = 7_372_800
LORA_R16_VISION = 3_932_160
TOTAL_TIED = 3_754_622_976


@pytest.fixture(scope="module")
def real_config():
    if not (REFERENCE_3B / "config.json").is_file():
        pytest.skip(f"reference 3B config not found at {REFERENCE_3B}")
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(REFERENCE_3B)


def _meta_encoder(config, towers: str) -> DualEncoder:
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        qwen = Qwen2_5_VLForConditionalGeneration(config)
        qwen.tie_weights()
        encoder = DualEncoder(qwen, ScorerConfig())
    encoder.apply_lora(LoraSettings(r=16, towers=towers))
    return encoder


@pytest.mark.parametrize(("towers", "expected"), [
    ("text", LORA_R16_TEXT), ("vision", LORA_R16_VISION), ("both", LORA_R16_TEXT + LORA_R16_VISION)])
def test_lora_regex_targets_match_the_published_counts(real_config, towers, expected):
    encoder = _meta_encoder(real_config, towers)
    lora = sum(p.numel() for n, p in encoder.backbone.named_parameters() if "lora_" in n)
    assert lora == expected
    base = sum(p.numel() for n, p in encoder.backbone.named_parameters() if "lora_" not in n)
    assert base == TOTAL_TIED
    assert not any("patch_embed" in n and "lora_" in n for n, _ in encoder.backbone.named_parameters())


def test_heads_sit_on_the_language_model_width(real_config):
    encoder = _meta_encoder(real_config, "both")
    assert encoder.image_head.model[0].in_features == 2048 == encoder.text_head.model[0].in_features
    assert encoder.image_head.model[-1].out_features == 768
