"""The real-size Qwen2.5-VL scorer with random weights, for speed and memory benchmarks.

Weights don't change speed, so a model built from a checkpoint's ``config.json`` alone (e.g.
``../shared/reference/qwen2.5-vl-3b-instruct``) measures what the real one would. The processor is the
tiny backbone's: the same vocabulary and the same patching.
"""

from __future__ import annotations

from pathlib import Path

import torch


def random_real_size_scorer(config_dir: str | Path, device: str, dtype: torch.dtype, max_pixels: int | None = None):
    """→ (DualEncoder, DualEncoderProcessor) at the size of ``config_dir``'s config.json, random weights."""
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from scorer.config import ScorerConfig
    from scorer.model import DualEncoder
    from scorer.qwen2_5_vl import DualEncoderProcessor
    from scorer.qwen2_5_vl.backbone import resolve_backbone_path

    config = Qwen2_5_VLConfig.from_pretrained(config_dir)
    torch.manual_seed(0)
    with torch.device(device):
        qwen = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    limits = {"max_pixels": max_pixels} if max_pixels else {}
    processor = AutoProcessor.from_pretrained(resolve_backbone_path("tiny"), **limits)
    processor.tokenizer.padding_side = "right"
    model = DualEncoder(qwen, ScorerConfig(backbone=f"random:{Path(config_dir).name}")).to(device).eval()
    return model, DualEncoderProcessor(processor)
