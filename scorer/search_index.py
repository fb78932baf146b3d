"""Nearest-neighbour search over unit embeddings with FAISS: exact when small, HNSW when large.

:class:`SearchIndex` holds vectors under the caller's stable int ids (e.g. the curation store's image
or caption ids: the scorer knows no SQLite, so filters come in as id sets) in a ``faiss.IndexIDMap2``:

* up to ``exact_up_to`` vectors (default 200,000) an ``IndexFlatIP``: exact cosine on unit vectors
  (about 1 ms per 10k vectors at d = 768 on 2 cores; 200k ≈ 20 ms);
* beyond it, an ``IndexHNSWFlat`` (inner product), rebuilt once from the flat index when the size
  crosses the limit, then extended in place. Approximate: recall@10 ≈ 0.99 at the default ``ef_search``.

``add`` extends the index incrementally; ids already present are refused. Filters: ``allowed`` ids go
to FAISS as ``SearchParameters(sel=IDSelectorBatch)``, so only allowed vectors are scored (exact on the
flat index). On HNSW a narrow filter can starve the graph walk, so when the allowed set is small
(≤ ``brute_force_up_to`` ids) or HNSW returns fewer than ``k`` hits, the allowed vectors are scored
exactly instead. :class:`CorpusSearch` puts a Scorer in front: text → image and image → caption.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import faiss
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    exact_up_to: int = 200_000  # flat (exact) index up to this many vectors, HNSW beyond
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 128
    brute_force_up_to: int = 20_000  # an allowed set this small is scored exactly, index or not

    def __post_init__(self) -> None:
        if self.exact_up_to < 0 or self.hnsw_m < 2 or self.ef_search < 1:
            raise ValueError(f"invalid index settings: {self}")


@dataclass(frozen=True)
class Hit:
    id: int
    score: float  # cosine similarity


class SearchIndex:
    """Stable int id → unit vector; ``search`` returns the best ``k`` ids by inner product."""

    def __init__(self, dim: int, config: IndexConfig | None = None):
        self.dim = dim
        self.config = config or IndexConfig()
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.kind = "flat"  # or "hnsw"
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map)

    def missing(self, ids: Collection[int]) -> list[int]:
        """The given ids the index lacks (in the given order)."""
        have = set(self.ids().tolist())
        return [i for i in ids if i not in have]

    def add(self, ids: Collection[int], vectors: np.ndarray) -> None:
        """Add unit vectors (n, d) under new ids; an id already present raises ValueError."""
        ids = np.asarray(list(ids), dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"{len(ids)} ids need a ({len(ids)}, {self.dim}) array, got {vectors.shape}")
        with self.lock:
            if len(np.unique(ids)) != len(ids) or np.isin(ids, self.ids()).any():
                raise ValueError("search index: an id is given twice or is already in the index")
            if self.kind == "flat" and len(self) + len(ids) > self.config.exact_up_to:
                self._to_hnsw()
            self.index.add_with_ids(vectors, ids)

    def _to_hnsw(self) -> None:
        logger.info("search index: %d vectors, switching from exact to HNSW", len(self))
        hnsw = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.config.ef_construction
        hnsw.hnsw.efSearch = self.config.ef_search
        fresh = faiss.IndexIDMap2(hnsw)
        if len(self):
            fresh.add_with_ids(self.index.index.reconstruct_n(0, len(self)), self.ids())
        self.index, self.kind = fresh, "hnsw"

    def search(self, queries: np.ndarray, k: int, allowed: Collection[int] | None = None) -> list[list[Hit]]:
        """(q, d) queries → per query up to ``k`` hits, best first, among ``allowed`` ids when given."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if allowed is not None:
            allowed = np.fromiter(allowed, dtype=np.int64)
            if self.kind == "hnsw" and len(allowed) <= self.config.brute_force_up_to:
                return self._exact_among(queries, k, allowed)
        k = min(k, len(self))
        if k <= 0 or (allowed is not None and not len(allowed)):
            return [[] for _ in queries]
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.config.ef_search, k))
                      if self.kind == "hnsw" else faiss.SearchParameters(sel=selector))
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, k))
        scores, ids = self.index.search(queries, k, params=params)
        hits = [[Hit(int(i), float(s)) for s, i in zip(row_s, row_i) if i >= 0] for row_s, row_i in zip(scores, ids)]
        if allowed is not None and self.kind == "hnsw" and any(len(h) < min(k, len(allowed)) for h in hits):
            return self._exact_among(queries, k, allowed)  # the graph walk ran out of allowed neighbours
        return hits

    def _exact_among(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> list[list[Hit]]:
        present = allowed[np.isin(allowed, self.ids())]
        if not len(present):
            return [[] for _ in queries]
        vectors = self.index.reconstruct_batch(present)
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[Hit(int(present[j]), float(row[j])) for j in order] for row, order in zip(scores, top)]


class CorpusSearch:
    """A scorer in front of a SearchIndex: ``corpus="image"`` searches images by text (text → image),
    ``corpus="text"`` searches captions by image (image → caption). Items are given by stable int id."""

    def __init__(self, scorer, corpus: str, config: IndexConfig | None = None):
        if corpus not in ("image", "text"):
            raise ValueError(f"corpus must be 'image' or 'text', got {corpus!r}")
        self.scorer, self.corpus = scorer, corpus
        self.index = SearchIndex(scorer.model.config.embed_dim, config)

    def ensure(self, items: Mapping[int, str], on_progress=None) -> int:
        """Embed (through the scorer's cache) and add the items the index lacks; return how many."""
        todo = self.index.missing(list(items))
        if todo:
            embed = self.scorer.embed_images if self.corpus == "image" else self.scorer.embed_texts
            self.index.add(todo, embed([items[i] for i in todo], on_progress=on_progress).numpy())
        return len(todo)

    def search(self, query: str, k: int, allowed: Collection[int] | None = None) -> list[Hit]:
        """A caption (corpus image) or an image path (corpus text) → the best ``k`` items."""
        embed = self.scorer.embed_texts if self.corpus == "image" else self.scorer.embed_images
        return self.index.search(embed([query]).numpy(), k, allowed)[0]


_SEARCHES: dict[str, CorpusSearch] = {}
_SEARCHES_LOCK = threading.Lock()


def corpus_search(scorer, corpus: str) -> CorpusSearch:
    """The process's CorpusSearch of this corpus kind for ``scorer``; a new scorer (model version)
    replaces the previous one's index, so only the active model's index is held in memory."""
    with _SEARCHES_LOCK:
        if corpus not in _SEARCHES or _SEARCHES[corpus].scorer is not scorer:
            _SEARCHES[corpus] = CorpusSearch(scorer, corpus)
        return _SEARCHES[corpus]
