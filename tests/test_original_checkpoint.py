"""A checkpoint written by the original Remote_Scorer project loads and embeds as that project did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from scorer import Scorer, load_checkpoint, save_checkpoint
from scorer.qwen2_5_vl.tiny import ensure_tiny_backbone

PROJECTION_DIM = 64


class OriginalAttentionPooling(nn.Module):
    """The original layout: Linear(H, 1) scores, padding at −1e9, softmax, weighted sum."""

    def __init__(self, hidden: int):
        super().__init__()
        self.attention = nn.Linear(hidden, 1)

    def forward(self, states, mask):
        scores = self.attention(states) + (1.0 - mask.unsqueeze(-1)) * -1e9
        return (torch.softmax(scores, dim=1) * states).sum(1)


def original_head(hidden: int) -> nn.Module:
    head = nn.Module()
    head.model = nn.Sequential(nn.Linear(hidden, PROJECTION_DIM), nn.LayerNorm(PROJECTION_DIM), nn.ReLU(),
                               nn.Dropout(0.1), nn.Linear(PROJECTION_DIM, PROJECTION_DIM))
    return head


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    """Write a checkpoint exactly as the original ImageTextEncoder.save_pretrained laid it out."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = tmp_path_factory.mktemp("original")
    backbone_dir = ensure_tiny_backbone()
    torch.manual_seed(7)
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(backbone_dir, dtype=torch.float32).eval()
    vision = get_peft_model(qwen.model.visual, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                          target_modules=["qkv"], bias="none"))
    with torch.no_grad():
        for name, param in vision.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    vision.save_pretrained(out)  # adapter_model.safetensors with keys base_model.model.blocks.*
    hidden = qwen.config.text_config.hidden_size
    parts = {"image_projection": original_head(hidden), "text_projection": original_head(hidden),
             "image_attention_pool": OriginalAttentionPooling(hidden),
             "text_attention_pool": OriginalAttentionPooling(hidden)}
    heads = {f"{name}.{key}": value.detach().clone() for name, module in parts.items()
             for key, value in module.state_dict().items()}
    heads["logit_scale"] = torch.tensor(2.6592)
    save_file(heads, out / "heads.safetensors")
    (out / "model_config.json").write_text(json.dumps({
        "model_path": str(backbone_dir), "projection_dim": PROJECTION_DIM, "dropout": 0.1,
        "num_projection_layers": 2, "use_lora": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "lora_target_modules": ["qkv"], "freeze_vision_encoder": True, "freeze_text_encoder": True,
    }))
    for module in parts.values():
        module.eval()
    return out, vision, qwen, parts


def test_original_checkpoint_embeds_as_the_original_code(original_checkpoint, tmp_path):
    out, vision, qwen, parts = original_checkpoint
    model, processor = load_checkpoint(out, device="cpu", dtype="fp32")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 140, 3), dtype=np.uint8))
    captions = ["two white planes on the apron", "农田和河流"]
    pixels = processor.images([image])
    texts = processor.texts(captions)
    with torch.inference_mode():
        ours_image = model.encode_images(**pixels)
        ours_text = model.encode_texts(**texts)
        # The original encode_image / encode_text, step by step.
        features = vision(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"]).pooler_output
        features = features.view(1, -1, features.shape[-1])
        pooled = parts["image_attention_pool"](features, torch.ones(features.shape[:2]))
        expected_image = F.normalize(parts["image_projection"].model(pooled), dim=1)
        hidden = qwen.model.language_model(**texts).last_hidden_state
        pooled = parts["text_attention_pool"](hidden, texts["attention_mask"].float())
        expected_text = F.normalize(parts["text_projection"].model(pooled), dim=1)
    torch.testing.assert_close(ours_image, expected_image, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours_text, expected_text, atol=1e-5, rtol=1e-4)
    assert model.config.lora is not None and "qkv" in model.config.lora.targets()


def original_inference(checkpoint, image_paths, captions) -> torch.Tensor:
    """The original's SimilarityScorer.score, step by step, for every (image, caption) → (n_images, n_captions).

    Image: open → RGB → 512×512 bicubic → its processor (the backbone's own pixel limits) → encode_image.
    Caption: its processor with truncation only at the tokenizer's maximum → encode_text. Score: cosine.
    Each image and caption is encoded alone, as ``score`` does one pair at a time (no padding).
    """
    from transformers import AutoProcessor

    out, vision, qwen, parts = checkpoint
    processor = AutoProcessor.from_pretrained(json.loads((out / "model_config.json").read_text())["model_path"])
    images, texts = [], []
    with torch.inference_mode():
        for path in image_paths:
            image = Image.open(path).convert("RGB").resize((512, 512), Image.BICUBIC)
            pixels = processor.image_processor(images=[image], return_tensors="pt")
            assert pixels["image_grid_thw"].tolist() == [[1, 36, 36]]  # a 504×504 model input
            features = vision(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"]).pooler_output
            features = features.view(1, -1, features.shape[-1])
            pooled = parts["image_attention_pool"](features, torch.ones(features.shape[:2]))
            images.append(F.normalize(parts["image_projection"].model(pooled), dim=1))
        for caption in captions:
            tokens = processor(text=[caption], padding=True, truncation=True, return_tensors="pt")
            hidden = qwen.model.language_model(input_ids=tokens["input_ids"],
                                               attention_mask=tokens["attention_mask"]).last_hidden_state
            pooled = parts["text_attention_pool"](hidden, tokens["attention_mask"].float())
            texts.append(F.normalize(parts["text_projection"].model(pooled), dim=1))
    return torch.cat(images) @ torch.cat(texts).T


def test_original_checkpoint_scores_as_the_original_inference(original_checkpoint, tmp_path):
    """Issue 11: with our own preprocessing (aspect kept, 256-token cut) this differs by 0.028."""
    model, processor = load_checkpoint(original_checkpoint[0], device="cpu", dtype="fp32")
    assert (processor.resize_to, processor.resample, processor.max_text_tokens) == (512, "bicubic", None)
    rng = np.random.default_rng(1)
    paths = []
    for index, size in enumerate([(256, 256), (300, 200), (90, 700)]):  # UCM tile, landscape, strip
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(paths[-1])
    long_caption = " ".join(["a dense residential area with many buildings and green trees"] * 30)
    assert len(processor.tokenizer(long_caption)["input_ids"]) > 256  # our own checkpoints cut here
    captions = ["two white planes on the apron", "农田和河流", long_caption]
    ours = Scorer(model, processor, "original").score_pairs([(p, c) for p in paths for c in captions])
    expected = original_inference(original_checkpoint, paths, captions).flatten().tolist()
    assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-3


def test_preprocessing_travels_with_the_checkpoint(original_checkpoint, tiny_checkpoint_session, tmp_path):
    model, processor = load_checkpoint(original_checkpoint[0], device="cpu", dtype="fp32")
    again = load_checkpoint(save_checkpoint(model, processor, tmp_path / "converted"), device="cpu")[1]
    assert (again.resize_to, again.resample, again.max_text_tokens) == (512, "bicubic", None)
    ours = load_checkpoint(tiny_checkpoint_session, device="cpu")[1]
    assert (ours.resize_to, ours.max_text_tokens) == (None, 256)  # our own checkpoints keep theirs


def test_original_checkpoint_without_its_adapter_is_a_clear_error(original_checkpoint, tmp_path):
    import shutil

    out = tmp_path / "broken"
    shutil.copytree(original_checkpoint[0], out)
    (out / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_checkpoint(out, device="cpu")
