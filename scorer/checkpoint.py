"""Scorer checkpoints: save atomically, load exactly, and import the original Remote_Scorer format.

Layout of a checkpoint directory::

    scorer_config.json   ScorerConfig (backbone id/path, pooling, heads, LoRA, preprocessing, version)
    heads.safetensors    poolers, projection heads, logit_scale, logit_bias
    adapter/             peft LoRA adapter (adapter_config.json + adapter_model.safetensors), if any
    backbone/            full backbone weights + processor, when the backbone itself was trained

Original Remote_Scorer checkpoints (``model_config.json`` with ``model_path``, ``heads.safetensors``,
``adapter_model.safetensors`` on the vision encoder) load through :func:`load_original_checkpoint`;
key mapping:

=====================================  =====================================================
original                               here
=====================================  =====================================================
``image_projection.model.*``           ``image_head.model.*`` (same Sequential layout)
``text_projection.model.*``            ``text_head.model.*``
``image_attention_pool.attention.*``   ``image_pool.attention.*`` (Linear(H,1), masked softmax)
``text_attention_pool.attention.*``    ``text_pool.attention.*``
``logit_scale``                        ``logit_scale`` (``logit_bias`` keeps its initial value)
adapter ``base_model.model.<k>``       ``base_model.model.model.visual.<k>`` (peft on the whole
                                       backbone; targets = the original name list, restricted
                                       to the vision encoder)
=====================================  =====================================================
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from scorer.config import LoraSettings, ScorerConfig, default_scorer_config
from scorer.model import DualEncoder
from scorer.qwen2_5_vl.backbone import load_backbone
from scorer.qwen2_5_vl.processing import DualEncoderProcessor

logger = logging.getLogger(__name__)

CONFIG_FILE = "scorer_config.json"
HEADS_FILE = "heads.safetensors"
ADAPTER_DIR = "adapter"
BACKBONE_DIR = "backbone"
ORIGINAL_CONFIG_FILE = "model_config.json"
# The original's inference (SimilarityScorer.score): every image resized to 512×512 bicubic before its
# processor (→ a 504×504 model input), captions truncated only at the tokenizer's maximum.
ORIGINAL_RESIZE_TO = 512
ORIGINAL_RESAMPLE = "bicubic"
ORIGINAL_LORA_RANK = 16  # the original project's default lora_r


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config files say, read without loading any weights."""

    backbone: str  # as a loader takes it: a backbone saved inside the checkpoint is given by its path
    lora_rank: int | None  # rank of its LoRA adapters, None without adapters
    original: bool  # the original Remote_Scorer format (model_config.json)


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """The backbone and LoRA rank of a checkpoint, from its config alone (``FileNotFoundError`` if none)."""
    directory = Path(path)
    if (directory / CONFIG_FILE).is_file():
        config = ScorerConfig.load(directory / CONFIG_FILE)
        return CheckpointInfo(_backbone_source(directory, config.backbone, _relative_backbone(config)),
                              config.lora.r if config.lora is not None else None, original=False)
    if (directory / ORIGINAL_CONFIG_FILE).is_file():
        original = json.loads((directory / ORIGINAL_CONFIG_FILE).read_text(encoding="utf-8"))
        has_adapter = original.get("use_lora") and (directory / "adapter_model.safetensors").is_file()
        rank = int(original.get("lora_r", ORIGINAL_LORA_RANK)) if has_adapter else None
        return CheckpointInfo(str(original.get("model_path", "")), rank, original=True)
    raise FileNotFoundError(f"{directory} is not a scorer checkpoint: no {CONFIG_FILE} or {ORIGINAL_CONFIG_FILE}")


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    directory = Path(path)
    return (directory / CONFIG_FILE).is_file() or (directory / ORIGINAL_CONFIG_FILE).is_file()


