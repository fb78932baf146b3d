"""How a training run trains the backbone it starts from: LoRA, or in full for the tiny random one.

A full fine-tune of a real Qwen2.5-VL (3B, 7B) on the annotation host is slow, holds optimizer state for
every weight and writes the whole backbone at every evaluation; LoRA trains a few million parameters. The
tiny offline backbone is random, so LoRA on it learns little: it is fine-tuned in full. A checkpoint that
already carries LoRA adapters can only continue them (the trainer refuses a full fine-tune of it).
What a checkpoint holds is read by the scorer (:func:`scorer.checkpoint.read_checkpoint_info`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scorer.checkpoint import read_checkpoint_info
from scorer.config import is_tiny_backbone

LORA_RANK = 16  # the rank a run gets on a real backbone unless the user asks for another
REASONS = ("tiny", "adapters", "lora")


@dataclass(frozen=True)
class LoraDefault:
    """The LoRA rank a run on a checkpoint gets by default (0: full fine-tune), and why (one of REASONS)."""

    rank: int
    reason: str


def lora_default(checkpoint: str | os.PathLike[str]) -> LoraDefault:
    """Continue the checkpoint's adapters; full fine-tune on the tiny backbone; else LoRA of rank LORA_RANK."""
    info = read_checkpoint_info(checkpoint)
    if info.lora_rank is not None:
        return LoraDefault(info.lora_rank, "adapters")
    if is_tiny_backbone(info.backbone):
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
