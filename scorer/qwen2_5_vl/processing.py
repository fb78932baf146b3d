"""The processor beside the model: images and captions → the tensors the two towers take."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from scorer.images import load_image, resampling


class DualEncoderProcessor:
    """Wraps the checkpoint's own Qwen2.5-VL processor for the dual encoder.

    Images go through ``scorer.images.load_image`` (16-bit/SAR stretch, optional square resize,
    pixel budget, decompression-bomb limit) and then the Qwen2-VL image processor; captions are
    tokenised bare (no chat template), right-padded, cut at ``max_text_tokens`` (None: at the
    tokenizer's own maximum). The settings come from the checkpoint (:meth:`from_config`).
    """

    def __init__(self, processor, max_text_tokens: int | None = 256, resize_to: int | None = None,
                 resample: str = "bicubic", max_image_pixels: int | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_text_tokens = max_text_tokens
        self.resize_to = resize_to
        self.resample = resample
        resampling(resample)  # an unknown filter fails here, not on the first image
        self.max_image_pixels = max_image_pixels  # None: scorer.images.pixel_limit()
        size = processor.image_processor.size
        self.min_pixels = int(size["shortest_edge"])
        self.max_pixels = int(size["longest_edge"])

    @classmethod
    def from_config(cls, processor, config) -> DualEncoderProcessor:
        """The HF processor with a ScorerConfig's preprocessing (text cut, resize, filter)."""
        return cls(processor, config.max_text_tokens, config.resize_to, config.resample)

    def load_images(self, images: Sequence[str | os.PathLike[str] | Image.Image]) -> list[Image.Image]:
        return [load_image(image, self.min_pixels, self.max_pixels, self.resize_to, self.resample,
                           self.max_image_pixels) for image in images]

    def images(self, images: Sequence[str | os.PathLike[str] | Image.Image]) -> dict[str, torch.Tensor]:
        """→ {"pixel_values": (n_patches, C·T·P·P), "image_grid_thw": (n_images, 3)}."""
        return self.pixels(self.load_images(images))

    def pixels(self, loaded: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Images already through :meth:`load_images` (e.g. then augmented) → the vision tower's input."""
        batch = self.processor.image_processor(images=list(loaded), return_tensors="pt")
        return {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}

    def texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """→ {"input_ids": (n, seq), "attention_mask": (n, seq)}; over-long captions are truncated."""
        return self.pad(self.tokenize(texts))

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Captions → token ids, truncated to ``max_text_tokens`` (or the tokenizer's maximum), not padded."""
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"caption {index} is empty or not a string: {text!r}")
        if not texts:
            return []
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_text_tokens)["input_ids"]

    def pad(self, token_ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        """Token id lists → a right-padded batch {"input_ids", "attention_mask"} (n, seq)."""
        batch = self.tokenizer.pad({"input_ids": list(token_ids)}, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
