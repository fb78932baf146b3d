"""The FAISS search index: incremental = rebuilt, filters, exact vs HNSW, and the scorer in front of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from project_paths import ROOT

from scorer import cosine_scores
from scorer.search_index import CorpusSearch, IndexConfig, SearchIndex

DIM = 32


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> list[list[int]]:
    scores = queries @ vectors.T
    return [ids[np.argsort(-row, kind="stable")[:k]].tolist() for row in scores]


def _built(ids: np.ndarray, vectors: np.ndarray, config: IndexConfig, chunks: int) -> SearchIndex:
    index = SearchIndex(DIM, config)
    for part_ids, part in zip(np.array_split(ids, chunks), np.array_split(vectors, chunks)):
        index.add(part_ids, part)
    return index


def test_an_incrementally_extended_flat_index_equals_a_rebuilt_one_and_the_exact_ranking():
    vectors, queries = _unit(2000), _unit(20, seed=1)
    ids = np.arange(2000, dtype=np.int64) * 3 + 11  # the caller's ids, not positions
    grown, rebuilt = _built(ids, vectors, IndexConfig(), 7), _built(ids, vectors, IndexConfig(), 1)
    assert grown.kind == rebuilt.kind == "flat"
    grown_hits, rebuilt_hits = grown.search(queries, 10), rebuilt.search(queries, 10)
    assert [[h.id for h in q] for q in grown_hits] == [[h.id for h in q] for q in rebuilt_hits]
    assert [[h.score for h in q] for q in grown_hits] == [[h.score for h in q] for q in rebuilt_hits]
    assert [[h.id for h in q] for q in grown_hits] == _exact(queries, vectors, ids, 10)


def test_past_the_exact_size_an_ivf_index_grown_in_steps_equals_one_built_at_once():
    vectors, queries = _unit(3000), _unit(50, seed=1)
    ids = np.arange(3000, dtype=np.int64) + 100
    config = IndexConfig(exact_up_to=1000, nlist=16, nprobe=4)
    grown, rebuilt = _built(ids, vectors, config, 7), _built(ids, vectors, config, 1)
    assert grown.kind == rebuilt.kind == "ivf" and len(grown) == 3000
    grown_hits, rebuilt_hits = grown.search(queries, 10), rebuilt.search(queries, 10)
    assert [[(h.id, h.score) for h in q] for q in grown_hits] == [[(h.id, h.score) for h in q] for q in rebuilt_hits]
    every_list = _built(ids, vectors, IndexConfig(exact_up_to=1000, nlist=16, nprobe=16), 5)
    found = [[h.id for h in q] for q in every_list.search(queries, 10)]
    assert found == _exact(queries, vectors, ids, 10)  # probing every list is exact search


@pytest.mark.parametrize("config", [IndexConfig(), IndexConfig(exact_up_to=500, nlist=8, nprobe=2,
                                                               brute_force_up_to=50)], ids=["flat", "ivf"])
def test_search_returns_only_allowed_ids_best_first(config):
    vectors, queries = _unit(2000), _unit(5, seed=2)
    ids = np.arange(2000, dtype=np.int64)
    index = _built(ids, vectors, config, 3)
    for allowed in (ids[::40], ids[::3]):  # narrow (exact among them on HNSW) and wide (FAISS selector)
        hits = index.search(queries, 8, set(allowed.tolist()))
        expected = _exact(queries, vectors[allowed], allowed, 8)
        found = [[h.id for h in q] for q in hits]
        assert all(set(f) <= set(allowed.tolist()) and len(f) == 8 for f in found)
        if config.exact_up_to >= 2000 or len(allowed) <= config.brute_force_up_to:
            assert found == expected
    assert index.search(queries, 8, set()) == [[] for _ in queries]
    assert [h.id for h in index.search(queries[:1], 5, {7, 99_999})[0]] == [7]  # unknown ids are ignored


def test_an_id_is_added_once():
    index = SearchIndex(DIM)
    index.add([1, 2], _unit(2))
    with pytest.raises(ValueError, match="already in the index"):
        index.add([2, 3], _unit(2))
    with pytest.raises(ValueError, match=r"\(1, 32\)"):
        index.add([4], _unit(1)[:, :3])


def test_text_to_image_and_image_to_caption_match_the_scorers_cosine(tiny_scorer):
    images = sorted(str(p) for p in (ROOT / "assets" / "demo" / "imgs").glob("*.png"))[:6]
    captions = ["a river through fields", "many small houses", "an airport runway", "a green forest"]
    to_image = CorpusSearch(tiny_scorer, "image")
    assert to_image.ensure({10 + n: path for n, path in enumerate(images)}) == 6
    assert to_image.ensure({10: images[0]}) == 0  # already indexed: nothing encoded
    hits = to_image.search(captions[0], k=3, allowed={10, 12, 13, 15})
    scores = cosine_scores(tiny_scorer.embed_images(images), tiny_scorer.embed_texts(captions[:1]))[:, 0]
    allowed = torch.tensor([0, 2, 3, 5])
    best = allowed[scores[allowed].argsort(descending=True)][:3]
    assert [h.id for h in hits] == [10 + int(n) for n in best]
    assert [h.score for h in hits] == pytest.approx(scores[best].tolist(), abs=1e-5)
    to_caption = CorpusSearch(tiny_scorer, "text")
    to_caption.ensure(dict(enumerate(captions)))
    hits = to_caption.search(images[1], k=4)
    ranked = tiny_scorer.rank([(images[1], captions)])[0]
    assert [captions[h.id] for h in hits] == [c.text for c in ranked.captions]
