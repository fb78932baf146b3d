"""The append-only embedding store: incremental, consistent for readers during a write, safe after a crash."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from project_paths import ROOT

from scorer.embedding_store import EmbeddingStore
from scorer.ranking import EmbeddingCache, Scorer, content_hash

DIM = 8


def _vectors(keys: list[str]) -> np.ndarray:
    """A vector that can be recomputed from its key, so a reader can check every row it sees."""
    return np.stack([np.random.default_rng(int(key[:8], 16)).standard_normal(DIM) for key in keys]).astype(np.float32)


def _keys(start: int, stop: int) -> list[str]:
    return [content_hash(str(n).encode()) for n in range(start, stop)]


def test_only_new_keys_are_appended_and_a_reopened_store_finds_every_row(tmp_path):
    store = EmbeddingStore(tmp_path / "v1" / "image")
    first = _keys(0, 10)
    assert store.add(first, _vectors(first)) == 10
    both = _keys(5, 15) + _keys(14, 16)  # 5 known, 5 new, one repeated within the call
    assert store.add(both, _vectors(both)) == 6
    reopened = EmbeddingStore(tmp_path / "v1" / "image")
    assert len(reopened) == 16
    keys = _keys(0, 16)
    rows = reopened.lookup(keys)
    assert sorted(rows.tolist()) == list(range(16))
    np.testing.assert_array_equal(reopened.vectors(rows), _vectors(keys))
    assert reopened.lookup([content_hash(b"never added")]).tolist() == [-1]
    with pytest.raises(ValueError, match="dim 3"):
        reopened.add(_keys(20, 21), np.zeros((1, 3)))


def test_scorer_encodes_only_images_and_captions_the_store_lacks(tiny_scorer, tmp_path):
    images = sorted(str(p) for p in (ROOT / "assets" / "demo" / "imgs").glob("*.png"))[:5]
    model, processor = tiny_scorer.model, tiny_scorer.processor
    first = Scorer(model, processor, "v", batch_size=4, cache=EmbeddingCache(tmp_path / "cache"))
    before = first.embed_images(images[:3])
    first.embed_texts(["a river", "a road"])
    calls = []
    real = model.encode_images
    model.encode_images = lambda **batch: calls.append(int(batch["image_grid_thw"].shape[0])) or real(**batch)
    try:
        again = Scorer(model, processor, "v", batch_size=4, cache=EmbeddingCache(tmp_path / "cache"))  # a new process
        after = again.embed_images(images)
    finally:
        del model.encode_images
    assert sum(calls) == 2  # the two images the store lacked
    np.testing.assert_allclose(after[:3].numpy(), before.numpy(), atol=1e-6)
    assert len(EmbeddingStore(tmp_path / "cache" / "v" / "image")) == 5
    assert len(EmbeddingStore(tmp_path / "cache" / "v" / "text")) == 2


WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_embedding_store import _keys, _vectors
from scorer.embedding_store import EmbeddingStore
store = EmbeddingStore({folder!r})
for n in range(40):
    keys = _keys(n * 50, (n + 1) * 50)
    store.add(keys, _vectors(keys))
"""


def test_readers_during_a_write_see_whole_shards_with_the_right_vectors(tmp_path):
    folder = tmp_path / "store"
    code = WRITER.format(root=str(ROOT), tests=str(ROOT / "tests"), folder=str(folder))
    writer = subprocess.Popen([sys.executable, "-c", code])
    reader, seen = EmbeddingStore(folder), set()
    try:
        while writer.poll() is None or reader.refresh():
            reader.refresh()
            n = len(reader)
            assert n % 50 == 0  # never half a shard
            if n:
                keys = _keys(0, n)
                rows = reader.lookup(keys)
                assert (rows >= 0).all()
                np.testing.assert_array_equal(reader.vectors(rows), _vectors(keys))
            seen.add(n)
            time.sleep(0.01)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert len(reader) == 2000 and len(seen) > 2  # the reader did look while the writer wrote


def test_a_crash_before_the_manifest_is_published_leaves_the_previous_state(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    store = EmbeddingStore(folder)
    first = _keys(0, 10)
    store.add(first, _vectors(first))

    def crash(*args):
        raise KeyboardInterrupt("killed before publishing")

    monkeypatch.setattr(EmbeddingStore, "_publish", crash)
    more = _keys(10, 20)
    with pytest.raises(KeyboardInterrupt):
        store.add(more, _vectors(more))
    assert (folder / "shards" / "shard-000001.vecs.npy").exists()  # written, never published
    monkeypatch.undo()
    after = EmbeddingStore(folder)
    assert len(after) == 10 and (after.lookup(more) == -1).all()
    assert after.add(more, _vectors(more)) == 10  # the next append takes the unpublished shard's place
    reopened = EmbeddingStore(folder)
    np.testing.assert_array_equal(reopened.vectors(reopened.lookup(_keys(0, 20))), _vectors(_keys(0, 20)))


def test_a_full_disk_leaves_no_temporary_file_and_the_cache_keeps_the_vectors(tmp_path, monkeypatch):
    import scorer.embedding_store as embedding_store

    cache = EmbeddingCache(tmp_path / "cache", flush_every=1)
    real_save = np.save

    def disk_full(handle, array, *args, **kwargs):
        real_save(handle, array[:0])  # a few bytes reach the file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedding_store.np, "save", disk_full)
    key = content_hash(b"a caption")
    vector = np.ones(DIM, dtype=np.float32)
    cache.put("v1", "text", key, vector)  # the flush fails: warned, not raised
    np.testing.assert_array_equal(cache.get("v1", "text", key), vector)  # still answered from memory
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
    monkeypatch.setattr(embedding_store.np, "save", real_save)
    cache.put("v1", "text", key, vector)  # space again: the next flush writes it
    assert len(EmbeddingStore(cache.directory / "v1" / "text")) == 1