def save_checkpoint(
    model: DualEncoder,
    processor: DualEncoderProcessor,
    out_dir: str | os.PathLike[str],
    save_backbone: bool = False,
) -> Path:
    """Write ``model`` to ``out_dir`` atomically: a temporary sibling directory, then a rename.

    An existing checkpoint at ``out_dir`` stays intact until the new one is complete.
    ``save_backbone`` writes the full backbone weights (needed when the backbone itself was trained).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if save_backbone and model.has_lora:
        raise ValueError("save_backbone with LoRA adapters: merge or drop the adapters first")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        config = ScorerConfig.from_dict(model.config.to_dict())
        # What the processor applies is what the next load applies.
        config.min_pixels, config.max_pixels = processor.min_pixels, processor.max_pixels
        config.max_text_tokens, config.resize_to = processor.max_text_tokens, processor.resize_to
        config.resample = processor.resample
        if save_backbone:
            model.qwen.save_pretrained(staging / BACKBONE_DIR, safe_serialization=True)
            processor.processor.save_pretrained(staging / BACKBONE_DIR)
            config.backbone = BACKBONE_DIR
        elif _inside_checkpoint(config.backbone):
            # The base lives inside another checkpoint (e.g. LoRA on a fully fine-tuned tiny model):
            # carry it along, hard-linked when possible, so this checkpoint survives that one's deletion.
            shutil.copytree(config.backbone, staging / BACKBONE_DIR, copy_function=_link_or_copy)
            config.backbone = BACKBONE_DIR
        elif Path(config.backbone).is_dir():  # a local backbone: absolute, and relative to the checkpoint
            absolute = Path(config.backbone).resolve()
            config.backbone = str(absolute)
            config.extra["backbone_relative"] = os.path.relpath(absolute, out.resolve())
        if model.has_lora:
            model.backbone.save_pretrained(staging / ADAPTER_DIR, safe_serialization=True)
        save_file({k: v.float().cpu() for k, v in model.heads_state_dict().items()}, staging / HEADS_FILE)
        config.save(staging / CONFIG_FILE)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _inside_checkpoint(backbone: str) -> bool:
    path = Path(backbone)
    return path.name == BACKBONE_DIR and path.is_dir() and (path.parent / CONFIG_FILE).is_file()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the weights are never modified in place: sharing the inode is safe
    except OSError:
        shutil.copy2(src, dst)


def replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` into place; the old directory is removed only after the new one is in place."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _backbone_source(checkpoint: Path, backbone: str, relative: str | None = None) -> str:
    """Where the backbone is: inside the checkpoint, at its recorded path, or at its recorded path relative
    to the checkpoint (a moved checkpoint folder); ``FileNotFoundError`` naming both when neither resolves."""
    local = checkpoint / backbone
    if not Path(backbone).is_absolute() and local.is_dir():
        return str(local)
    if relative is None or Path(backbone).is_dir():
        return backbone
    beside = (checkpoint / relative).resolve()
    if beside.is_dir():
        return str(beside)
    raise FileNotFoundError(f"checkpoint {checkpoint}: its backbone folder is neither at {backbone} nor at {beside} "
                            f"({relative} relative to the checkpoint); move it back or edit {CONFIG_FILE}")


def _relative_backbone(config: ScorerConfig) -> str | None:
    relative = config.extra.get("backbone_relative")
    return str(relative) if relative else None


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trainable: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[DualEncoder, DualEncoderProcessor]:
    """Load a checkpoint written by :func:`save_checkpoint` (or an original Remote_Scorer one).

    ``min_pixels``/``max_pixels`` override the checkpoint's pixel budget (e.g. to retrain at another
    resolution); the next save records the new values.
    """
    from peft import PeftModel

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    if not (directory / CONFIG_FILE).is_file():
        if (directory / ORIGINAL_CONFIG_FILE).is_file():
            return load_original_checkpoint(directory, device=device, dtype=dtype)
        raise FileNotFoundError(f"{directory} is not a scorer checkpoint: no {CONFIG_FILE} or {ORIGINAL_CONFIG_FILE}")
    config = ScorerConfig.load(directory / CONFIG_FILE)
    config.min_pixels = min_pixels or config.min_pixels
    config.max_pixels = max_pixels or config.max_pixels
    # A checkpoint-local backbone is recorded by absolute path in memory, so a later LoRA-only save
    # elsewhere still points at it.
    config.backbone = _backbone_source(directory, config.backbone, _relative_backbone(config))
    qwen, hf_processor = load_backbone(config.backbone, device=device, dtype=dtype,
                                       min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    backbone = qwen
    if config.lora is not None:
        backbone = PeftModel.from_pretrained(qwen, directory / ADAPTER_DIR, is_trainable=trainable)
    model = DualEncoder(backbone, config)
    model.load_heads_state_dict(load_file(directory / HEADS_FILE))
    model.to(next(qwen.parameters()).device)
    model.train(trainable)
    return model, DualEncoderProcessor.from_config(hf_processor, config)


def new_scorer(
    backbone: str,
    config: ScorerConfig | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
) -> tuple[DualEncoder, DualEncoderProcessor]:
    """An untrained scorer (fresh heads drawn from ``seed``) on ``backbone``: hub id, path or ``tiny``.

    Without ``config``: :func:`scorer.config.default_scorer_config` (heads sized to the tiny backbone on it).
    """
    if config is None:
        config = default_scorer_config(backbone)
    config.backbone = backbone
    qwen, hf_processor = load_backbone(backbone, device=device, dtype=dtype,
                                       min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    torch.manual_seed(seed)
    model = DualEncoder(qwen, config)
    model.to(next(qwen.parameters()).device)
    model.eval()
    return model, DualEncoderProcessor.from_config(hf_processor, config)


# -- the original project's format ---------------------------------------------------------------
_ORIGINAL_HEAD_PREFIXES = {
    "image_projection.": "image_head.",
    "text_projection.": "text_head.",
    "image_attention_pool.": "image_pool.",
    "text_attention_pool.": "text_pool.",
}


def original_heads_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        new_key = next((our + key[len(old):] for old, our in _ORIGINAL_HEAD_PREFIXES.items()
                        if key.startswith(old)), key)
        mapped[new_key] = value
    return mapped


def original_lora_regex(target_modules: list[str] | str | None) -> str:
    """The original's peft name list, applied to the vision encoder only, as a regex over our names."""
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules or [])
    names = [name for name in names if name and name != "None"] or ["qkv"]
    alternatives = "|".join(re.escape(name) for name in names)
    return rf".*visual\.(?:.*\.)?(?:{alternatives})"


