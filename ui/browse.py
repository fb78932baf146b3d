"""Browse / search tab: text → image search with the active model, filters, a table and a grid; the hidden
images and captions, each restored with one click (hidden items are left out of the search)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gradio as gr
import pandas as pd

from curation.cleanup import hidden_items, unhide_caption, unhide_image
from curation.views import ImageFilter, filter_values, image_ids, list_images
from loop import Services
from loop.search import cover, ranked
from scorer.search_index import corpus_search
from ui.common import acting_user, headers, localized, require, say, tr, user_errors

RESULT_LIMIT = 48
ANY = "(any)"
COLUMNS = ("id", "path", "class", "captions", "annotators", "score")
HIDDEN_COLUMNS = ("item", "id", "image", "caption", "hidden_by", "when")


def filter_choices(services: Services) -> dict[str, list[str]]:
    """Values the filters can take, read from the store."""
    return {key: [ANY, *values] for key, values in filter_values(services.conn()).items()}


def _value(choice: str | None) -> str | None:
    return None if choice in (None, "", ANY) else choice


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
                          for row, score in zip(rows, scores)], columns=headers(*COLUMNS))
    gallery = [(str(services.image_path(row.path)), f"{row.id} · {row.cls or ''}") for row in rows]
    return table, gallery, [row.id for row in rows]


def hidden_table(services: Services) -> tuple[pd.DataFrame, dict]:
    """The hidden images and captions (who hid them, when), and the Restore choices ("caption 57 · …")."""
    items = hidden_items(services.conn())
    table = pd.DataFrame([[say(f"item_{h.item}"), h.item_id, h.image, h.text or "", h.who, h.hidden_at[:19]]
                          for h in items], columns=headers(*HIDDEN_COLUMNS))
    choices = [(f"{say(f'item_{h.item}')} {h.item_id} · {(h.text or h.image)[:60]}", f"{h.item}:{h.item_id}")
               for h in items]
    return table, gr.update(choices=choices, value=None)


def restore(services: Services, annotator: str, choice: str | None) -> tuple[pd.DataFrame, dict, str]:
    """Make a hidden image or caption visible again (recorded under the annotator's name)."""
    require(services, "hide")
    who = acting_user(annotator)
    if not who:
        raise ValueError(say("err_name_required"))
    item, _, item_id = (choice or "").partition(":")
    if item not in ("image", "caption") or not item_id.isdigit():
        raise ValueError(say("err_choose_hidden"))
    (unhide_image if item == "image" else unhide_caption)(services.conn(), int(item_id), who)
    return (*hidden_table(services), say("restored", item=say(f"item_{item}"), id=int(item_id)))


@dataclass(frozen=True)
class BrowseTab:
    """The Browse tab's parts the app wires: the gallery opens an image in Annotate; ``refresh`` the filters."""

    gallery: gr.Gallery
    ids: gr.State
    table: gr.Dataframe
    refresh: Callable[[], tuple]
    filters: list


def _hidden_section(services: Services, annotator: gr.Textbox) -> list:
    with gr.Accordion(tr("hidden_items"), open=False, elem_id="hidden-panel"):
        table = gr.Dataframe(interactive=False, wrap=True, elem_id="hidden-table")
        with gr.Row():
            choice = gr.Dropdown([], label=tr("hidden_choice"), elem_id="hidden-choice", scale=3)
            restore_btn = gr.Button(tr("restore"), elem_id="btn-restore", scale=1)
        message = gr.Markdown(elem_id="hidden-message")
    restore_btn.click(user_errors(lambda who, item: restore(services, who, item)), [annotator, choice],
                      [table, choice, message], api_name="restore_hidden")
    return [table, choice]


def build_browse_tab(services: Services, annotator: gr.Textbox) -> BrowseTab:
    """``annotator``: the shared name box (who restores a hidden item)."""
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
    table = gr.Dataframe(interactive=False, label=t("results"), elem_id="search-table")
    hidden_outputs = _hidden_section(services, annotator)

    def run(q, c, s, a, src, progress=gr.Progress()):
        found_table, found_gallery, found_ids = search(services, q, c, s, a, src,
                                                       progress=lambda d, n: progress((d, n), desc="embedding"))
        return found_table, found_gallery, found_ids

    inputs = [query, cls, status, who, source]
    gr.on([search_btn.click, query.submit], user_errors(run), inputs, [table, gallery, ids], api_name="search")

    def refresh():
        fresh = filter_choices(services)
        return (*(gr.update(choices=fresh[k]) for k in ("class", "status", "annotator", "source")),
                *hidden_table(services))

    return BrowseTab(gallery, ids, table, localized(refresh), [cls, status, who, source, *hidden_outputs])
