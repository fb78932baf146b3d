"""What a training run or a model swap needs in memory, against what the device has: a :class:`Plan`.

Pure arithmetic over sizes (tested at any size without loading a model), plus two readers: the
device's free memory (``torch.cuda.mem_get_info`` on a GPU, ``psutil`` available memory on the CPU) and a
checkpoint's parameter count (its backbone's ``*.safetensors`` headers and ``config.json``).

The estimate of a training process, in bytes::

    weights      base_params × base_bytes               the frozen base (bf16: 2, fp32: 4)
    trainable    trainable_params × 16                  fp32 master + gradient + AdamW's two moments
    activations  batch × item_tokens × hidden × layers × per-layer factor × 2 bytes
                 (per-layer factor ACTIVATION_FACTOR without gradient checkpointing; with it, one saved
                 input per layer plus one layer recomputed: 1 + ACTIVATION_FACTOR / layers)
    overhead     OVERHEAD_BYTES                         interpreter, torch, processor, data, allocator slack

The factor is the transformer's stored activations per token per layer in units of hidden × 2 bytes
(~34/2 for attention + MLP, Korthikanti et al. 2022); it is an estimate, so the plan keeps MARGIN free.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3
ACTIVATION_FACTOR = 17
OVERHEAD_BYTES = 3 * GIB  # measured: a 3B LoRA run (batch 2, checkpointing) held 3.2 GB beyond weights and AdamW
MARGIN = 0.10  # share of the available memory a plan leaves free
ADAMW_BYTES = 16  # per trained parameter: fp32 weight, gradient, two moments
DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class TrainingNeed:
    """The sizes a training process's memory follows (parameter counts, bytes, tokens per triplet)."""

    base_params: int
    base_bytes: int  # per frozen parameter
    trainable_params: int
    batch_size: int
    item_tokens: int  # tokens (image patches + caption tokens) one triplet puts through the towers
    hidden_size: int
    layers: int
    gradient_checkpointing: bool

    def weights(self) -> int:
        return self.base_params * self.base_bytes

    def optimizer(self) -> int:
        return self.trainable_params * ADAMW_BYTES

    def activations(self) -> int:
        factor = 1 + ACTIVATION_FACTOR / self.layers if self.gradient_checkpointing else ACTIVATION_FACTOR
        return int(self.batch_size * self.item_tokens * self.hidden_size * self.layers * factor * 2)

    def total(self) -> int:
        return self.weights() + self.optimizer() + self.activations() + OVERHEAD_BYTES

    def describe(self) -> str:
        return (f"weights {gib(self.weights())} + trainable and AdamW {gib(self.optimizer())} + activations "
                f"{gib(self.activations())} (batch {self.batch_size}, checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}) + overhead {gib(OVERHEAD_BYTES)}")


@dataclass(frozen=True)
class Plan:
    """A decision: ``fits``, and whether the app releases its own scorer first (``release_scorer``)."""

    fits: bool
    release_scorer: bool
    need: int  # bytes the new work needs
    scorer: int  # bytes the app's scorer holds now (freed when released)
    available: int  # bytes the device has free now (the app's scorer already loaded)
    reason: str

    def describe(self) -> str:
        return (f"{self.reason}: needs {gib(self.need)}, device has {gib(self.available)} free, "
                f"the app's scorer holds {gib(self.scorer)}")


def plan_training(need: int, scorer: int, available: int, same_device: bool = True,
                  margin: float = MARGIN) -> Plan:
    """Train next to the app's scorer when it fits; else release the scorer for the run; else refuse."""
    usable = available * (1 - margin)
    if need <= usable:
        return Plan(True, False, need, scorer, available, "fits beside the app's scorer")
    if same_device and need <= (available + scorer) * (1 - margin):
        return Plan(True, True, need, scorer, available,
                    "fits once the app releases its scorer (annotators work from stored scores)")
    return Plan(False, False, need, scorer, available, "does not fit on this device even with the app's scorer "
                "released; lower the batch size, turn gradient checkpointing on or free memory")


def plan_swap(new: int, old: int, available: int, margin: float = MARGIN) -> Plan:
    """A promotion or rollback: the old scorer is always released first; refuse when the new one cannot fit."""
    if new <= (available + old) * (1 - margin):
        return Plan(True, True, new, old, available, "the new model fits once the old one is released")
    return Plan(False, False, new, old, available, "the new model does not fit even with the old one released")


