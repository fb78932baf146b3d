"""The dual encoder: batch-invariant encoding, exact save/load, LoRA targets, cached ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scorer import EmbeddingCache, LoraSettings, Scorer, load_checkpoint, save_checkpoint

CAPTIONS = [
    "farmland",
    "Many buildings and green trees are around the baseball diamond, with some cars parked on the road.",
    "农田被一条河流穿过，河边有三栋白色建筑。",
    "两架白色飞机停在机场的停机坪上",
    "A river with sandy banks crosses dense forest from the top left to the bottom right of the image.",
]


def _images(tmp_path) -> list[str]:
    """Mixed sizes, like a real corpus: square, wide, tall, tiny."""
    rng = np.random.default_rng(0)
    paths = []
    for n, (w, h) in enumerate([(256, 256), (300, 120), (90, 200), (40, 40)]):
        path = tmp_path / f"img{n}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint_session):
    return load_checkpoint(tiny_checkpoint_session, device="cpu")


def test_image_encodes_the_same_alone_and_in_a_mixed_batch(loaded, tmp_path):
    model, processor = loaded
    paths = _images(tmp_path)
    with torch.inference_mode():
        together = model.encode_images(**processor.images(paths))
        alone = torch.cat([model.encode_images(**processor.images([p])) for p in paths])
    assert together.shape == (4, model.config.embed_dim)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(4))


def test_caption_encodes_the_same_alone_and_in_a_padded_batch(loaded):
    model, processor = loaded
    with torch.inference_mode():
        together = model.encode_texts(**processor.texts(CAPTIONS))
        alone = torch.cat([model.encode_texts(**processor.texts([c])) for c in CAPTIONS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[2], together[3])  # different Chinese captions differ


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_other_text_poolings_are_batch_invariant(tiny_checkpoint_session, pooling):
    from scorer import ScorerConfig, new_scorer

    model, processor = new_scorer("tiny", ScorerConfig(text_pooling=pooling, image_pooling="mean",
                                                      embed_dim=64, head_hidden_dim=64), device="cpu")
    with torch.inference_mode():
        together = model.encode_texts(**processor.texts(CAPTIONS))
        alone = torch.cat([model.encode_texts(**processor.texts([c])) for c in CAPTIONS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_empty_caption_is_rejected_with_its_index(loaded):
    _, processor = loaded
    with pytest.raises(ValueError, match="caption 1"):
        processor.texts(["fine", "  "])


def _embed(model, processor, paths):
    with torch.inference_mode():
        return model.encode_images(**processor.images(paths)), model.encode_texts(**processor.texts(CAPTIONS))


def test_save_then_load_reproduces_embeddings_exactly(tiny_checkpoint, tmp_path):
    model, processor = load_checkpoint(tiny_checkpoint, device="cpu")
    with torch.no_grad():  # make the heads differ from a fresh init, as after training
        model.image_head.model[0].weight.mul_(1.5)
        model.text_pool.attention.weight.normal_()
    paths = _images(tmp_path)
    before = _embed(model, processor, paths)
    out = save_checkpoint(model, processor, tmp_path / "saved", save_backbone=True)
    again, again_processor = load_checkpoint(out, device="cpu")
    after = _embed(again, again_processor, paths)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_lora_targets_the_attention_of_both_towers_and_round_trips(tiny_checkpoint, tmp_path):
    model, processor = load_checkpoint(tiny_checkpoint, device="cpu")
    model.apply_lora(LoraSettings(r=4, alpha=8))
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in model.backbone.named_parameters() if ".lora_A" in name}
    assert not any("patch_embed" in name or "merger" in name or "mlp" in name for name in wrapped)
    assert any(name.endswith("visual.blocks.0.attn.qkv") for name in wrapped)
    assert any(name.endswith("visual.blocks.1.attn.proj") for name in wrapped)
    assert any(name.endswith("language_model.layers.1.self_attn.o_proj") for name in wrapped)
    assert len(wrapped) == 2 * 2 + 2 * 4  # 2 vision blocks × (qkv, proj) + 2 LM layers × (q, k, v, o)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # non-zero B: the adapter now changes the embeddings
    paths = _images(tmp_path)
    before = _embed(model, processor, paths)
    out = save_checkpoint(model, processor, tmp_path / "lora_ckpt")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # the unchanged base is carried by hard link, not rewritten
    weights = "backbone/model.safetensors"
    assert (out / weights).stat().st_ino == (tiny_checkpoint / weights).stat().st_ino
    again, again_processor = load_checkpoint(out, device="cpu")
    after = _embed(again, again_processor, paths)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tiny_checkpoint, monkeypatch):
    from scorer import checkpoint as ckpt

    model, processor = load_checkpoint(tiny_checkpoint, device="cpu")
    heads_before = (tiny_checkpoint / "heads.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, processor, tiny_checkpoint)
    assert (tiny_checkpoint / "heads.safetensors").read_bytes() == heads_before
    assert not [p for p in tiny_checkpoint.parent.iterdir() if ".tmp-" in p.name]


def test_ranking_encodes_each_image_and_distinct_caption_once_and_caches(loaded, tmp_path):
    model, processor = loaded
    calls = {"images": 0, "texts": 0}
    real_images, real_texts = model.encode_images, model.encode_texts

    def count_images(**batch):
        calls["images"] += int(batch["image_grid_thw"].shape[0])
        return real_images(**batch)

    def count_texts(**batch):
        calls["texts"] += int(batch["input_ids"].shape[0])
        return real_texts(**batch)

    model.encode_images, model.encode_texts = count_images, count_texts
    try:
        scorer = Scorer(model, processor, "test-version", batch_size=2, cache=EmbeddingCache(tmp_path / "cache"))
        paths = _images(tmp_path)
        items = [(path, CAPTIONS) for path in paths]  # 4 images × 5 captions, captions shared
        ranked = scorer.rank(items)
        assert calls == {"images": 4, "texts": 5}
        scores = [[c.score for c in r.captions] for r in ranked]
        assert all(s == sorted(s, reverse=True) for s in scores)
        direct = scorer.score_pairs([(paths[0], text) for text in CAPTIONS])
        assert sorted(direct, reverse=True) == pytest.approx(scores[0])
        edited = [(paths[0], CAPTIONS[:4] + ["an edited caption"])]
        scorer.rank(edited)
        assert calls == {"images": 4, "texts": 6}  # one edit → one new caption encoded
        fresh = Scorer(model, processor, "test-version", cache=EmbeddingCache(tmp_path / "cache"))
        fresh.rank(items)  # the on-disk cache serves a new process
        assert calls == {"images": 4, "texts": 6}
    finally:
        del model.encode_images, model.encode_texts


def test_lora_checkpoint_on_a_checkpoint_local_backbone_is_self_contained(tiny_checkpoint, tmp_path):
    import shutil

    model, processor = load_checkpoint(tiny_checkpoint, device="cpu")  # its backbone lives inside it
    model.apply_lora(LoraSettings(r=2, alpha=4))
    out = save_checkpoint(model, processor, tmp_path / "lora_on_local")
    paths = _images(tmp_path)
    before = _embed(model, processor, paths)
    shutil.rmtree(tiny_checkpoint)  # the starting checkpoint is deleted, e.g. an old model version
    again, again_processor = load_checkpoint(out, device="cpu")
    after = _embed(again, again_processor, paths)
    assert (out / "backbone" / "model.safetensors").is_file()
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_pixel_budget_can_be_overridden_at_load(tiny_checkpoint, tmp_path):
    model, processor = load_checkpoint(tiny_checkpoint, device="cpu", max_pixels=56 * 56)
    assert processor.max_pixels == 56 * 56
    assert processor.images(_images(tmp_path)[:1])["image_grid_thw"].tolist() == [[1, 4, 4]]
    out = save_checkpoint(model, processor, tmp_path / "small")
    assert load_checkpoint(out, device="cpu")[1].max_pixels == 56 * 56


def test_prefetching_batches_gives_the_same_embeddings_and_names_a_bad_image(loaded, tmp_path):
    from scorer import ImageLoadError

    model, processor = loaded
    paths = _images(tmp_path)
    inline = Scorer(model, processor, "v", batch_size=2, prefetch=False)
    threaded = Scorer(model, processor, "v", batch_size=2, prefetch=True)
    assert torch.equal(inline.embed_images(paths), threaded.embed_images(paths))
    assert torch.equal(inline.embed_texts(CAPTIONS), threaded.embed_texts(CAPTIONS))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="bad.png"):
        threaded.embed_images([*paths, str(tmp_path / "bad.png")])


def test_rank_reports_progress_over_images_and_captions(loaded, tmp_path):
    model, processor = loaded
    calls = []
    Scorer(model, processor, "progress", batch_size=2).rank([(p, CAPTIONS) for p in _images(tmp_path)],
                                                            on_progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (4 + 5, 4 + 5)  # every image and every distinct caption, once
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_embedding_cache_memory_is_bounded_and_the_disk_keeps_everything(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", max_memory_items=2)
    for key in ("a", "b", "c"):
        cache.put("v1", "text", key * 4, np.full(3, ord(key), dtype=np.float32))
    assert len(cache.memory) == 2 and ("v1", "text", "aaaa") not in cache.memory  # least recently used left
    assert cache.get("v1", "text", "aaaa")[0] == ord("a")  # served from disk, back in memory
    assert len(cache.memory) == 2
    assert cache.get("v2", "text", "aaaa") is None  # another model version never shares vectors
