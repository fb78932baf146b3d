"""Browse / search tab: text → image search with the active model, filters, a table and a grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gradio as gr
import numpy as np
import pandas as pd

from curation.views import ImageFilter, ImageRow, filter_values, image_ids, list_images
from loop import Services
from scorer.search_index import CorpusSearch, corpus_search
from ui.common import tr, user_errors

RESULT_LIMIT = 48
ANY = "(any)"
COLUMNS = ["id", "path", "class", "captions", "annotators", "score"]


def filter_choices(services: Services) -> dict[str, list[str]]:
    """Values the filters can take, read from the store."""
    return {key: [ANY, *values] for key, values in filter_values(services.conn()).items()}


def _value(choice: str | None) -> str | None:
    return None if choice in (None, "", ANY) else choice


def _store_mark(conn) -> tuple[str, tuple[int, int]]:
    """This store's key in an index's marks and its (highest image id, highest visibility log id)."""
    key = f"browse:{conn.execute('PRAGMA database_list').fetchone()[2]}"
    return key, tuple(conn.execute("SELECT (SELECT ifnull(max(id), 0) FROM images),"
                                   " (SELECT ifnull(max(id), 0) FROM visibility_log)").fetchone())


def cover(conn, index: CorpusSearch, image_path: Callable[[str], object], allowed=None, progress=None) -> int:
    """Make ``index`` hold every visible image of the store, or only the ``allowed`` ids when given (and not
    all are known to be in); return how many it embedded. Only the images added, and those unhidden, since
    the last full call are listed (the index's mark for this store): a repeated search costs two max()."""
    key, top = _store_mark(conn)
    seen = index.marks.get(key, (0, 0))
    if seen == top:
        return 0
    if allowed is not None:
        todo = index.index.missing(allowed)
        rows = list_images(conn, ImageFilter(hidden=None), ids=todo) if todo else []
        return index.ensure({row.id: str(image_path(row.path)) for row in rows}, on_progress=progress)
    if seen[0] > top[0] or seen[1] > top[1]:  # another store at this path: check every image
        seen = (0, 0)
    rows = conn.execute(
        "SELECT id, path FROM images WHERE hidden = 0 AND id > ? AND id <= ? UNION"
        " SELECT i.id, i.path FROM visibility_log v JOIN images i ON i.id = v.image_id"
        " WHERE v.id > ? AND v.id <= ? AND v.action = 'unhide' AND i.hidden = 0",
        (seen[0], top[0], seen[1], top[1])).fetchall()
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


def search(services: Services, query: str, cls: str | None = None, status: str | None = None,
           annotator: str | None = None, source: str | None = None, limit: int = RESULT_LIMIT,
           progress=None) -> tuple[pd.DataFrame, list[tuple[str, str]], list[int]]:
    """Images matching the filters, ranked by similarity to ``query`` when one is given (else by id).

    Returns the table, the gallery items (file, caption) and the image ids in display order.
    Image embeddings come from the scorer's cache and a FAISS index (computed once per model version).
    """
    conn = services.conn()
    flt = ImageFilter(cls=_value(cls), status=_value(status), annotator=_value(annotator), source=_value(source))
    query = (query or "").strip()
    if not query:
        rows = list_images(conn, replace(flt, limit=limit))
        scores = [float("nan")] * len(rows)
    else:
        allowed = image_ids(conn, flt) if flt != ImageFilter() else None
        if allowed is not None and not len(allowed):
            return pd.DataFrame([], columns=COLUMNS), [], []
        with services.using_model() as (scorer, _):
            index = corpus_search(scorer, "image")  # FAISS, kept per model; embeds only images it lacks
            cover(conn, index, services.image_path, allowed, progress)
            vector = index.encode(query)
        rows, scores = ranked(conn, index, vector, flt, limit, allowed)
    table = pd.DataFrame([[row.id, row.path, row.cls, row.n_captions, row.n_annotators, round(score, 4)]
                          for row, score in zip(rows, scores)], columns=COLUMNS)
    gallery = [(str(services.image_path(row.path)), f"{row.id} · {row.cls or ''}") for row in rows]
    return table, gallery, [row.id for row in rows]


@dataclass(frozen=True)
class BrowseTab:
    """The Browse tab's parts the app wires: the gallery opens an image in Annotate; ``refresh`` the filters."""

    gallery: gr.Gallery
    ids: gr.State
    table: gr.Dataframe
    refresh: Callable[[], tuple]
    filters: list


def build_browse_tab(services: Services) -> BrowseTab:
    t = tr
    choices = filter_choices(services)
    with gr.Row():
        query = gr.Textbox(label=t("query"), scale=4, elem_id="search-query")
        search_btn = gr.Button(t("search"), variant="primary", scale=1, elem_id="btn-search")
    with gr.Row():
        cls = gr.Dropdown(choices["class"], value=ANY, label=t("class"), allow_custom_value=True)
        status = gr.Dropdown(choices["status"], value=ANY, label=t("status"), allow_custom_value=True)
        who = gr.Dropdown(choices["annotator"], value=ANY, label=t("annotator"), allow_custom_value=True)
        source = gr.Dropdown(choices["source"], value=ANY, label=t("source"), allow_custom_value=True)
    ids = gr.State([])
    gallery = gr.Gallery(label=t("open_in_annotate"), columns=6, height=420, allow_preview=False,
                         elem_id="search-gallery")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, label=t("results"), elem_id="search-table")

    def run(q, c, s, a, src, progress=gr.Progress()):
        found_table, found_gallery, found_ids = search(services, q, c, s, a, src,
                                                       progress=lambda d, n: progress((d, n), desc="embedding"))
        return found_table, found_gallery, found_ids

    inputs = [query, cls, status, who, source]
    gr.on([search_btn.click, query.submit], user_errors(run), inputs, [table, gallery, ids], api_name="search")

    def refresh():
        fresh = filter_choices(services)
        return tuple(gr.update(choices=fresh[k]) for k in ("class", "status", "annotator", "source"))

    return BrowseTab(gallery, ids, table, refresh, [cls, status, who, source])
