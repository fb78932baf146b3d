"""Nearest-neighbour search over unit embeddings with FAISS: exact when small, IVF when large.

:class:`SearchIndex` holds vectors under the caller's stable int ids (e.g. the curation store's image
or caption ids: the scorer knows no SQLite, so filters come in as id sets) in a ``faiss.IndexIDMap2``:

* up to ``exact_up_to`` vectors (default 20,000) an ``IndexFlatIP``: exact cosine on unit vectors
  (d = 768: 20k vectors are 60 MB to scan per query, a few ms on 2 cores);
* beyond it an ``IndexIVFFlat`` (inner product, ``nlist`` = 512 lists, ``nprobe`` = 16 searched),
  trained once on the first ``exact_up_to`` vectors in insertion order when the size crosses the limit,
  then extended in place. Approximate. HNSW was measured and rejected on this 2-core machine: building
  it at d = 768 ran at 300–900 vectors/s (1M vectors: 20–60 min), IVF adds 10k vectors/s.

Because the IVF is trained on the first ``exact_up_to`` vectors whatever the batches, an index grown
by many ``add`` calls equals one built by a single call with the same vectors in the same order.

Filters: ``allowed`` ids go to FAISS as ``SearchParameters(sel=IDSelectorBitmap)`` (a hash set,
``IDSelectorBatch``, for ids ≥ 2^28), so only allowed
vectors are scored (exactly, on the flat index). On the IVF a narrow filter may leave the probed lists
without enough allowed vectors, so when the allowed set is small (≤ ``brute_force_up_to`` ids) or the
IVF returns fewer than ``k`` hits, the allowed vectors are scored exactly instead.
:class:`CorpusSearch` puts a Scorer in front: text → image and image → caption.
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
    exact_up_to: int = 20_000  # flat (exact) index up to this many vectors, IVF beyond (trained on these)
    nlist: int = 512  # IVF lists; FAISS wants ≥ 39 training vectors per list
    nprobe: int = 16  # lists searched per query
    brute_force_up_to: int = 2_000  # on the IVF an allowed set this small is scored exactly (≈ 4 ms)

    def __post_init__(self) -> None:
        if self.exact_up_to < self.nlist or not 1 <= self.nprobe <= self.nlist:
            raise ValueError(f"invalid index settings (need nlist ≤ exact_up_to, 1 ≤ nprobe ≤ nlist): {self}")


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
        self.kind = "flat"  # or "ivf"
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map)

    def missing(self, ids: Collection[int]) -> list[int]:
        """The given ids the index lacks (in the given order): one vectorised set difference."""
        ids = _id_array(ids)
        return ids[~np.isin(ids, self.ids())].tolist() if len(ids) else []

    def add(self, ids: Collection[int], vectors: np.ndarray) -> None:
        """Add unit vectors (n, d) under new ids; an id already present raises ValueError."""
        ids = np.asarray(list(ids), dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"{len(ids)} ids need a ({len(ids)}, {self.dim}) array, got {vectors.shape}")
        with self.lock:
            if len(np.unique(ids)) != len(ids) or np.isin(ids, self.ids()).any():
                raise ValueError("search index: an id is given twice or is already in the index")
            room = self.config.exact_up_to - len(self) if self.kind == "flat" else 0
            if self.kind == "flat" and len(ids) > room:
                self.index.add_with_ids(vectors[:room], ids[:room])  # the training set: first exact_up_to
                self._to_ivf()
                ids, vectors = ids[room:], vectors[room:]
            self.index.add_with_ids(vectors, ids)

    def _to_ivf(self) -> None:
        logger.info("search index: %d vectors, switching from exact to IVF", len(self))
        existing = self.index.index.reconstruct_n(0, len(self))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.config.nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(existing)
        ivf.nprobe = self.config.nprobe
        ivf.make_direct_map()  # reconstruct by id, for exact search among a few allowed ids
        fresh = faiss.IndexIDMap2(ivf)
        fresh.add_with_ids(existing, self.ids())
        self.index, self.kind, self._quantizer = fresh, "ivf", quantizer  # the IVF does not own its quantizer

    def search(self, queries: np.ndarray, k: int, allowed: Collection[int] | None = None) -> list[list[Hit]]:
        """(q, d) queries → per query up to ``k`` hits, best first, among ``allowed`` ids when given."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if allowed is not None:
            allowed = _id_array(allowed)
            if self.kind == "ivf" and len(allowed) <= self.config.brute_force_up_to:
                return self._exact_among(queries, k, allowed)
        k = min(k, len(self))
        if k <= 0 or (allowed is not None and not len(allowed)):
            return [[] for _ in queries]
        params = None
        if allowed is not None:
            selector, _keep = _selector(allowed)  # _keep: the bitmap must outlive the search
            params = (faiss.SearchParametersIVF(sel=selector, nprobe=self.config.nprobe)
                      if self.kind == "ivf" else faiss.SearchParameters(sel=selector))
        scores, ids = _search_few_threads(self.index, queries, k, params)
        hits = [[Hit(int(i), float(s)) for s, i in zip(row_s, row_i) if i >= 0] for row_s, row_i in zip(scores, ids)]
        if allowed is not None and self.kind == "ivf" and any(len(h) < min(k, len(allowed)) for h in hits):
            return self._exact_among(queries, k, allowed)  # the probed lists held too few allowed vectors
        return hits

    def _exact_among(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> list[list[Hit]]:
        present = allowed[np.isin(allowed, self.ids())]
        if not len(present):
            return [[] for _ in queries]
        vectors = self.index.reconstruct_batch(present)
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[Hit(int(present[j]), float(row[j])) for j in order] for row, order in zip(scores, top)]


