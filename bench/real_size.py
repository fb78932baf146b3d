"""The real-size Qwen2.5-VL scorer with random weights, for speed and memory benchmarks.

Weights don't change speed, so a model built from a checkpoint's ``config.json`` alone (e.g.
``../shared/reference/qwen2.5-vl-3b-instruct``) measures what the real one would. The weights come from
transformers' own initialisation (normal linear weights, RMSNorm weights of one): filling every parameter
from N(0, 0.02), norms included, shrinks the activations layer by layer into subnormal floats, which a
CPU computes very slowly. The processor is the tiny backbone's (the same vocabulary and the same patching)
with the pixel limits of the folder's ``preprocessor_config.json`` when it has one.

``counted_builder`` makes ``trainer.train`` build this model (instead of loading weights) and counts the
patches and caption tokens its towers see, for FLOP rates (bench/device_check.py).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch


def reference_pixel_limits(config_dir: str | Path) -> dict[str, int]:
    """min/max pixels of ``config_dir``'s preprocessor_config.json ({} when the file is absent)."""
    path = Path(config_dir) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: int(data[key]) for key in ("min_pixels", "max_pixels") if data.get(key)}


def random_real_size_scorer(config_dir: str | Path, device: str | torch.device, dtype: torch.dtype,
                            max_pixels: int | None = None, scorer_config=None, seed: int = 0):
    """→ (DualEncoder, DualEncoderProcessor) at the size of ``config_dir``'s config.json, random weights.

    Built directly on ``device``. ``scorer_config`` (a ScorerConfig: heads, pixel and text limits) as
    ``scorer.new_scorer`` takes it; heads drawn from ``seed`` as there.
    """
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from scorer.config import ScorerConfig
    from scorer.model import DualEncoder
    from scorer.qwen2_5_vl import DualEncoderProcessor
    from scorer.qwen2_5_vl.backbone import resolve_backbone_path

    if not (Path(config_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {config_dir} (a Qwen2.5-VL checkpoint folder)")
    config = Qwen2_5_VLConfig.from_pretrained(config_dir)
    torch.manual_seed(seed)
    with torch.device(device):
        qwen = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    scorer_config = scorer_config or ScorerConfig()
    scorer_config.backbone = f"random:{Path(config_dir).name}"
    limits = reference_pixel_limits(config_dir)
    asked = {"min_pixels": scorer_config.min_pixels, "max_pixels": max_pixels or scorer_config.max_pixels}
    limits.update({key: value for key, value in asked.items() if value})
    processor = AutoProcessor.from_pretrained(resolve_backbone_path("tiny"), **limits)
    processor.tokenizer.padding_side = "right"
    torch.manual_seed(seed)
    model = DualEncoder(qwen, scorer_config).to(device).eval()
    return model, DualEncoderProcessor(processor, scorer_config.max_text_tokens)


class TokenCounter:
    """Forward pre-hooks on the two towers: the patches and non-padding caption tokens they have seen."""

    def __init__(self, model):
        vision = model.vision
        merger = sum(p.numel() for p in vision.merger.parameters())  # runs once per 2×2 merged patches
        self.n_vision = sum(p.numel() for p in vision.parameters()) - merger + merger / vision.spatial_merge_size**2
        embeddings = model.language_model.get_input_embeddings().weight.numel()
        self.n_text = sum(p.numel() for p in model.language_model.parameters()) - embeddings
        self.patches, self.tokens = 0, 0
        model.vision.register_forward_pre_hook(self._vision)
        model.language_model.register_forward_pre_hook(self._text, with_kwargs=True)

    def _vision(self, module, args) -> None:
        self.patches += args[0].shape[0]

    def _text(self, module, args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        self.tokens = self.tokens + (mask.sum() if mask is not None else kwargs["input_ids"].numel())  # no sync

    def snapshot(self) -> tuple[int, int]:
        return self.patches, int(self.tokens)

    def flops(self, patches: int, tokens: int) -> float:
        return 4.0 * (self.n_vision * patches + self.n_text * tokens)


@contextlib.contextmanager
def counted_builder(reference: str | Path | None, counters: list[TokenCounter]):
    """``train()`` builds its fresh scorer with ``trainer.model_setup.new_scorer``: within this block, the
    random one of ``reference``'s size (None: what ``new_scorer`` builds), each with a TokenCounter appended
    to ``counters``. The only trainer internal the benchmarks touch."""
    import trainer.model_setup as setup

    if not hasattr(setup, "new_scorer"):
        raise RuntimeError("trainer.model_setup.new_scorer is gone: update counted_builder to where train() "
                           "builds a fresh scorer")
    original = setup.new_scorer

    def build(backbone, config=None, device=None, dtype=None, seed=0):
        if reference is None:
            model, processor = original(backbone, config, device=device, dtype=dtype, seed=seed)
        else:
            model, processor = random_real_size_scorer(reference, device, dtype, scorer_config=config,
                                                       seed=seed)
        counters.append(TokenCounter(model))
        return model, processor

    setup.new_scorer = build
    try:
        yield
    finally:
        setup.new_scorer = original
