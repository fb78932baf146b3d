"""TrainConfig: one dataclass for a training run, read from a YAML recipe and overridden on the command line.

``python train.py --config configs/tiny_ucm.yaml --lr 3e-4 --max_steps 50``: every field is a
``--flag`` of the same name; YAML keys must be field names (a typo is an error, not ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from trainer.losses import DEFAULT_TERM_WEIGHTS, parse_loss_spec

TRAIN_BACKBONE = ("lora", "full", "none")
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")  # as scorer.qwen2_5_vl.backbone.DTYPE_CHOICES


@dataclass
class TrainConfig:
    # -- model -------------------------------------------------------------------------------------
    model: str = "tiny"  # fresh heads on: "tiny" | hub id | local Qwen2.5-VL path
    init_checkpoint: str | None = None  # continue from this scorer checkpoint instead (the app's active model)
    train_backbone: str = "lora"  # "lora" | "full" (needed for the random tiny backbone) | "none" (heads only)
    freeze_token_embeddings: bool = False  # with "full": keep the (vocabulary-sized) input embeddings fixed
    freeze_vision_blocks: bool = False  # with "full": keep the vision encoder's patch embedding and blocks fixed
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_towers: str = "both"  # "both" | "text" | "vision"
    lora_target_regex: str | None = None
    max_pixels: int | None = None  # processor pixel budget (None: the backbone's or checkpoint's own)
    min_pixels: int | None = None
    max_text_tokens: int | None = None
    dtype: str = "auto"  # the frozen base's precision: auto | bf16 | fp16 | fp32 (trained parameters stay fp32)
    # -- data --------------------------------------------------------------------------------------
    train_file: str | None = None
    val_file: str | None = None
    image_root: str = "."
    val_image_root: str | None = None  # default: image_root
    on_invalid: str = "error"  # bad records: "error" (report and stop) | "skip" (report and drop)
    augment: bool = False  # random flips / 90° turns of the training images
    augment_directions: str = "swap"  # captions naming a direction: "swap" the words | "skip" the turn | "ignore"
    augment_crop_scale: float = 1.0  # with augment: random crops of this share of the area or more (1: none)
    attribute_negatives: int = 0  # per record and epoch: its positive with one colour/count/shape word swapped
    cache_images: bool = False  # keep decoded training images in memory
    num_workers: int = 0
    # -- loss --------------------------------------------------------------------------------------
    loss: str = "infonce+focal_triplet"  # names from trainer.losses.LOSS_NAMES joined by "+"
    loss_weights: dict[str, float] = field(default_factory=dict)  # per loss name, default 1.0
    focal_margin: float = 0.5
    focal_gamma: float = 2.0
    # per negative group; "swapped" (the attribute negatives) defaults to the "hard" weight
    focal_term_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TERM_WEIGHTS))
    contrastive_negatives: bool = True  # the batch's negative captions are extra contrastive columns
    contrastive_gather: bool = True  # DDP: InfoNCE/SigLIP over all processes' batches (trainer.distributed)
    # -- optimisation ------------------------------------------------------------------------------
    max_steps: int | None = None  # optimizer steps; None: from epochs
    epochs: float = 1.0
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr: float = 1e-4  # backbone (LoRA or full)
    head_lr: float | None = None  # poolers, heads, temperature; None: lr
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # linear from 0 to lr over these steps; None: warmup_ratio × max_steps
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1  # cosine decays to lr × min_lr_ratio
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU) | "bf16" | "no"
    seed: int = 0
    # -- logging, evaluation, checkpoints ----------------------------------------------------------
    output_dir: str = "runs/train"
    log_every: int = 10
    eval_every: int | None = None  # steps; None: once per epoch and at the end
    save_every: int = 200  # steps; a checkpoint is also written at the end and on a stop
    eval_batch_size: int = 32
    eval_at_start: bool = False  # evaluate the model it starts from before step 1 (step 0 of the curves)
    best_metric: str = "mean_accuracy"  # one of TripletEvaluator.metric_names (train() checks it)
    resume: bool = False  # continue from OUTPUT_DIR/last (model, optimizer, scheduler, step, RNG)

    def __post_init__(self) -> None:
        if self.train_backbone not in TRAIN_BACKBONE:
            raise ValueError(f"train_backbone must be one of {TRAIN_BACKBONE}, got {self.train_backbone!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}")
        if self.augment_directions not in ("swap", "skip", "ignore"):
            raise ValueError(f"augment_directions must be swap, skip or ignore, got {self.augment_directions!r}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be auto, bf16 or no, got {self.mixed_precision!r}")
        if not 0.0 < self.augment_crop_scale <= 1.0:
            raise ValueError(f"augment_crop_scale must be in (0, 1], got {self.augment_crop_scale}")
        if self.attribute_negatives < 0:
            raise ValueError(f"attribute_negatives must be 0 or more, got {self.attribute_negatives}")
        for name in ("batch_size", "grad_accum", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        parse_loss_spec(self.loss, self.loss_weights)  # raises on an unknown loss name

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        return cls(**data)


def load_yaml(path: str | Path) -> dict:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training recipe is a YAML mapping of TrainConfig fields")
    return data


def _parse_mapping(text: str) -> dict[str, float]:
    """``"infonce=1,focal_triplet=0.5"`` → {"infonce": 1.0, "focal_triplet": 0.5}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {part!r}")
        out[key.strip()] = float(value)
    return out


def _optional(convert):
    return lambda text: None if text.lower() in ("none", "null", "") else convert(text)


def _argument_type(hint) -> tuple[object, bool]:
    """Type hint of a field → (argparse type, is optional)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = isinstance(hint, types.UnionType) and len(args) < len(typing.get_args(hint))
    base = args[0] if optional else hint
    if typing.get_origin(base) is dict:
        return _parse_mapping, optional
    return base, optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a Remote Scorer dual encoder on caption triplets.")
    parser.add_argument("--config", help="YAML recipe of TrainConfig fields; command-line flags override it")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind, optional = _argument_type(hints[f.name])
        flag = f"--{f.name}"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=_optional(kind) if optional else kind, default=None)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """YAML recipe (``--config``) first, then every flag given on the command line."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    values = load_yaml(args.config) if args.config else {}
    overrides = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    # "--max_steps none" is parsed to None and would vanish from the overrides: keep explicit nulls.
    for token in argv:
        name = token.lstrip("-").split("=")[0]
        if token.startswith("--") and name in vars(args) and vars(args)[name] is None and name != "config":
            overrides[name] = None
    values.update(overrides)
    return TrainConfig.from_dict(values)
