"""Ranking: encode each image once and each distinct caption once, in batches, with a cache.

``cosine_scores`` and ``rank_candidates`` are pure functions over embeddings (as sentence-transformers'
``semantic_search``); :class:`Scorer` does the batched, cached encoding around a loaded DualEncoder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scorer.embedding_store import EmbeddingStore
from scorer.model import DualEncoder
from scorer.qwen2_5_vl.processing import DualEncoderProcessor

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


def cosine_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """(n_images, d) × (n_texts, d), both unit norm → (n_images, n_texts) cosine similarities."""
    return image_embeddings.float() @ text_embeddings.float().T


@dataclass
class RankedCaption:
    text: str
    score: float  # cosine similarity in [-1, 1]


@dataclass
class RankedImage:
    image: str
    captions: list[RankedCaption]  # best first

    @property
    def best(self) -> RankedCaption:
        return self.captions[0]

    @property
    def margin(self) -> float:
        """Score gap between the two best captions: small = the model is unsure."""
        return self.captions[0].score - self.captions[1].score if len(self.captions) > 1 else float("inf")


def rank_candidates(image_embedding: torch.Tensor, caption_embeddings: torch.Tensor, captions: Sequence[str],
                    image: str = "") -> RankedImage:
    """(d,), (m, d) → the m captions sorted by cosine, best first (ties keep input order)."""
    scores = cosine_scores(image_embedding[None], caption_embeddings)[0].tolist()
    order = sorted(range(len(captions)), key=lambda i: -scores[i])
    return RankedImage(image=image, captions=[RankedCaption(captions[i], scores[i]) for i in order])


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """Embeddings keyed by (model version, kind, content hash); in memory and optionally on disk.

    On disk: one append-only :class:`~scorer.embedding_store.EmbeddingStore` per model version and kind,
    ``<dir>/<model_version>/<kind>/``. New vectors wait in memory until :meth:`flush` (the Scorer
    flushes after each call, and every ``flush_every`` vectors), which appends them as one shard: a
    crash loses at most the unflushed vectors and never leaves a half-written store.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, max_memory_items: int = 200_000,
                 flush_every: int = 4096):
        self.directory = Path(directory) if directory else None
        # Least recently used first; bounded so a long-running app does not grow without limit
        # (200k × 768 float32 ≈ 600 MB at the real size; the disk store keeps everything).
        self.memory: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self.max_memory_items = max_memory_items
        self.flush_every = flush_every
        self.pending: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.stores: dict[tuple[str, str], EmbeddingStore] = {}
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def store(self, version: str, kind: str) -> EmbeddingStore | None:
        """The on-disk store of one model version and kind (``None`` without a directory)."""
        if self.directory is None:
            return None
        if (version, kind) not in self.stores:
            self.stores[(version, kind)] = EmbeddingStore(self.directory / version / kind)
        return self.stores[(version, kind)]

    def get(self, version: str, kind: str, key: str) -> np.ndarray | None:
        return self.get_many(version, kind, [key])[0]

    def get_many(self, version: str, kind: str, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Each key's vector or ``None``: memory, then vectors not yet flushed, then the disk store."""
        with self.lock:
            found: list[np.ndarray | None] = [self.memory.get((version, kind, key)) for key in keys]
            pending = self.pending.get((version, kind), {})
            for n, key in enumerate(keys):
                if found[n] is None:
                    found[n] = pending.get(key)
                else:
                    self.memory.move_to_end((version, kind, key))
            missing = [n for n, vector in enumerate(found) if vector is None]
            store = self.store(version, kind)
            if missing and store is not None:
                store.refresh()  # another process may have appended
                rows = store.lookup([keys[n] for n in missing])
                hit = [(n, row) for n, row in zip(missing, rows.tolist()) if row >= 0]
                vectors = store.vectors([row for _, row in hit]) if hit else []
                for (n, _), vector in zip(hit, vectors):
                    found[n] = vector
                    self._remember((version, kind, keys[n]), vector)
            self.hits += sum(vector is not None for vector in found)
            self.misses += sum(vector is None for vector in found)
            return found

    def _remember(self, entry: tuple[str, str, str], vector: np.ndarray) -> None:
        if self.max_memory_items <= 0:
            return
        self.memory[entry] = vector
        self.memory.move_to_end(entry)
        while len(self.memory) > self.max_memory_items:
            self.memory.popitem(last=False)

    def put(self, version: str, kind: str, key: str, vector: np.ndarray) -> None:
        with self.lock:
            self._remember((version, kind, key), vector)
            if self.directory is None:
                return
            pending = self.pending.setdefault((version, kind), {})
            pending[key] = vector
            full = len(pending) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> int:
        """Append the vectors put since the last flush to their stores; return how many were new."""
        with self.lock:
            pending, self.pending = self.pending, {}
            added = 0
            for (version, kind), vectors in pending.items():
                if not vectors:
                    continue
                try:
                    added += self.store(version, kind).add(list(vectors), np.stack(list(vectors.values())))
                except OSError as error:  # full disk, read-only folder: the vectors stay in memory only
                    logger.warning("embedding store %s/%s: %d vectors not written (%s)", version, kind,
                                   len(vectors), error)
            return added


class Scorer:
    """A loaded DualEncoder that embeds, scores and ranks, in batches, through an EmbeddingCache."""

    def __init__(self, model: DualEncoder, processor: DualEncoderProcessor, model_version: str,
                 batch_size: int = 16, cache: EmbeddingCache | None = None, prefetch: bool | None = None):
        self.model = model.eval()
        self.processor = processor
        self.model_version = model_version
        self.batch_size = batch_size
        self.cache = cache if cache is not None else EmbeddingCache()
        self.device = next(model.parameters()).device
        # Prepare the next batch in a thread while this one encodes: on an accelerator only; on the CPU
        # that thread competes with the model for the same cores (bench_rank: 0.78 s → 0.88 s).
        self.prefetch = self.device.type != "cpu" if prefetch is None else prefetch

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str], device: str | None = None,
                        batch_size: int = 16, cache_dir: str | os.PathLike[str] | None = None,
                        dtype: str | torch.dtype | None = None) -> Scorer:
        """``dtype``: ``auto`` (None), ``bf16``, ``fp16`` or ``fp32`` (see ``resolve_dtype``)."""
        from scorer.checkpoint import load_checkpoint

        model, processor = load_checkpoint(checkpoint, device=device, dtype=dtype)
        return cls(model, processor, checkpoint_version(checkpoint), batch_size, EmbeddingCache(cache_dir))

    # -- embedding -----------------------------------------------------------------------------------
    def _embed(self, kind: str, keys: list[str], items: list, on_progress: ProgressCallback | None) -> torch.Tensor:
        """Look each key up in the cache; encode the misses (each distinct content once) in batches."""
        vectors: list[np.ndarray | None] = self.cache.get_many(self.model_version, kind, keys)
        todo = [i for i in range(len(keys)) if vectors[i] is None]
        first_of: dict[str, int] = {}
        unique = [i for i in todo if first_of.setdefault(keys[i], i) == i]  # identical content: encode once
        inputs = [items[i] for i in unique]
        if kind == "text":
            # One tokenizer call for all captions to encode; batches in token-length order cut padding.
            tokens = self.processor.tokenize(inputs)
            order = sorted(range(len(unique)), key=lambda n: len(tokens[n]))
            unique, inputs = [unique[n] for n in order], [tokens[n] for n in order]
        prepare = self.processor.images if kind == "image" else self.processor.pad
        encode = self.model.encode_images if kind == "image" else self.model.encode_texts
        starts = range(0, len(unique), self.batch_size)
        batches = [unique[start:start + self.batch_size] for start in starts]
        prepared = self._prepared(prepare, [inputs[start:start + self.batch_size] for start in starts])
        for number, inputs in enumerate(prepared):
            with torch.inference_mode():
                embedded = encode(**{k: v.to(self.device) for k, v in inputs.items()}).float().cpu().numpy()
            for i, vector in zip(batches[number], embedded):
                self.cache.put(self.model_version, kind, keys[i], vector)
                vectors[i] = vector
            if on_progress:
                on_progress(sum(len(b) for b in batches[:number + 1]), len(unique))
        self.cache.flush()
        for i in todo:
            if vectors[i] is None:
                vectors[i] = vectors[first_of[keys[i]]]
        return torch.from_numpy(np.stack(vectors)) if vectors else torch.empty(0, self.model.config.embed_dim)

    def _prepared(self, prepare: Callable[[list], dict], batches: list[list]) -> Iterator[dict]:
        """Model inputs batch by batch; with ``prefetch`` the next batch is prepared (decoded, resized,
        tokenised) in a background thread while the current one is encoded, as a DataLoader would."""
        if not self.prefetch:
            yield from map(prepare, batches)
            return
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            upcoming = prefetch.submit(prepare, batches[0]) if batches else None
            for number in range(len(batches)):
                inputs = upcoming.result()  # re-raises ImageLoadError naming the file
                if number + 1 < len(batches):
                    upcoming = prefetch.submit(prepare, batches[number + 1])
                yield inputs

    def embed_images(self, images: Sequence[str | os.PathLike[str]],
                     on_progress: ProgressCallback | None = None) -> torch.Tensor:
        """Image files → (n, d). Keyed by file content, so a renamed file is not re-encoded.

        ``on_progress(done, total)`` is called after each batch; total counts what the cache lacks.
        """
        return self._embed("image", [image_key(path) for path in images], list(images), on_progress)

    def embed_texts(self, texts: Sequence[str], on_progress: ProgressCallback | None = None) -> torch.Tensor:
        """Captions → (m, d); batches are taken in token-length order to cut padding."""
        return self._embed("text", [content_hash(text.encode("utf-8")) for text in texts], list(texts), on_progress)

    # -- scoring -------------------------------------------------------------------------------------
    def embed_both(self, images: Sequence[str], texts: Sequence[str],
                   on_progress: ProgressCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and captions → ((n, d), (m, d)), with one progress count over both."""
        image_total = [0]

        def image_progress(done: int, total: int) -> None:
            image_total[0] = total
            on_progress(done, total + len(texts))  # texts: an upper bound until their cache is read

        def text_progress(done: int, total: int) -> None:
            on_progress(image_total[0] + done, image_total[0] + total)

        image_emb = self.embed_images(images, image_progress if on_progress else None)
        return image_emb, self.embed_texts(texts, text_progress if on_progress else None)

    def score_pairs(self, pairs: Sequence[tuple[str, str]],
                    on_progress: ProgressCallback | None = None) -> list[float]:
        """(image path, caption) pairs → cosine per pair; each image and caption encoded once."""
        images = _distinct([image for image, _ in pairs])
        texts = _distinct([text for _, text in pairs])
        image_emb, text_emb = self.embed_both(images, texts, on_progress)
        image_row = {path: i for i, path in enumerate(images)}
        text_row = {text: i for i, text in enumerate(texts)}
        return [float(image_emb[image_row[image]] @ text_emb[text_row[text]]) for image, text in pairs]

    def rank(self, items: Sequence[tuple[str, Sequence[str]]],
             on_progress: ProgressCallback | None = None) -> list[RankedImage]:
        """[(image path, [caption, ...]), ...] → each image's captions, best first."""
        images = [image for image, _ in items]
        texts = _distinct([text for _, captions in items for text in captions])
        image_emb, text_emb = self.embed_both(images, texts, on_progress)
        row = {text: i for i, text in enumerate(texts)}
        return [rank_candidates(image_emb[n], text_emb[[row[t] for t in captions]], list(captions), str(image))
                for n, (image, captions) in enumerate(items)]


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def image_key(path: str | os.PathLike[str]) -> str:
    """Content hash of an image file; a missing file raises ImageLoadError naming it."""
    from scorer.images import ImageLoadError

    try:
        return content_hash(Path(path).read_bytes())
    except OSError as err:
        raise ImageLoadError(f"cannot read image {path}: {err.strerror or err}", path) from err


def checkpoint_version(checkpoint: str | os.PathLike[str]) -> str:
    """A model version id: hash of the checkpoint's config, heads and adapter.

    The backbone is left out (gigabytes to read); every training run rewrites the heads anyway.
    """
    directory = Path(checkpoint)
    digest = hashlib.sha256()
    for name in ("scorer_config.json", "model_config.json", "heads.safetensors",
                 "adapter/adapter_model.safetensors", "adapter_model.safetensors"):
        file = directory / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
