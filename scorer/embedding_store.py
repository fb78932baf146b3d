"""An append-only embedding store for one (model version, kind), keyed by content hash.

Layout of a store folder (``<cache dir>/<model version>/<image|text>/``)::

    manifest.json                 {"format": 1, "dim": d, "shards": [{"name": "shard-000000", "rows": n}, ...]}
    shards/shard-000000.keys.npy  (n,) S64: content hashes (sha256 hex) in row order
    shards/shard-000000.vecs.npy  (n, d) float32: the embeddings, memory-mapped by readers
    .lock                         writers take it (fcntl) for the whole append

A writer writes a shard's two files to temporary names, fsyncs them, renames them into place, and only
then publishes a new ``manifest.json`` (temporary file, fsync, atomic rename). Readers take no lock: they
read the manifest and open only the shards it lists, which never change once listed. So a reader during
a write sees the store before or after the append, never half of it, and a crash before the manifest
is published leaves the previous state (the unlisted shard is ignored and overwritten by the next append).
Each vector's row number (shards in manifest order) is stable: the store only grows.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = 1
KEY_DTYPE = "S64"  # a sha256 hex digest fits exactly


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial or zero-byte file behind
        raise


def encode_keys(keys: Sequence[str]) -> np.ndarray:
    """Content hashes → the store's fixed-width key array; a key that does not fit is named."""
    for key in keys:
        if not key or len(key) > 64 or not key.isascii():
            raise ValueError(f"embedding key {key!r} must be 1-64 ASCII characters (a content hash)")
    return np.array(keys, dtype=KEY_DTYPE)


class EmbeddingStore:
    """Embeddings of one model version and kind: ``lookup`` rows by key, ``vectors`` by row, ``add`` new ones."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.dim: int | None = None
        self._shards: list[dict] = []  # manifest entries read so far
        self._vectors: list[np.ndarray] = []  # memory-mapped, one per shard
        self._offsets = np.zeros(1, dtype=np.int64)  # first row of each shard, then the total
        self._sorted_keys = np.empty(0, dtype=KEY_DTYPE)
        self._sorted_rows = np.empty(0, dtype=np.int64)
        self._stamp: tuple | None = None
        self.refresh()

    # -- reading -------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def refresh(self) -> bool:
        """Open shards published since the last look (cheap when nothing changed); return whether any were."""
        try:
            stat = self.manifest_path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{self.manifest_path}: unknown embedding store format {manifest.get('format')!r}")
        self.dim = int(manifest["dim"])
        new = manifest["shards"][len(self._shards):]
        if new:
            self._open(new)
        self._stamp = stamp
        return bool(new)

    def _open(self, entries: list[dict]) -> None:
        start = len(self)
        new_keys = []
        for entry in entries:
            base = self.directory / "shards" / entry["name"]
            vectors = np.load(f"{base}.vecs.npy", mmap_mode="r")
            keys = np.load(f"{base}.keys.npy")
            if vectors.shape != (entry["rows"], self.dim) or keys.shape != (entry["rows"],):
                raise ValueError(f"{base}: shard shape {vectors.shape} does not match the manifest")
            self._vectors.append(vectors)
            new_keys.append(keys)
        keys = np.concatenate(new_keys)
        rows = np.arange(start, start + len(keys), dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        at = np.searchsorted(self._sorted_keys, keys)
        self._sorted_keys = np.insert(self._sorted_keys, at, keys)  # a merge: O(n), no full re-sort
        self._sorted_rows = np.insert(self._sorted_rows, at, rows)
        self._shards.extend(entries)
        self._offsets = np.concatenate([self._offsets, start + np.cumsum([e["rows"] for e in entries])])

    def lookup(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row of each key, -1 where the store lacks it."""
        wanted = keys if isinstance(keys, np.ndarray) else encode_keys(list(keys))
        if not len(self._sorted_keys):
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted_keys, wanted), len(self._sorted_keys) - 1)
        found = self._sorted_keys[at] == wanted
        return np.where(found, self._sorted_rows[at], -1)

    def vectors(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """(len(rows), d) float32 copy of the given rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim or 0), dtype=np.float32)
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self._vectors[shard][rows[mask] - self._offsets[shard]]
        return out

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, memory-mapped (n, d) vectors) per shard, in row order: e.g. to build a search index."""
        for start, vectors in zip(self._offsets[:-1].tolist(), self._vectors):
            yield start, vectors

    # -- writing -------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        (self.directory / "shards").mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Append the vectors whose key the store lacks (first of duplicates); return how many were new."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"{len(keys)} keys need a ({len(keys)}, d) array, got shape {vectors.shape}")
        encoded = encode_keys(list(keys))
        with self._locked():
            self.refresh()  # another writer may have appended meanwhile
            if self.dim is not None and vectors.shape[1] != self.dim:
                raise ValueError(f"{self.directory}: vectors of dim {vectors.shape[1]}, the store holds dim {self.dim}")
            _, first = np.unique(encoded, return_index=True)
            first = np.sort(first)
            new = first[self.lookup(encoded[first]) < 0]
            if not len(new):
                return 0
            name = f"shard-{len(self._shards):06d}"
            base = self.directory / "shards" / name
            _write_npy(Path(f"{base}.keys.npy"), encoded[new])
            _write_npy(Path(f"{base}.vecs.npy"), vectors[new])
            _fsync_dir(base.parent)
            self._publish(self._shards + [{"name": name, "rows": int(len(new))}], vectors.shape[1])
            self.refresh()
            return int(len(new))

    def _publish(self, shards: list[dict], dim: int) -> None:
        manifest = {"format": FORMAT, "dim": dim, "shards": shards}
        tmp = self.directory / f".manifest.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.manifest_path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)
        logger.debug("%s: published %d shards", self.directory, len(shards))
