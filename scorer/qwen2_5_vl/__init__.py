"""The Qwen2.5-VL backbone family: loading, the processor beside it, and the tiny offline build."""

from scorer.qwen2_5_vl.backbone import BackboneNotFoundError, load_backbone, resolve_backbone_path, resolve_dtype
from scorer.qwen2_5_vl.processing import DualEncoderProcessor

__all__ = ["BackboneNotFoundError", "DualEncoderProcessor", "load_backbone", "resolve_backbone_path",
           "resolve_dtype"]
