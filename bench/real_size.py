"""The real-size Qwen2.5-VL scorer with random weights, for speed and memory benchmarks.

Weights don't change speed, so a model built from a checkpoint's ``config.json`` alone (e.g.
``../shared/reference/qwen2.5-vl-3b-instruct``) measures what the real one would. The weights come from
transformers' own initialisation (normal linear weights, RMSNorm weights of one): filling every parameter
from N(0, 0.02), norms included, shrinks the activations layer by layer into subnormal floats, which a
CPU computes very slowly. The processor is the tiny backbone's (the same vocabulary and the same patching)
with the pixel limits of the folder's ``preprocessor_config.json`` when it has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def reference_pixel_limits(config_dir: str | Path) -> dict[str, int]:
    """min/max pixels of ``config_dir``'s preprocessor_config.json ({} when the file is absent)."""
    path = Path(config_dir) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: int(data[key]) for key in ("min_pixels", "max_pixels") if data.get(key)}


def random_real_size_scorer(config_dir: str | Path, device: str | torch.device, dtype: torch.dtype,
                            max_pixels: int | None = None, scorer_config=None, seed: int = 0):
    """→ (DualEncoder, DualEncoderProcessor) at the size of ``config_dir``'s config.json, random weights.

    Built directly on ``device``. ``scorer_config`` (a ScorerConfig: heads, pixel and text limits) as
    ``scorer.new_scorer`` takes it; heads drawn from ``seed`` as there.
    """
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from scorer.config import ScorerConfig
    from scorer.model import DualEncoder
    from scorer.qwen2_5_vl import DualEncoderProcessor
    from scorer.qwen2_5_vl.backbone import resolve_backbone_path

    if not (Path(config_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {config_dir} (a Qwen2.5-VL checkpoint folder)")
    config = Qwen2_5_VLConfig.from_pretrained(config_dir)
    torch.manual_seed(seed)
    with torch.device(device):
        qwen = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    scorer_config = scorer_config or ScorerConfig()
    scorer_config.backbone = f"random:{Path(config_dir).name}"
    limits = reference_pixel_limits(config_dir)
    asked = {"min_pixels": scorer_config.min_pixels, "max_pixels": max_pixels or scorer_config.max_pixels}
    limits.update({key: value for key, value in asked.items() if value})
    processor = AutoProcessor.from_pretrained(resolve_backbone_path("tiny"), **limits)
    processor.tokenizer.padding_side = "right"
    torch.manual_seed(seed)
    model = DualEncoder(qwen, scorer_config).to(device).eval()
    return model, DualEncoderProcessor(processor, scorer_config.max_text_tokens)
