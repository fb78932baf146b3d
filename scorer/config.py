"""Configuration of a scorer checkpoint: one dataclass per concern, saved as JSON beside the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FORMAT_VERSION = 1
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"

# LoRA targets as regexes over module names of Qwen2_5_VLForConditionalGeneration. A plain name
# list ("qkv", "proj") would also wrap the vision patch_embed.proj Conv3d, which LoRA must not touch.
LORA_TARGETS = {
    "text": r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
    "vision": r".*visual\.blocks\.\d+\.attn\.(qkv|proj)",
}
LORA_TARGETS["both"] = f"(?:{LORA_TARGETS['text']})|(?:{LORA_TARGETS['vision']})"


@dataclass
class LoraSettings:
    """LoRA on the backbone (peft). ``towers`` picks the regex in LORA_TARGETS unless ``target_regex`` is set."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    towers: str = "both"  # "both" | "text" | "vision"
    target_regex: str | None = None

    def targets(self) -> str:
        if self.target_regex:
            return self.target_regex
        if self.towers not in LORA_TARGETS:
            raise ValueError(f"lora towers must be one of {sorted(LORA_TARGETS)}, got {self.towers!r}")
        return LORA_TARGETS[self.towers]


@dataclass
class ScorerConfig:
    """Everything needed to rebuild a DualEncoder around its backbone.

    ``backbone`` is a hub id, a local path, ``"tiny"``, or a path relative to the checkpoint
    directory (``"backbone"``) when the checkpoint carries its own full backbone weights.
    """

    backbone: str = DEFAULT_MODEL
    image_pooling: str = "attention"  # "mean" | "attention"
    text_pooling: str = "attention"  # "mean" | "attention" | "last"
    embed_dim: int = 768
    head_hidden_dim: int = 768
    head_layers: int = 2
    head_dropout: float = 0.1
    # Preprocessing, part of the checkpoint so that every scoring path feeds the model as it was
    # trained: captions cut at ``max_text_tokens`` (None: only at the tokenizer's maximum); images
    # first resized to a ``resize_to`` square with ``resample`` (None: aspect kept), then fitted to
    # the pixel budget. Original Remote_Scorer checkpoints: 512, bicubic, no text cut.
    max_text_tokens: int | None = 256
    min_pixels: int | None = None  # None: the checkpoint's own preprocessor setting
    max_pixels: int | None = None
    resize_to: int | None = None
    resample: str = "bicubic"
    lora: LoraSettings | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # provenance (training run, source checkpoint, ...)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScorerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scorer config fields: {unknown}")
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format version {version} is newer than this code ({FORMAT_VERSION}); upgrade"
            )
        values = dict(data)
        if values.get("lora") is not None:
            values["lora"] = LoraSettings(**values["lora"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ScorerConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def is_tiny_backbone(backbone: str) -> bool:
    """Whether ``backbone`` (``tiny``, a local folder or a hub id) is the tiny offline Qwen2.5-VL build."""
    if backbone == "tiny":
        return True
    if not (Path(backbone) / "config.json").is_file():
        return False  # a hub id: no real model is tiny
    from transformers import Qwen2_5_VLConfig

    from scorer.qwen2_5_vl.tiny import tiny_config_dict

    def sizes(config) -> tuple[int, ...]:
        text, vision = config.get_text_config(), config.vision_config
        return (text.hidden_size, text.num_hidden_layers, text.intermediate_size, vision.hidden_size, vision.depth)

    return sizes(Qwen2_5_VLConfig.from_pretrained(backbone)) == sizes(Qwen2_5_VLConfig(**tiny_config_dict()))


def default_scorer_config(backbone: str) -> ScorerConfig:
    """The config of a fresh scorer on ``backbone``: heads sized to the tiny build (hidden 128) on the tiny
    backbone (``tiny`` or a folder holding it), else the real default (768 → 768). The one place that chooses."""
    if is_tiny_backbone(backbone):
        from scorer.qwen2_5_vl.tiny import tiny_scorer_config

        config = tiny_scorer_config()
    else:
        config = ScorerConfig()
    config.backbone = backbone
    return config
