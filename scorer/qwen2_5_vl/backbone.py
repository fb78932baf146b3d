"""Load a Qwen2.5-VL checkpoint (hub id, local path or ``tiny``) once, with its own processor."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class BackboneNotFoundError(FileNotFoundError):
    """The backbone is neither a local directory nor downloadable (offline / not cached)."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")  # what the entry points' --dtype offers
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 matmuls
# bf16 pays off on a CPU through memory traffic, for large weights only: the tiny backbone (hidden 128)
# encodes 8 images + 8 captions in 0.51 s in fp32 and 1.44 s in bf16 on an AVX512-BF16 CPU; the
# 3B (hidden 2048) 1.1–1.35 s per image in bf16 against 1.9–2.7 s in fp32 (issue 15).
CPU_BF16_MIN_HIDDEN = 1024


CPUINFO = "/proc/cpuinfo"


def cpu_bf16_flags(cpuinfo: str | os.PathLike[str] | None = None) -> list[str]:
    """The native-bf16 flags (AMX, AVX512-BF16) this CPU reports; [] where /proc/cpuinfo is absent."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device | None = None,
                  hidden_size: int | None = None) -> tuple[torch.dtype, str]:
    """The weights' precision for ``device`` → ``(dtype, reason)``; the reason is for the log.

    ``name``: ``auto`` (or None), a short name (``bf16``/``fp16``/``fp32``), a torch name
    (``bfloat16``, ``torch.float32``) or a ``torch.dtype``. ``auto`` is bf16 on a CUDA device that
    supports it and on a CPU with native bf16 (AMX or AVX512-BF16, from /proc/cpuinfo), fp32 elsewhere;
    on the CPU a model narrower than ``CPU_BF16_MIN_HIDDEN`` (``hidden_size``, when given) stays fp32.
    """
    if isinstance(name, torch.dtype):
        return name, "asked for"
    key = (name or "auto").strip().lower().removeprefix("torch.")
    if key != "auto":
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_CHOICES)}")
        return DTYPES[key], f"asked for {key}"
    target = pick_device(device) if not isinstance(device, torch.device) else device
    if target.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: the GPU supports bf16"
        return torch.float32, "auto: the GPU has no bf16"
    if target.type == "cpu":
        flags = cpu_bf16_flags()
        if flags and hidden_size is not None and hidden_size < CPU_BF16_MIN_HIDDEN:
            return torch.float32, f"auto: fp32 for a small model (hidden {hidden_size}), faster than bf16 on a CPU"
        if flags:
            return torch.bfloat16, f"auto: the CPU has native bf16 ({', '.join(flags)})"
        return torch.float32, f"auto: the CPU has no native bf16 (none of {', '.join(CPU_BF16_FLAGS)})"
    return torch.float32, f"auto: fp32 on {target.type}"


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """:func:`resolve_dtype` without the reason."""
    return resolve_dtype(dtype, device)[0]


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

    The one model is shared by both towers (and by caption generation). ``dtype``: see
    :func:`resolve_dtype` (None = ``auto``); the log line says which precision was chosen and why.
    """
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path = resolve_backbone_path(name_or_path)
    target = device if isinstance(device, torch.device) else pick_device(device)
    pixel_limits = {key: value for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if value}
    if not Path(path).is_dir() and Path(path).expanduser().exists():
        raise BackboneNotFoundError(f"backbone path {path} exists but is not a checkpoint directory")
    _check_reachable(path)
    try:
        hidden = AutoConfig.from_pretrained(path).get_text_config().hidden_size
        torch_dtype, why = resolve_dtype(dtype, target, hidden)
        processor = AutoProcessor.from_pretrained(path, **pixel_limits)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        if Path(path).is_dir():
            raise BackboneNotFoundError(f"{path} is not a complete Qwen2.5-VL checkpoint: {err}") from err
        raise _not_found(name_or_path, err) from err
    processor.tokenizer.padding_side = "right"  # the text tower pools with right padding
    model.to(target)
    model.eval()
    logger.info("loaded backbone %s on %s as %s (%s)", name_or_path, target, str(torch_dtype).removeprefix("torch."),
                why)
    return model, processor
