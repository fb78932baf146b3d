"""Caption generation with the Qwen2.5-VL the scorer already holds: no second model in memory.

The backbone is an instruct VL model; the scorer's LoRA adapters (trained for embedding, not for
writing) are switched off while it writes, and the tokenizer pads on the left only while it writes
(the text tower pools right-padded captions).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from PIL import Image

from scorer.generation.base import GenerationSettings, ProgressCallback, check_request, fill_distinct
from scorer.generation.prompts import caption_prompt
from scorer.model import DualEncoder
from scorer.qwen2_5_vl.processing import DualEncoderProcessor

logger = logging.getLogger(__name__)

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class LocalQwenGenerator:
    """Generates with ``model.qwen.generate`` through the checkpoint's own chat template."""

    kind = "local"

    def __init__(self, model: DualEncoder, processor: DualEncoderProcessor,
                 settings: GenerationSettings | None = None, model_name: str | None = None):
        self.model = model
        self.processor = processor
        self.settings = settings or GenerationSettings()
        self.model_name = model_name or model.config.backbone

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model_name}"

    @property
    def device(self) -> torch.device:
        return next(self.model.qwen.parameters()).device

    # -- public API ------------------------------------------------------------------------------------
    def generate_captions(self, images: Sequence, n: int, style: str = "detailed", language: str = "en",
                          on_progress: ProgressCallback | None = None) -> list[list[str]]:
        """Images (paths or PIL) → n distinct captions each, ``settings.batch_size`` images per call."""
        check_request(n, style, language)
        self._check_sampling(n)
        prompt = caption_prompt(style, language)
        size = self.settings.batch_size
        captions: list[list[str]] = []
        with self._seeded():
            for start in range(0, len(images), size):
                pictures = self.processor.load_images(images[start:start + size])  # ImageLoadError names the file

                def draw(indices: list[int], k: int, pictures: list[Image.Image] = pictures) -> list[list[str]]:
                    return self.sample([prompt] * len(indices), k, [pictures[i] for i in indices])

                labels = [f"image {start + i}" for i in range(len(pictures))]
                captions += fill_distinct(labels, n, draw, self.settings.max_rounds)
                if on_progress:
                    on_progress(min(start + size, len(images)), len(images))
        return captions

    def chat(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int | None = None) -> list[list[str]]:
        """Text-only prompts → n distinct answers each (``max_new_tokens`` overrides the settings' bound)."""
        self._check_sampling(n)
        size = self.settings.batch_size
        answers: list[list[str]] = []
        with self._seeded():
            for start in range(0, len(prompts), size):
                chunk = list(prompts[start:start + size])
                labels = [f"prompt {start + i}" for i in range(len(chunk))]
                answers += fill_distinct(labels, n, lambda idx, k, chunk=chunk: self.sample(
                    [chunk[i] for i in idx], k, max_new_tokens=max_new_tokens), self.settings.max_rounds)
        return answers

    # -- one generate call -----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], images: Sequence[Image.Image] | None = None) -> dict:
        """User turns (one image each, if given) → left-padded model inputs ending in the assistant header."""
        hf = self.processor.processor
        contents = [[{"type": "image"}, {"type": "text", "text": p}] if images else [{"type": "text", "text": p}]
                    for p in prompts]
        texts = [hf.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                        tokenize=False) for content in contents]
        with self._left_padding():
            if images:
                batch = hf(text=texts, images=list(images), padding=True, return_tensors="pt")
            else:
                batch = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        return {key: value.to(self.device) for key, value in batch.items()}

    def sample(self, prompts: Sequence[str], k: int, images: Sequence[Image.Image] | None = None,
               max_new_tokens: int | None = None) -> list[list[str]]:
        """One batched ``generate``: k sampled answers per prompt (adapters off, no gradients).

        Each answer stops at its end-of-sequence token; one cut at ``max_new_tokens`` is logged."""
        inputs = self.encode_prompts(prompts, images)
        s = self.settings
        stop = self.stop_token_ids()
        options = dict(max_new_tokens=max_new_tokens or s.max_new_tokens, min_new_tokens=s.min_new_tokens,
                       do_sample=s.do_sample, repetition_penalty=s.repetition_penalty, num_return_sequences=k,
                       eos_token_id=stop, pad_token_id=self.processor.tokenizer.pad_token_id)
        if s.do_sample:
            options.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        with self._adapters_disabled(), torch.inference_mode():
            output = self.model.qwen.generate(**inputs, **options)  # (len(prompts)·k, prompt + new)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        unfinished = int((~torch.isin(new_tokens, torch.tensor(stop, device=new_tokens.device)).any(-1)).sum())
        if unfinished:
            logger.warning("%d of %d answers reached max_new_tokens=%d before their end: cut short",
                           unfinished, len(new_tokens), options["max_new_tokens"])
        texts = self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]

    def stop_token_ids(self) -> list[int]:
        """Where an answer ends: the chat turn's end (``<|im_end|>``), ``<|endoftext|>``, and the model's own
        ``generation_config.eos_token_id``; each sequence stops at the first, and the call when all have."""
        tokenizer = self.processor.tokenizer
        ids = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
        configured = self.model.qwen.generation_config.eos_token_id
        ids += configured if isinstance(configured, list) else [configured]
        unknown = tokenizer.unk_token_id
        return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i != unknown))

    # -- context ---------------------------------------------------------------------------------------
    def _check_sampling(self, n: int) -> None:
        if n > 1 and not self.settings.do_sample:
            raise ValueError(f"{n} distinct answers per prompt need sampling; set do_sample=True")

    @contextlib.contextmanager
    def _adapters_disabled(self) -> Iterator[None]:
        """peft's ``disable_adapter()`` when the scorer has LoRA; eval mode; both restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        adapters = self.model.backbone.disable_adapter() if self.model.has_lora else contextlib.nullcontext()
        try:
            with adapters:
                yield
        finally:
            self.model.train(was_training)

    @contextlib.contextmanager
    def _left_padding(self) -> Iterator[None]:
        tokenizer = self.processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            yield
        finally:
            tokenizer.padding_side = side

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """With ``settings.seed``: reproducible samples, without touching the caller's RNG state."""
        if self.settings.seed is None:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.settings.seed)
            yield
