"""Load a Qwen2.5-VL checkpoint (hub id, local path or ``tiny``) once, with its own processor."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class BackboneNotFoundError(FileNotFoundError):
    """The backbone is neither a local directory nor downloadable (offline / not cached)."""


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 otherwise (CPU bf16 matmuls are slow and lossy)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype and dtype != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_backbone_path(name_or_path: str) -> str:
    """``tiny`` → the cached tiny build (built on first use); anything else is returned unchanged."""
    if name_or_path == "tiny":
        from scorer.qwen2_5_vl.tiny import ensure_tiny_backbone

        return str(ensure_tiny_backbone())
    return name_or_path


def hub_offline() -> bool:
    """True when the user said there is no hub (read at call time, not at import like huggingface_hub)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(flag.lower() in ("1", "true", "yes", "on") for flag in flags)


def _check_reachable(name: str) -> None:
    """Offline and not in the local cache: fail at once instead of after the hub client's retries."""
    from huggingface_hub import try_to_load_from_cache

    if Path(name).expanduser().is_dir() or not hub_offline():
        return
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise _not_found(name, OSError("offline mode"))


def _not_found(name: str, err: Exception) -> BackboneNotFoundError:
    offline = hub_offline()
    why = "the hub is offline and it is not in the local cache" if offline else "it could not be downloaded"
    return BackboneNotFoundError(
        f"cannot load Qwen2.5-VL model {name!r}: it is not a local directory and {why} ({err}). "
        f"Pass a local path to a downloaded checkpoint, or use --model tiny for the offline test backbone."
    )


def load_backbone(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Return ``(Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)`` for a hub id, path or ``tiny``.

    The one model is shared by both towers (and by caption generation); dtype is always explicit.
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path = resolve_backbone_path(name_or_path)
    target = device if isinstance(device, torch.device) else pick_device(device)
    torch_dtype = pick_dtype(target, dtype)
    pixel_limits = {key: value for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if value}
    if not Path(path).is_dir() and Path(path).expanduser().exists():
        raise BackboneNotFoundError(f"backbone path {path} exists but is not a checkpoint directory")
    _check_reachable(path)
    try:
        processor = AutoProcessor.from_pretrained(path, **pixel_limits)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        if Path(path).is_dir():
            raise BackboneNotFoundError(f"{path} is not a complete Qwen2.5-VL checkpoint: {err}") from err
        raise _not_found(name_or_path, err) from err
    processor.tokenizer.padding_side = "right"  # the text tower pools with right padding
    model.to(target)
    model.eval()
    logger.info("loaded backbone %s on %s as %s", name_or_path, target, torch_dtype)
    return model, processor
