"""How a training run trains the backbone it starts from: LoRA, or in full for the tiny random one.

A full fine-tune of a real Qwen2.5-VL (3B, 7B) on the annotation host is slow, holds optimizer state for
every weight and writes the whole backbone at every evaluation; LoRA trains a few million parameters. The
tiny offline backbone is random, so LoRA on it learns little: it is fine-tuned in full. A checkpoint that
already carries LoRA adapters can only continue them (the trainer refuses a full fine-tune of it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from scorer.checkpoint import CONFIG_FILE, ORIGINAL_CONFIG_FILE
from scorer.config import ScorerConfig

LORA_RANK = 16  # the rank a run gets on a real backbone unless the user asks for another
REASONS = ("tiny", "adapters", "lora")


@dataclass(frozen=True)
class LoraDefault:
    """The LoRA rank a run on a checkpoint gets by default (0: full fine-tune), and why (one of REASONS)."""

    rank: int
    reason: str


def lora_default(checkpoint: str | os.PathLike[str]) -> LoraDefault:
    """Continue the checkpoint's adapters; full fine-tune on the tiny backbone; else LoRA of rank LORA_RANK."""
    backbone, adapter_rank = _read_checkpoint(Path(checkpoint))
    if adapter_rank is not None:
        return LoraDefault(adapter_rank, "adapters")
    if backbone_is_tiny(backbone):
        return LoraDefault(0, "tiny")
    return LoraDefault(LORA_RANK, "lora")


def resolve_lora_rank(requested: int | None, checkpoint: str | os.PathLike[str]) -> int:
    """The rank a run uses: ``requested``, or the default when None. A full fine-tune (0) of a checkpoint
    with LoRA adapters is refused here, before a training process is started for nothing."""
    default = lora_default(checkpoint)
    if requested is None:
        return default.rank
    if requested == 0 and default.reason == "adapters":
        raise ValueError(f"{checkpoint} has LoRA adapters (rank {default.rank}); a full fine-tune needs a checkpoint "
                         "without them: give a LoRA rank above 0 to continue the adapters")
    return requested


def backbone_is_tiny(backbone: str) -> bool:
    """Whether ``backbone`` (``tiny``, a local folder or a hub id) is the tiny offline Qwen2.5-VL build."""
    if backbone == "tiny":
        return True
    if not (Path(backbone) / "config.json").is_file():
        return False  # a hub id: no real model is tiny
    from transformers import Qwen2_5_VLConfig

    from scorer.qwen2_5_vl.tiny import tiny_config_dict

    return _sizes(Qwen2_5_VLConfig.from_pretrained(backbone)) == _sizes(Qwen2_5_VLConfig(**tiny_config_dict()))


def _sizes(config) -> tuple[int, ...]:
    text, vision = config.get_text_config(), config.vision_config
    return (text.hidden_size, text.num_hidden_layers, text.intermediate_size, vision.hidden_size, vision.depth)


def _read_checkpoint(directory: Path) -> tuple[str, int | None]:
    """(backbone as a loader takes it, rank of its LoRA adapters or None), from the checkpoint's config alone."""
    if (directory / CONFIG_FILE).is_file():
        config = ScorerConfig.load(directory / CONFIG_FILE)
        local = directory / config.backbone
        backbone = str(local) if not Path(config.backbone).is_absolute() and local.is_dir() else config.backbone
        return backbone, config.lora.r if config.lora is not None else None
    if (directory / ORIGINAL_CONFIG_FILE).is_file():
        original = json.loads((directory / ORIGINAL_CONFIG_FILE).read_text(encoding="utf-8"))
        has_adapter = original.get("use_lora") and (directory / "adapter_model.safetensors").is_file()
        return str(original.get("model_path", "")), int(original.get("lora_r", LORA_RANK)) if has_adapter else None
    raise FileNotFoundError(f"{directory} is not a scorer checkpoint: no {CONFIG_FILE} or {ORIGINAL_CONFIG_FILE}")