# -- readers ---------------------------------------------------------------------------------------------------
def available_bytes(device: str | None = None) -> int:
    """Free memory of ``device``: the GPU's free memory, or the machine's available RAM for the CPU.

    On the CPU the weights transformers loads from safetensors stay memory-mapped: page cache, which the
    kernel counts as available although evicting it while the model runs means reading it back. This
    process's file-backed resident pages are therefore not counted as available (they are freed, and
    count again, once the scorer is released).
    """
    import torch

    if device and device.startswith("cuda") or (device is None and torch.cuda.is_available()):
        return int(torch.cuda.mem_get_info(torch.device(device or "cuda"))[0])
    import psutil

    return max(0, int(psutil.virtual_memory().available) - int(psutil.Process().memory_info().shared))


def safetensors_params(folder: Path) -> int:
    """Parameter count of every ``*.safetensors`` file in ``folder`` (from their headers; no weights read)."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


@dataclass(frozen=True)
class BackboneShape:
    """What the plan needs of a backbone: its parameters and the text and vision towers' sizes."""

    params: int
    hidden: int
    layers: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_intermediate: int


def backbone_shape(folder: str | Path) -> BackboneShape | None:
    """The shape of a local Qwen2.5-VL folder (None for a hub id or a folder without config.json)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    return BackboneShape(params=safetensors_params(folder), hidden=int(text["hidden_size"]),
                         layers=int(text["num_hidden_layers"]), intermediate=int(text["intermediate_size"]),
                         vision_hidden=int(vision.get("hidden_size", 0)), vision_layers=int(vision.get("depth", 0)),
                         vision_intermediate=int(vision.get("intermediate_size", 0)))


def lora_params(shape: BackboneShape, rank: int) -> int:
    """LoRA parameters on every linear layer of both towers: rank × (inputs + outputs) per layer."""
    h, i = shape.hidden, shape.intermediate
    text = shape.layers * rank * (4 * 2 * h + 3 * (h + i))  # q, k, v, o (k, v at most h wide), MLP
    vh, vi = shape.vision_hidden, shape.vision_intermediate
    vision = shape.vision_layers * rank * ((vh + 3 * vh) + 2 * vh + 3 * (vh + vi))  # qkv, proj, MLP
    return text + vision


def training_need(shape: BackboneShape, base_bytes: int, lora_rank: int, batch_size: int, max_pixels: int,
                  caption_tokens: int, gradient_checkpointing: bool) -> TrainingNeed:
    """The need of a run on ``shape``: LoRA of ``lora_rank`` (0: full fine-tune, in fp32), images of
    ``max_pixels`` (14×14 patches), captions of ``caption_tokens`` (positive and negatives together)."""
    patches = max(1, max_pixels // (14 * 14))
    trainable = lora_params(shape, lora_rank) if lora_rank > 0 else shape.params
    # The vision tower runs on every patch at its own width; count it in text-width tokens.
    vision_tokens = patches * shape.vision_hidden * shape.vision_layers // max(1, shape.hidden * shape.layers)
    return TrainingNeed(base_params=shape.params, base_bytes=base_bytes if lora_rank > 0 else 4,
                        trainable_params=trainable, batch_size=batch_size,
                        item_tokens=vision_tokens + caption_tokens, hidden_size=shape.hidden,
                        layers=shape.layers, gradient_checkpointing=gradient_checkpointing)


def checkpoint_shape(checkpoint: str | Path) -> BackboneShape | None:
    """The backbone shape of a scorer checkpoint (None when its backbone is not a local folder)."""
    from scorer.checkpoint import read_checkpoint_info
    from scorer.qwen2_5_vl.backbone import resolve_backbone_path

    backbone = read_checkpoint_info(checkpoint).backbone
    path = Path(resolve_backbone_path(backbone)) if backbone == "tiny" else Path(backbone)
    return backbone_shape(path) if path.is_dir() else None


def dtype_bytes(dtype: str | None, device: str | None, hidden: int) -> int:
    """Bytes per weight of a model of width ``hidden`` loaded with ``dtype`` (``auto`` resolved) on ``device``."""
    from scorer.qwen2_5_vl.backbone import resolve_dtype

    return resolve_dtype(dtype, device, hidden)[0].itemsize


def checkpoint_bytes(checkpoint: str | Path, dtype: str | None = None, device: str | None = None) -> int:
    """Bytes a scorer checkpoint's weights take once loaded (0 when its backbone's size is unknown)."""
    shape = checkpoint_shape(checkpoint)
    if shape is None:
        log.warning("the size of %s is unknown (its backbone is not a local folder): not planned", checkpoint)
        return 0
    return shape.params * dtype_bytes(dtype, device, shape.hidden)
