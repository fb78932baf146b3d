"""Remote Scorer's dual encoder on Qwen2.5-VL: load, embed, score and rank captions of images.

Public API::

    from scorer import Scorer, load_checkpoint, new_scorer, save_checkpoint
    scorer = Scorer.from_checkpoint("runs/ucm/best")          # or Scorer(model, processor, version)
    ranked = scorer.rank([("imgs/1.png", ["caption a", "caption b"])])
    ranked[0].best.text, ranked[0].best.score                 # cosine in [-1, 1]
"""

from scorer.checkpoint import is_checkpoint, load_checkpoint, load_original_checkpoint, new_scorer, save_checkpoint
from scorer.config import DEFAULT_MODEL, LoraSettings, ScorerConfig
from scorer.images import ImageLoadError, load_image
from scorer.model import DualEncoder
from scorer.qwen2_5_vl import BackboneNotFoundError, DualEncoderProcessor, load_backbone
from scorer.ranking import EmbeddingCache, RankedCaption, RankedImage, Scorer, cosine_scores, rank_candidates

__all__ = [
    "DEFAULT_MODEL", "BackboneNotFoundError", "DualEncoder", "DualEncoderProcessor", "EmbeddingCache",
    "ImageLoadError", "LoraSettings", "RankedCaption", "RankedImage", "Scorer", "ScorerConfig",
    "cosine_scores", "is_checkpoint", "load_backbone", "load_checkpoint", "load_image",
    "load_original_checkpoint", "new_scorer", "rank_candidates", "save_checkpoint",
]