def _id_array(ids: Collection[int]) -> np.ndarray:
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False)
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


_OMP_LOCK = threading.Lock()
MAX_BITMAP_ID = 1 << 28  # ids below this use a bitmap selector (≤ 32 MB), others an IDSelectorBatch


def _selector(allowed: np.ndarray):
    """A FAISS id selector: a bitmap (built in 0.06 ms for 50k ids) where the ids allow, else a hash set
    (IDSelectorBatch: 6 ms to build for 50k ids)."""
    if allowed.min() >= 0 and allowed.max() < MAX_BITMAP_ID:
        bits = np.zeros(int(allowed.max()) + 1, dtype=bool)
        bits[allowed] = True
        packed = np.packbits(bits, bitorder="little")  # FAISS reads bit i at byte i >> 3, bit i & 7
        return faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed)), packed  # its n counts bytes
    return faiss.IDSelectorBatch(allowed), None


def _search_few_threads(index, queries: np.ndarray, k: int, params):
    """A few queries run on one OpenMP thread: on the loaded 2-core machine, two threads made the
    p50 of one IVF query jump from 0.13 ms to 24-32 ms (threads waiting on each other); a batch keeps all."""
    if len(queries) >= 8:
        return index.search(queries, k, params=params)
    with _OMP_LOCK:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)


class CorpusSearch:
    """A scorer in front of a SearchIndex: ``corpus="image"`` searches images by text (text → image),
    ``corpus="text"`` searches captions by image (image → caption). Items are given by stable int id.

    ``marks`` is the callers' note of what they have already ensured (e.g. a store's highest image id),
    so that a repeated search need not list the whole corpus again."""

    def __init__(self, scorer, corpus: str, config: IndexConfig | None = None):
        if corpus not in ("image", "text"):
            raise ValueError(f"corpus must be 'image' or 'text', got {corpus!r}")
        self.scorer, self.corpus = scorer, corpus
        self.index = SearchIndex(scorer.model.config.embed_dim, config)
        self.marks: dict[str, object] = {}

    def ensure(self, items: Mapping[int, str], on_progress=None) -> int:
        """Embed (through the scorer's cache: content hashes, so only for the ids the index lacks) and
        add the items the index lacks; return how many."""
        todo = self.index.missing(list(items)) if items else []
        if todo:
            embed = self.scorer.embed_images if self.corpus == "image" else self.scorer.embed_texts
            self.index.add(todo, embed([items[i] for i in todo], on_progress=on_progress).numpy())
        return len(todo)

    def encode(self, query: str) -> np.ndarray:
        """A caption (corpus image) or an image path (corpus text) → its (1, d) query vector."""
        embed = self.scorer.embed_texts if self.corpus == "image" else self.scorer.embed_images
        return embed([query]).numpy()

    def search(self, query: str | np.ndarray, k: int, allowed: Collection[int] | None = None) -> list[Hit]:
        """A caption (corpus image), an image path (corpus text) or its :meth:`encode` vector → the best
        ``k`` items."""
        vector = self.encode(query) if isinstance(query, str) else query
        return self.index.search(vector, k, allowed)[0]


_SEARCHES: dict[str, CorpusSearch] = {}
_SEARCHES_LOCK = threading.Lock()


def corpus_search(scorer, corpus: str) -> CorpusSearch:
    """The process's CorpusSearch of this corpus kind for ``scorer``; a new scorer (model version)
    replaces the previous one's index, so only the active model's index is held in memory."""
    with _SEARCHES_LOCK:
        if corpus not in _SEARCHES or _SEARCHES[corpus].scorer is not scorer:
            _SEARCHES[corpus] = CorpusSearch(scorer, corpus)
        return _SEARCHES[corpus]
