"""Candidate generation: captions from the loaded Qwen2.5-VL or an OpenAI-compatible endpoint, hard negatives.

Public API::

    from scorer.generation import LocalQwenGenerator, GenerationSettings, generate_hard_negatives
    generator = LocalQwenGenerator(model, processor, GenerationSettings(temperature=0.8))
    captions = generator.generate_captions(["imgs/1.png"], n=5, style="detailed", language="en")
    negatives = generate_hard_negatives("two red cars left of a white house", n=3, generator=generator)

The CLI is ``python -m scorer.generation``.
"""

from scorer.generation.base import (
    CaptionGenerator,
    GenerationSettings,
    GeneratorError,
    GeneratorUnavailableError,
    ProgressCallback,
)
from scorer.generation.local import LocalQwenGenerator
from scorer.generation.negatives import check_edit, generate_hard_negatives, validate_proposals
from scorer.generation.prompts import LANGUAGES, STYLES, caption_prompt, hard_negative_prompt
from scorer.generation.rules import EDIT_KINDS, HardNegative, find_sites, rule_negatives

__all__ = [
    "EDIT_KINDS", "LANGUAGES", "STYLES", "CaptionGenerator", "GenerationSettings", "GeneratorError",
    "GeneratorUnavailableError", "HardNegative", "LocalQwenGenerator", "OpenAICompatibleGenerator",
    "ProgressCallback", "caption_prompt", "check_edit", "find_sites", "generate_hard_negatives",
    "hard_negative_prompt", "rule_negatives", "validate_proposals",
]


def __getattr__(name: str):
    # The ``openai`` client is needed only for an endpoint: a local generator works without it installed.
    if name == "OpenAICompatibleGenerator":
        from scorer.generation.openai_compat import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
