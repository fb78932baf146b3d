"""Generation through any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, DashScope, Ollama, ...).

Requests go through the ``openai`` client (``openai.OpenAI(base_url=..., timeout=..., max_retries=...)``):
connection errors, timeouts, HTTP 408/409/429 and 5xx are retried by the client with exponential
back-off (0.5 s doubling to 8 s, or the server's ``Retry-After``); an endpoint that stays unreachable
raises :class:`GeneratorUnavailableError` naming the URL; any other HTTP error raises
:class:`GeneratorError` at once. Images travel as base64 PNG data URLs in ``image_url`` content
parts, after the same loading as the scorer's (16-bit / SAR stretch, pixel budget, pixel limit).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Sequence

import openai

from scorer.generation.base import (
    GenerationSettings,
    GeneratorError,
    GeneratorUnavailableError,
    ProgressCallback,
    check_request,
    fill_distinct,
)
from scorer.generation.prompts import caption_prompt
from scorer.images import load_image

logger = logging.getLogger(__name__)

NO_API_KEY = "not-needed"  # vLLM and Ollama take any key; the client insists on sending one


class OpenAICompatibleGenerator:
    """``POST {base_url}/chat/completions`` with ``model``, ``messages``, ``n`` and the sampling settings."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 settings: GenerationSettings | None = None, timeout: float = 60.0, retries: int = 3,
                 max_image_pixels: int = 1024 * 1024):
        if not base_url:
            raise ValueError("the OpenAI-compatible generator needs a base URL (--openai-base-url or OPENAI_BASE_URL)")
        if not model:
            raise ValueError("the OpenAI-compatible generator needs a model name (--openai-model)")
        if retries < 0 or timeout <= 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0, got {retries} and {timeout}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model
        self.settings = settings or GenerationSettings()
        self.retries = retries
        self.max_image_pixels = max_image_pixels
        self.client = openai.OpenAI(base_url=base_url.rstrip("/"), api_key=api_key or NO_API_KEY,
                                    timeout=timeout, max_retries=retries)

    @classmethod
    def from_env(cls, model: str, base_url: str | None = None, api_key: str | None = None,
                 **kwargs) -> OpenAICompatibleGenerator:
        """Arguments first, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``."""
        return cls(base_url or os.environ.get("OPENAI_BASE_URL", ""), model,
                   api_key or os.environ.get("OPENAI_API_KEY"), **kwargs)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model_name}"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAICompatibleGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------------
    def generate_captions(self, images: Sequence, n: int, style: str = "detailed", language: str = "en",
                          on_progress: ProgressCallback | None = None) -> list[list[str]]:
        """One request per image (asking for ``n`` choices; more requests if the server gives fewer)."""
        check_request(n, style, language)
        prompt = caption_prompt(style, language)
        captions = []
        for done, image in enumerate(images, 1):
            content = [{"type": "image_url", "image_url": {"url": self.image_data_url(image)}},
                       {"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            captions += fill_distinct([f"image {image}"], n, lambda _idx, k: [self.complete(messages, k)],
                                      self.settings.max_rounds)
            if on_progress:
                on_progress(done, len(images))
        return captions

    def chat(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int | None = None) -> list[list[str]]:
        return [fill_distinct([f"prompt {i}"], n, lambda _idx, k, p=prompt: [
                    self.complete([{"role": "user", "content": p}], k, max_new_tokens)], self.settings.max_rounds)[0]
                for i, prompt in enumerate(prompts)]

    # -- the protocol ----------------------------------------------------------------------------------
    def image_data_url(self, image) -> str:
        picture = load_image(image, max_pixels=self.max_image_pixels)  # ImageLoadError names the file
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def complete(self, messages: list[dict], k: int = 1, max_new_tokens: int | None = None) -> list[str]:
        """One chat completion request → the text of each returned choice."""
        s = self.settings
        options = {"max_tokens": max_new_tokens or s.max_new_tokens,
                   "temperature": s.temperature if s.do_sample else 0.0, "top_p": s.top_p}
        if k > 1:
            options["n"] = k
        if s.seed is not None:
            options["seed"] = s.seed
        answer = self._create(messages, options)
        try:
            return [_content_text(choice.message.content) for choice in answer.choices]
        except (AttributeError, TypeError) as err:
            raise GeneratorError(f"{self.url}: response is not an OpenAI chat completion ({err!r}): "
                                 f"{str(answer)[:200]}") from err

    def _create(self, messages: list[dict], options: dict):
        """``chat.completions.create``; the client's own retries spent, its errors become ours."""
        attempts = f"after {self.retries + 1} attempts"
        try:
            return self.client.chat.completions.create(model=self.model_name, messages=messages, **options)
        except (openai.APIConnectionError, openai.APITimeoutError) as err:  # refused, DNS, timeouts
            last = f"{type(err).__name__}: {err.__cause__ or err}"
        except openai.APIStatusError as err:
            last = f"HTTP {err.status_code}: {err.response.text[:200]}"
            if not retried_by_the_client(err.status_code):
                raise GeneratorError(f"{self.url} answered {last}") from err
        except openai.APIResponseValidationError as err:
            raise GeneratorError(f"{self.url}: response is not an OpenAI chat completion: {err}") from err
        raise GeneratorUnavailableError(
            f"OpenAI-compatible endpoint {self.url} is unavailable {attempts} ({last}). "
            f"Is the server running and the base URL right (it usually ends in /v1)?")


def retried_by_the_client(status: int) -> bool:
    """The statuses the openai client retries (timeouts, conflicts, rate limits, server errors)."""
    return status in (408, 409, 429) or status >= 500


def _content_text(content) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise TypeError(f"message content is {type(content).__name__}")
