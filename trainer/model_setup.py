"""The model side of training: which scorer to start from, what is trained, and the module DDP wraps."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from scorer.checkpoint import load_checkpoint, new_scorer
from scorer.config import LoraSettings, ScorerConfig, default_scorer_config
from scorer.model import DualEncoder
from scorer.qwen2_5_vl.processing import DualEncoderProcessor
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)


def base_dtype(config: TrainConfig, device: torch.device) -> str | torch.dtype:
    """The frozen base's precision: ``config.dtype`` (``auto``: bf16 on a bf16 GPU or CPU, fp32 elsewhere;
    the backbone loader resolves it and logs why); fp32 for a full fine-tune, where every weight is trained.

    Whatever is trained is cast to fp32 master weights afterwards (:func:`set_trainable`), so a LoRA run
    holds the 3B base in bf16 (7 GB, not 15) and only the adapters, heads and temperature in fp32.
    """
    if config.train_backbone == "full":
        return torch.float32
    return config.dtype


def fresh_scorer_config(config: TrainConfig) -> ScorerConfig:
    scorer_config = default_scorer_config(config.model)
    for name in ("max_pixels", "min_pixels", "max_text_tokens"):
        if getattr(config, name) is not None:
            setattr(scorer_config, name, getattr(config, name))
    return scorer_config


def build_model(config: TrainConfig, device: torch.device,
                resume_from: Path | None = None) -> tuple[DualEncoder, DualEncoderProcessor]:
    """Resume from ``resume_from``, continue from ``init_checkpoint``, or fresh heads on ``model``."""
    dtype = base_dtype(config, device)
    source = resume_from or (Path(config.init_checkpoint) if config.init_checkpoint else None)
    if source is not None:
        model, processor = load_checkpoint(source, device=device, dtype=dtype, trainable=True,
                                           min_pixels=config.min_pixels, max_pixels=config.max_pixels)
        logger.info("starting from checkpoint %s", source)
        if config.max_text_tokens:
            processor.max_text_tokens = model.config.max_text_tokens = config.max_text_tokens
    else:
        model, processor = new_scorer(config.model, fresh_scorer_config(config), device=device, dtype=dtype,
                                      seed=config.seed)
    if config.train_backbone == "full" and model.has_lora:
        raise ValueError(f"{source} has LoRA adapters; full fine-tuning needs a checkpoint without them "
                         f"(or train with --train_backbone lora)")
    if config.train_backbone == "lora" and not model.has_lora:
        model.apply_lora(LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                                      towers=config.lora_towers, target_regex=config.lora_target_regex))
    model.config.extra["trained_from"] = str(source or config.model)
    logger.info("frozen base in %s, trained parameters in fp32", str(model.qwen.dtype).removeprefix("torch."))
    return model, processor


def set_trainable(model: DualEncoder, config: TrainConfig, uses_logit_scale: bool, uses_logit_bias: bool) -> None:
    """Freeze the base, unfreeze LoRA (or everything for "full"), heads, and the temperature/bias in use.

    Parameters no loss uses are frozen, so DDP never waits for a gradient that cannot come.
    """
    model.requires_grad_(False)
    if config.train_backbone == "full":
        model.qwen.requires_grad_(True)
        lm_head = getattr(model.qwen, "lm_head", None)
        embeddings = model.language_model.get_input_embeddings()
        if lm_head is not None and lm_head.weight is not embeddings.weight:
            lm_head.requires_grad_(False)  # untied LM head: the dual encoder never uses it
        if config.freeze_token_embeddings:
            embeddings.requires_grad_(False)
        if config.freeze_vision_blocks:  # fixed image features; the merger, pooling and head still learn
            for name, module in model.vision.named_children():
                module.requires_grad_(name == "merger")
    elif config.train_backbone == "lora":
        for name, parameter in model.backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)
    for module in (model.image_pool, model.text_pool, model.image_head, model.text_head):
        module.requires_grad_(True)
    model.logit_scale.requires_grad_(uses_logit_scale)
    model.logit_bias.requires_grad_(uses_logit_bias)
    for parameter in model.parameters():  # fp32 master weights for everything trained
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def text_tower_frozen(model: DualEncoder) -> bool:
    return not any(parameter.requires_grad for parameter in model.language_model.parameters())


def param_groups(model: DualEncoder, config: TrainConfig) -> list[dict]:
    """AdamW groups: backbone at ``lr``, heads at ``head_lr``; no weight decay on vectors (biases, norms, scales)."""
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((name.startswith("backbone."), parameter.ndim >= 2), []).append(parameter)
    return [{"params": params, "lr": config.lr if is_backbone else head_lr,
             "weight_decay": config.weight_decay if decay else 0.0}
            for (is_backbone, decay), params in sorted(groups.items(), reverse=True)]


def trainable_names(model: DualEncoder) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


class TextFeatureCache:
    """The frozen language model's hidden states per caption, computed once (the original did too)."""

    def __init__(self):
        self.features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, model: DualEncoder, texts: list[str], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
        """→ (n, seq, H) on the input's device, zero in the padding."""
        todo = [i for i, text in enumerate(texts) if text not in self.features]
        if todo:
            was_training = model.training
            model.eval()
            hidden = model.text_features(input_ids[todo], attention_mask[todo])  # (k, seq, H)
            model.train(was_training)
            for row, i in enumerate(todo):
                self.features[texts[i]] = hidden[row, : int(attention_mask[i].sum())].cpu()
        out = torch.zeros(*input_ids.shape, self.features[texts[0]].shape[-1],
                          dtype=self.features[texts[0]].dtype, device=input_ids.device)
        for i, text in enumerate(texts):
            cached = self.features[text]
            out[i, : len(cached)] = cached.to(input_ids.device)
        return out


class TrainingModule(nn.Module):
    """What DDP wraps: batch tensors → (image embeddings, text embeddings, logit scale, logit bias).

    ``text_hidden`` (cached frozen-LM states) replaces running the text tower. No loss in here.
    """

    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, text_hidden: torch.Tensor | None = None):
        image_emb = self.model.encode_images(pixel_values, image_grid_thw)  # (n_img, d)
        if text_hidden is None:
            text_emb = self.model.encode_texts(input_ids, attention_mask)  # (n_txt, d)
        else:
            text_emb = self.model.embed_text_features(text_hidden, attention_mask)
        return image_emb, text_emb, self.model.logit_scale, self.model.logit_bias
