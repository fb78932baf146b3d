"""What every caption generator shares: settings, the protocol, errors, and the n-distinct loop."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scorer.generation.prompts import LANGUAGES, STYLES

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (done, total)
# draw(indices, k) → k fresh samples for each of the items at ``indices``
DrawFn = Callable[[list[int], int], list[list[str]]]


class GeneratorError(RuntimeError):
    """The generator answered, but not with something usable (HTTP 4xx, a malformed response)."""


class GeneratorUnavailableError(GeneratorError):
    """The generator cannot be reached (connection refused, timeouts, 5xx after all retries)."""


@dataclass
class GenerationSettings:
    """Decoding settings shared by the local model and the OpenAI-compatible endpoint.

    ``batch_size`` is images (or prompts) per ``generate`` call of the local model; each of them
    asks for ``n`` samples, so one call decodes ``batch_size · n`` sequences. ``max_rounds`` bounds
    the extra sampling rounds spent replacing empty or duplicate captions. Each answer stops at the
    end of its turn (end-of-sequence); ``max_new_tokens`` only bounds one that never ends (64 tokens
    hold a detailed caption of about 45 words).
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = True
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 50  # 0 = off; always passed, since Qwen's own generation_config is near-greedy
    repetition_penalty: float = 1.05
    batch_size: int = 4
    max_rounds: int = 4
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.max_rounds < 1:
            raise ValueError("max_new_tokens, batch_size and max_rounds must be at least 1")
        if self.temperature <= 0 and self.do_sample:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")


@runtime_checkable
class CaptionGenerator(Protocol):
    """Writes candidate captions of images, and answers text-only prompts (for hard negatives)."""

    kind: str  # "local" | "openai"
    model_name: str

    @property
    def name(self) -> str:  # "local:<model>" | "openai:<model>", the ``generator`` field of a JSONL line
        ...

    def generate_captions(self, images: Sequence, n: int, style: str = "detailed", language: str = "en",
                          on_progress: ProgressCallback | None = None) -> list[list[str]]:
        """n distinct captions per image (fewer only when sampling keeps repeating itself)."""
        ...

    def chat(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int | None = None) -> list[list[str]]:
        """n distinct answers per text-only prompt (``max_new_tokens`` overrides the settings' bound)."""
        ...


def check_request(n: int, style: str, language: str) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (captions per image) must be a positive integer, got {n!r}")
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; choose one of {', '.join(STYLES)}")
    if language not in LANGUAGES:
        raise ValueError(f"unknown prompt language {language!r}; choose one of {', '.join(LANGUAGES)}")


def clean_text(text: str) -> str:
    """One caption per line: whitespace runs collapsed, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def text_key(text: str) -> str:
    """What two captions must differ in to count as different."""
    return clean_text(text).casefold()


def fill_distinct(labels: Sequence[str], n: int, draw: DrawFn, max_rounds: int) -> list[list[str]]:
    """Draw samples for each item until it has ``n`` distinct non-empty texts (or rounds run out).

    ``labels`` name the items (for the warning when one stays short); ``draw`` only sees their indices.
    """
    found: list[list[str]] = [[] for _ in labels]
    seen: list[set[str]] = [set() for _ in labels]
    missing = list(range(len(labels)))
    for _ in range(max_rounds):
        if not missing:
            break
        need = max(n - len(found[i]) for i in missing)
        for i, samples in zip(missing, draw(missing, need)):
            for sample in samples:
                text, key = clean_text(sample), text_key(sample)
                if text and key not in seen[i] and len(found[i]) < n:
                    seen[i].add(key)
                    found[i].append(text)
        missing = [i for i in missing if len(found[i]) < n]
    for i in missing:
        logger.warning("%s: only %d distinct texts of %d after %d sampling rounds",
                       labels[i], len(found[i]), n, max_rounds)
    return found
