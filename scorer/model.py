"""The dual encoder: two towers over one shared Qwen2.5-VL, each with its pooling and projection head.

image tower: vision encoder → merged patch features (n_tokens, H) → pooling → head → L2 norm
text tower:  language model on the caption tokens → (seq, H) → pooling → head → L2 norm
score:       cosine similarity of the two unit vectors
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scorer.config import LoraSettings, ScorerConfig
from scorer.heads import ProjectionHead
from scorer.pooling import build_pooler


class DualEncoder(nn.Module):
    """Composes (does not subclass) a ``Qwen2_5_VLForConditionalGeneration``.

    ``backbone`` may later be wrapped by peft (``apply_lora``); the towers always reach the vision
    encoder and language model through :attr:`qwen`, the unwrapped model with LoRA layers in place.
    """

    def __init__(self, backbone: nn.Module, config: ScorerConfig):
        super().__init__()
        self.config = config
        self.backbone = backbone
        hidden = self.qwen.config.text_config.hidden_size  # the vision merger projects to the LM width
        self.image_pool = build_pooler(config.image_pooling, hidden, allowed=("mean", "attention"))
        self.text_pool = build_pooler(config.text_pooling, hidden, allowed=("mean", "attention", "last"))
        head = dict(hidden_dim=config.head_hidden_dim, out_dim=config.embed_dim,
                    layers=config.head_layers, dropout=config.head_dropout)
        self.image_head = ProjectionHead(hidden, **head)
        self.text_head = ProjectionHead(hidden, **head)
        # Temperature (and SigLIP bias) of the in-batch contrastive losses, learned with the model
        # as in open_clip. Initial scale ln(1/0.07), bias −10 (SigLIP paper).
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    # -- backbone access -------------------------------------------------------------------------
    @property
    def qwen(self) -> nn.Module:
        """The Qwen2_5_VLForConditionalGeneration, through the peft wrapper if there is one."""
        from peft import PeftModel

        if isinstance(self.backbone, PeftModel):
            return self.backbone.base_model.model
        return self.backbone

    @property
    def vision(self) -> nn.Module:
        return self.qwen.model.visual

    @property
    def language_model(self) -> nn.Module:
        return self.qwen.model.language_model

    @property
    def has_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.backbone, PeftModel)

    def apply_lora(self, settings: LoraSettings) -> None:
        """Wrap the backbone with peft LoRA on the regex targets; the base weights are frozen by peft."""
        from peft import LoraConfig, get_peft_model

        if self.has_lora:
            raise ValueError("the backbone already has LoRA adapters")
        lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=settings.targets(), bias="none")
        self.backbone = get_peft_model(self.backbone, lora)
        self.backbone.train(self.training)  # peft switches to train mode; keep the caller's mode
        self.config.lora = settings

    # -- towers ------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values (n_patches, C·T·P·P), image_grid_thw (n, 3) → (n, embed_dim), unit norm."""
        vision = self.vision
        merged = vision(pixel_values.to(vision.dtype), grid_thw=image_grid_thw).pooler_output  # (n_tokens, H)
        sizes = (image_grid_thw.prod(-1) // vision.spatial_merge_size**2).tolist()
        per_image = torch.split(merged, sizes)
        features = nn.utils.rnn.pad_sequence(per_image, batch_first=True)  # (n, max_tokens, H)
        lengths = torch.tensor(sizes, device=features.device)
        mask = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
        pooled = self.image_pool(features.float(), mask)  # (n, H) in fp32: heads stay fp32
        return F.normalize(self.image_head(pooled), dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (n, seq), right-padded → (n, embed_dim), unit norm."""
        hidden = self.text_features(input_ids, attention_mask)  # (n, seq, H)
        return self.embed_text_features(hidden, attention_mask)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The language model's last hidden states (n, seq, H): what a frozen text tower can cache."""
        out = self.language_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def embed_text_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_pool(hidden.float(), attention_mask)  # (n, H)
        return F.normalize(self.text_head(pooled), dim=-1)

    def forward(self, pixel_values, image_grid_thw, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of a batch of images and a batch of captions: ((n_img, d), (n_txt, d))."""
        return self.encode_images(pixel_values, image_grid_thw), self.encode_texts(input_ids, attention_mask)

    # -- what a checkpoint stores beside the backbone ----------------------------------------------
    def heads_state_dict(self) -> dict[str, torch.Tensor]:
        parts = {"image_pool": self.image_pool, "text_pool": self.text_pool,
                 "image_head": self.image_head, "text_head": self.text_head}
        state = {f"{name}.{key}": value for name, module in parts.items()
                 for key, value in module.state_dict().items()}
        state["logit_scale"] = self.logit_scale.data
        state["logit_bias"] = self.logit_bias.data
        return {key: value.detach().contiguous() for key, value in state.items()}

    def load_heads_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.heads_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"heads do not match this config: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            if own[key].shape != value.shape:
                raise ValueError(f"heads tensor {key}: expected shape {tuple(own[key].shape)}, "
                                 f"got {tuple(value.shape)}")
        # strict=False: the backbone's keys are absent here by design; the head keys were checked above.
        self.load_state_dict(state, strict=False)
