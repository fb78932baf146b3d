"""Caption generation with the tiny backbone: the text is nonsense, the plumbing is real."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from scorer import LoraSettings, Scorer, new_scorer
from scorer.generation import GenerationSettings, LocalQwenGenerator, caption_prompt, generate_hard_negatives
from scorer.images import ImageLoadError
from scorer.qwen2_5_vl.tiny import tiny_scorer_config

# Short, plain sampling: top-p/top-k/repetition filters over the 152k vocabulary dominate tiny's CPU time.
FAST = dict(max_new_tokens=6, batch_size=2, seed=0, top_p=1.0, top_k=0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def tiny_model():
    return new_scorer("tiny", tiny_scorer_config(), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("gen_images")
    paths = []
    for i, size in enumerate([(56, 56), (84, 56), (56, 112)]):
        path = folder / f"{i}.png"
        Image.new("RGB", size, (40 * i, 120, 200 - 30 * i)).save(path)
        paths.append(str(path))
    return paths


def test_n_distinct_captions_per_image_in_batches_with_progress(tiny_model, images):
    generator = LocalQwenGenerator(*tiny_model, GenerationSettings(**FAST), model_name="tiny")
    calls = []
    captions = generator.generate_captions(images, n=3, style="short", on_progress=lambda d, t: calls.append((d, t)))
    assert len(captions) == len(images)
    for texts in captions:
        assert len(texts) == 3
        assert all(text.strip() == text and text for text in texts)
        assert len({text.casefold() for text in texts}) == 3
    assert calls == [(2, 3), (3, 3)]  # batch_size 2: one call per batch
    assert generator.name == "local:tiny"


def test_same_seed_same_captions_and_callers_rng_untouched(tiny_model, images):
    generator = LocalQwenGenerator(*tiny_model, GenerationSettings(**FAST))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generator.generate_captions(images[:1], n=2)
    assert torch.equal(torch.rand(1), expected_next)
    assert generator.generate_captions(images[:1], n=2) == first


def test_chinese_prompt_reaches_the_model_left_padded(tiny_model, images):
    model, processor = tiny_model
    generator = LocalQwenGenerator(model, processor, GenerationSettings(**FAST))
    prompts = [caption_prompt("detailed", "zh"), caption_prompt("short", "zh")]
    assert all(re.search(r"[\u4e00-\u9fff]", p) for p in prompts)
    pictures = processor.load_images(images[:2])
    batch = generator.encode_prompts(prompts, pictures)
    decoded = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)
    assert prompts[0] in decoded[0] and prompts[1] in decoded[1]
    assert all(text.endswith("<|im_start|>assistant\n") for text in decoded)
    mask = batch["attention_mask"]
    assert bool(mask[:, -1].all()) and not bool(mask.all())  # padded on the left, prompts end together
    assert processor.tokenizer.padding_side == "right"  # restored for the text tower
    assert processor.texts(["a", "a longer caption"])["attention_mask"][0, -1] == 0
    captions = generator.generate_captions(images[:2], n=2, style="objects", language="zh")
    assert [len(texts) for texts in captions] == [2, 2]


def test_lora_adapters_off_while_generating_and_on_after(tiny_model, images):
    model, processor = tiny_model
    settings = GenerationSettings(**FAST)
    before_lora = LocalQwenGenerator(model, processor, settings).generate_captions(images[:2], n=2)
    model.apply_lora(LoraSettings(r=4))
    try:
        _check_adapters_off_while_generating(model, processor, settings, images, before_lora)
    finally:  # give the other tests their plain model back
        model.backbone = model.backbone.unload()
        model.config.lora = None


def _check_adapters_off_while_generating(model, processor, settings, images, before_lora) -> None:
    torch.manual_seed(0)
    for name, param in model.backbone.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.5)  # adapters now change every LoRA'd layer's output
    pairs = [(images[0], "two red cars"), (images[1], "a river beside farmland")]

    def scores() -> list[float]:
        return Scorer(model, processor, "v").score_pairs(pairs)  # a fresh scorer: no cached embeddings

    adapted = scores()
    with model.backbone.disable_adapter():
        base = scores()
    assert adapted != pytest.approx(base, abs=1e-4)  # the perturbed adapters matter

    lora_layers = [m for m in model.backbone.modules() if hasattr(m, "lora_A") and len(m.lora_A)]
    seen: list[bool] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _args: seen.append(mod.disable_adapters)) for m in lora_layers]
    try:
        with_lora = LocalQwenGenerator(model, processor, settings).generate_captions(images[:2], n=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and all(seen)  # every LoRA layer that ran during generation had its adapter off
    assert with_lora == before_lora  # the base model wrote them: same seed, same text as before LoRA
    assert scores() == pytest.approx(adapted, abs=1e-6)  # adapters back on afterwards
    assert model.has_lora


def test_generation_stops_at_end_of_sequence(tiny_model, images):
    """Each answer ends at <|im_end|>: the model is made to say it at its third token; 20 are allowed."""
    model, processor = tiny_model
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    steps = []

    def say_end_at_third_token(_module, _args, logits):
        steps.append(1)
        if len(steps) >= 3:
            logits[..., im_end] += 1e4
        return logits

    settings = GenerationSettings(**(FAST | {"max_new_tokens": 20, "min_new_tokens": 0}))
    generator = LocalQwenGenerator(model, processor, settings)
    hook = model.qwen.lm_head.register_forward_hook(say_end_at_third_token)
    try:
        answers = generator.sample(["Describe the image."], 2, processor.load_images(images[:1]))
    finally:
        hook.remove()
    assert len(steps) == 3  # three decoding steps, not twenty
    assert len(answers[0]) == 2 and all("<|im_end|>" not in text for text in answers[0])
    assert im_end in generator.stop_token_ids() and GenerationSettings().max_new_tokens == 64


def test_bad_requests_fail_clearly(tiny_model, images, tmp_path):
    generator = LocalQwenGenerator(*tiny_model, GenerationSettings(**FAST))
    with pytest.raises(ValueError, match="style"):
        generator.generate_captions(images, n=2, style="poem")
    with pytest.raises(ValueError, match="language"):
        generator.generate_captions(images, n=2, language="fr")
    with pytest.raises(ValueError, match="n"):
        generator.generate_captions(images, n=0)
    with pytest.raises(ValueError, match="sampling"):
        LocalQwenGenerator(*tiny_model, GenerationSettings(do_sample=False)).generate_captions(images, n=2)
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError, match="missing.png"):
        generator.generate_captions([str(missing)], n=1)


def test_hard_negatives_with_the_local_model_fall_back_to_rules(tiny_model):
    generator = LocalQwenGenerator(*tiny_model, GenerationSettings(**FAST))
    caption = "Three red cars are parked left of a white house."
    negatives = generate_hard_negatives(caption, 3, generator=generator)
    assert len(negatives) == 3
    assert len({n.text for n in negatives} | {caption}) == 4
    assert all(n.method == "rule" for n in negatives)  # tiny's nonsense never passes validation
