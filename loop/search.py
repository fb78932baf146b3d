"""Text → image search over the store with the active model: the FAISS index kept covering the store.

The index (:mod:`scorer.search_index`) is kept per model version; :func:`cover` adds only the images the
store gained (or unhid) since the index last covered it, so a repeated search costs two ``max()`` queries;
:func:`ranked` maps the index's hits back to the store's rows under the UI's filters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np

from curation.views import ImageFilter, ImageRow, images_visible_since, list_images, store_mark
from scorer.search_index import CorpusSearch


def cover(conn: sqlite3.Connection, index: CorpusSearch, image_path: Callable[[str], object], allowed=None,
          progress=None) -> int:
    """Make ``index`` hold every visible image of the store, or only the ``allowed`` ids when given (and not
    all are known to be in); return how many it embedded. Only the images added, and those unhidden, since
    the last full call are listed (the index's mark for this store)."""
    name, top = store_mark(conn)
    key = f"browse:{name}"
    seen = index.marks.get(key, (0, 0))
    if seen == top:
        return 0
    if allowed is not None:
        todo = index.index.missing(allowed)
        rows = list_images(conn, ImageFilter(hidden=None), ids=todo) if todo else []
        return index.ensure({row.id: str(image_path(row.path)) for row in rows}, on_progress=progress)
    if seen[0] > top[0] or seen[1] > top[1]:  # another store at this path: check every image
        seen = (0, 0)
    rows = images_visible_since(conn, seen, top)
    todo = set(index.index.missing([row[0] for row in rows])) if rows else set()
    added = index.ensure({row[0]: str(image_path(row[1])) for row in rows if row[0] in todo}, on_progress=progress)
    index.marks[key] = top
    return added


def ranked(conn, index: CorpusSearch, vector: np.ndarray, flt: ImageFilter, limit: int,
           allowed: np.ndarray | None = None) -> tuple[list[ImageRow], list[float]]:
    """The ``limit`` images matching ``flt`` nearest to the query ``vector``, best first, with their scores.
    ``allowed``: the filter's ids (None when nothing is filtered: the whole index is searched and hidden
    images are dropped, asking FAISS for more hits while too few are left)."""
    k = limit
    while True:
        hits = index.search(vector, k, allowed)
        found = {row.id: row for row in list_images(conn, flt, ids=[hit.id for hit in hits])}
        if len(found) >= limit or len(hits) < k or allowed is not None:
            break
        k *= 4
    kept = [hit for hit in hits if hit.id in found][:limit]
    return [found[hit.id] for hit in kept], [hit.score for hit in kept]
