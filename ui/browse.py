"""Browse / search tab: text → image search with the active model, filters, a table and a grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from curation.stats import stats
from curation.views import STATUSES, ImageFilter, list_images
from loop import Services
from scorer.search_index import corpus_search
from ui.common import tr, user_errors

RESULT_LIMIT = 48
ANY = "(any)"
COLUMNS = ["id", "path", "class", "captions", "annotators", "score"]


def filter_choices(services: Services) -> dict[str, list[str]]:
    """Values the filters can take, read from the store."""
    conn = services.conn()
    summary = stats(conn)
    classes = sorted({row.cls for row in list_images(conn) if row.cls})
    return {"class": [ANY, *classes], "status": [ANY, *STATUSES],
            "annotator": [ANY, *sorted(summary["per_annotator"])],
            "source": [ANY, *sorted(summary["captions_by_source"])]}


def _value(choice: str | None) -> str | None:
    return None if choice in (None, "", ANY) else choice


def search(services: Services, query: str, cls: str | None = None, status: str | None = None,
           annotator: str | None = None, source: str | None = None, limit: int = RESULT_LIMIT,
           progress=None) -> tuple[pd.DataFrame, list[tuple[str, str]], list[int]]:
    """Images matching the filters, ranked by similarity to ``query`` when one is given.

    Returns the table, the gallery items (file, caption) and the image ids in display order.
    Image embeddings come from the scorer's cache and a FAISS index (computed once per model version).
    """
    rows = list_images(services.conn(), ImageFilter(cls=_value(cls), status=_value(status),
                                                    annotator=_value(annotator), source=_value(source)))
    paths = [str(services.image_path(row.path)) for row in rows]
    scores = [float("nan")] * len(rows)
    query = (query or "").strip()
    if query and rows:
        with services.using_model() as (scorer, _):
            index = corpus_search(scorer, "image")  # FAISS, kept per model; embeds only images it lacks
            index.ensure({row.id: path for row, path in zip(rows, paths)}, on_progress=progress)
            hits = index.search(query, limit, allowed={row.id for row in rows})
        position = {row.id: i for i, row in enumerate(rows)}
        for hit in hits:
            scores[position[hit.id]] = hit.score
        order = [position[hit.id] for hit in hits]
    else:
        order = list(range(len(rows)))
    order = order[:limit]
    table = pd.DataFrame(
        [[rows[i].id, rows[i].path, rows[i].cls, rows[i].n_captions, rows[i].n_annotators, round(scores[i], 4)]
         for i in order], columns=COLUMNS)
    gallery = [(paths[i], f"{rows[i].id} · {rows[i].cls or ''}") for i in order]
    return table, gallery, [rows[i].id for i in order]


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