def load_original_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    backbone: str | None = None,
) -> tuple[DualEncoder, DualEncoderProcessor]:
    """Load a checkpoint of the original Remote_Scorer project (see the module docstring for keys).

    ``backbone`` overrides ``model_path`` (which usually names a directory on the author's machine).
    The scorer preprocesses as the original's inference did: images resized to 512×512 (bicubic)
    first, the backbone's own pixel limits, captions cut only at the tokenizer's maximum.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    directory = Path(path)
    original = json.loads((directory / ORIGINAL_CONFIG_FILE).read_text(encoding="utf-8"))
    if "model_path" not in original and backbone is None:
        raise ValueError(f"{directory / ORIGINAL_CONFIG_FILE}: no model_path; pass backbone=")
    heads_file = directory / HEADS_FILE
    if not heads_file.is_file():
        raise FileNotFoundError(f"original checkpoint {directory} has no {HEADS_FILE}")
    projection_dim = int(original.get("projection_dim", 768))
    config = ScorerConfig(
        backbone=backbone or original["model_path"], image_pooling="attention", text_pooling="attention",
        embed_dim=projection_dim, head_hidden_dim=projection_dim,
        head_layers=int(original.get("num_projection_layers", 2)),
        head_dropout=float(original.get("dropout", 0.1)),
        max_text_tokens=None, resize_to=ORIGINAL_RESIZE_TO, resample=ORIGINAL_RESAMPLE,
        extra={"imported_from": str(directory), "original_config": original},
    )
    qwen, hf_processor = load_backbone(config.backbone, device=device, dtype=dtype)
    backbone_module = qwen
    adapter_file = directory / "adapter_model.safetensors"
    if original.get("use_lora") and adapter_file.is_file():
        config.lora = LoraSettings(r=int(original.get("lora_r", ORIGINAL_LORA_RANK)),
                                   alpha=int(original.get("lora_alpha", 32)),
                                   dropout=float(original.get("lora_dropout", 0.05)),
                                   target_regex=original_lora_regex(original.get("lora_target_modules")))
        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=config.lora.targets(), bias="none")
        backbone_module = get_peft_model(qwen, lora)
        adapter = {re.sub(r"^base_model\.model\.", "base_model.model.model.visual.", key): value
                   for key, value in load_file(adapter_file).items()}
        result = set_peft_model_state_dict(backbone_module, adapter)
        if result.unexpected_keys:
            raise ValueError(f"{adapter_file}: adapter keys match no module here: {result.unexpected_keys[:5]}")
    elif original.get("use_lora"):
        raise FileNotFoundError(f"{directory / ORIGINAL_CONFIG_FILE} says use_lora but {adapter_file} is missing")
    model = DualEncoder(backbone_module, config)
    heads = original_heads_to_ours(load_file(heads_file))
    heads.setdefault("logit_bias", model.logit_bias.detach().clone())
    model.load_heads_state_dict(heads)
    model.to(next(qwen.parameters()).device)
    model.eval()
    return model, DualEncoderProcessor.from_config(hf_processor, config)
