"""Annotate tab: one image, its captions ranked by the active model, verdicts from the keyboard.

Handlers are plain functions ``(services, annotator, state, ...) -> AnnotateView``; the per-user state
is a small dict of ids (``image_id``, ``selected`` row, ``skipped`` ids, ``caption_ids`` in the order the
table shows them). A verdict goes to the caption the user saw at that row, even when the ranking changed
since (a promotion, another annotator's caption). Every handler that decides writes to the store first and
then reads the view back from it, so what the page shows is what is saved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from PIL import Image

from common.paths import PathOutsideRootError
from curation.decisions import edit_caption, record_decision, undo_last
from curation.models import get_model_version
from curation.queue import next_image, record_scores, release_lease
from curation.store import add_caption, get_image
from curation.views import CaptionRow, counters, image_captions
from loop import Services, add_generated_captions, add_hard_negatives
from scorer.images import ImageLoadError, load_image
from ui.common import EN as TEXT_KEYS
from ui.common import say, tr, user_errors

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["", "#", "caption", "score", "source", "my verdict"]
DISPLAY_MAX_PIXELS = 1024 * 1024


def empty_state() -> dict:
    return {"image_id": None, "selected": 0, "skipped": [], "caption_ids": []}


@dataclass
class AnnotateView:
    """Everything the tab shows, as plain values. ``image_shown`` False: the page keeps the image it shows
    (the same image, e.g. after moving the selection), so it is neither loaded nor sent again."""

    state: dict
    image: Image.Image | None
    info: str
    table: pd.DataFrame
    counters: str
    status: str
    edit_text: str
    image_shown: bool = True

    def outputs(self) -> tuple:
        image = self.image if self.image_shown else gr.skip()
        return (self.state, image, self.info, self.table, self.counters, self.status, self.edit_text)


# -- reading -----------------------------------------------------------------------------------------
def ranked_captions(services: Services, image_id: int) -> list[tuple[CaptionRow, float]]:
    """The image's captions scored by the active model, best first. New scores are stored for the queue."""
    conn = services.conn()
    rows = image_captions(conn, image_id)
    if rows and any(row.score is None for row in rows):  # not yet scored by the queue scorer
        path = services.image_path(get_image(conn, image_id).path)
        with services.using_model() as (scorer, model_id):
            ranked = scorer.rank([(str(path), [row.text for row in rows])])[0]
        by_text = {c.text: c.score for c in ranked.captions}
        record_scores(conn, model_id, [(image_id, row.id, by_text[row.text]) for row in rows])
        rows = image_captions(conn, image_id)
    return best_first([(row, row.score if row.score is not None else float("nan")) for row in rows])


def best_first(scored: list[tuple[CaptionRow, float]]) -> list[tuple[CaptionRow, float]]:
    """Highest score first; unscored (NaN) captions last, in the store's order."""
    def key(pair: tuple[CaptionRow, float]) -> tuple[bool, float]:
        return (True, 0.0) if math.isnan(pair[1]) else (False, -pair[1])

    return sorted(scored, key=key)


def verdict_name(verdict: str) -> str:
    """A verdict as the status line names it (in the request's language)."""
    return say(f"verdict_{verdict}") if f"verdict_{verdict}" in TEXT_KEYS else verdict


def caption_table(ranked: list[tuple[CaptionRow, float]], annotator: str, selected: int) -> pd.DataFrame:
    marks = {verdict: say(f"mark_{verdict}") for verdict in ("accept", "reject", "best")}
    records = [
        ["▶" if n == selected else "", n + 1, row.text, round(score, 4), row.source,
         marks.get(row.verdicts.get(annotator, ""), "")]
        for n, (row, score) in enumerate(ranked)
    ]
    columns = ["", "#", *(say(key) for key in ("col_caption", "col_score", "col_source", "col_verdict"))]
    return pd.DataFrame(records, columns=columns)


def counters_text(services: Services, annotator: str) -> str:
    return say("counters", **counters(services.conn(), annotator or ""))


def render(services: Services, annotator: str, state: dict, status: str = "", picture: bool = True) -> AnnotateView:
    """The view of ``state`` as stored now; without ``picture`` the image file is not read (the page has it)."""
    image_id = state.get("image_id")
    if image_id is None:
        state["caption_ids"] = []
        return AnnotateView(state, None, say("no_image_open"), caption_table([], annotator, 0),
                            counters_text(services, annotator), status, "")
    image = get_image(services.conn(), image_id)
    ranked = ranked_captions(services, image_id)
    state["selected"] = max(0, min(state.get("selected", 0), len(ranked) - 1))
    sources = sorted({row.source for row, _ in ranked})
    _, model_id = services.scorer()
    info = say("image_info", id=image.id, path=image.path, cls=image.cls or "—", sources=", ".join(sources) or "—",
               model=model_id)
    info += model_note(services, model_id)
    shown = load_image(services.image_path(image.path), max_pixels=DISPLAY_MAX_PIXELS) if picture else None
    state["caption_ids"] = [row.id for row, _ in ranked]  # what the table shows, row by row
    selected_text = ranked[state["selected"]][0].text if ranked else ""
    return AnnotateView(state, shown, info, caption_table(ranked, annotator, state["selected"]),
                        counters_text(services, annotator), status, selected_text, image_shown=picture)


def model_note(services: Services, model_id: int) -> str:
    """After the model's number: whether it is untrained, and whether a run that may replace it is training."""
    version = get_model_version(services.conn(), model_id)
    note = say("model_untrained") if version is not None and version.provenance.get("kind") == "base" else ""
    running = services.training.running()
    return note + (say("model_training", run=running.run_id) if running is not None else "")


def _require(annotator: str) -> str:
    name = (annotator or "").strip()
    if not name:
        raise ValueError(say("err_name_required"))
    return name


def _selected_caption(services: Services, state: dict, row: int | None = None) -> tuple[CaptionRow, float]:
    """The caption the page showed at ``row`` (default: the selected row), with its score now."""
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    shown = state.get("caption_ids") or []
    index = state.get("selected", 0) if row is None else row
    if not 0 <= index < len(shown):
        raise ValueError(say("err_no_caption_number", image=state["image_id"], number=index + 1))
    by_id = {caption.id: (caption, score) for caption, score in ranked_captions(services, state["image_id"])}
    if shown[index] not in by_id:
        raise ValueError(say("err_no_caption_number", image=state["image_id"], number=index + 1))
    return by_id[shown[index]]


# -- actions -----------------------------------------------------------------------------------------
def load_next(services: Services, annotator: str, state: dict | None) -> AnnotateView:
    """The next image from the store's queue (uncertain first), leased to this annotator.

    An image that cannot be shown (file missing or unreadable, path outside the image root) is passed
    over for this session, its lease released, and the status line names it.
    """
    who = _require(annotator)
    state = dict(state or empty_state())
    unreadable = []
    while True:
        image_id = next_image(services.conn(), who, exclude=state.get("skipped", []))
        state.update(image_id=image_id, selected=0, caption_ids=[])
        notes = [*unreadable, "" if image_id is not None else say("queue_empty")]
        try:
            return render(services, who, state, " · ".join(note for note in notes if note))
        except (ImageLoadError, PathOutsideRootError) as error:
            release_lease(services.conn(), image_id, who)
            state["skipped"] = [*state.get("skipped", []), image_id]
            path = get_image(services.conn(), image_id).path
            log.warning("annotator %s: image %d (%s) skipped: %s", who, image_id, path, error)
            unreadable.append(say("skipped_unreadable", id=image_id, path=path, error=error))


def skip(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Pass over the open image for this session (its lease is released) and open the next one."""
    who = _require(annotator)
    state = dict(state or empty_state())
    if state.get("image_id") is not None:
        state["skipped"] = [*state.get("skipped", []), state["image_id"]]
        release_lease(services.conn(), state["image_id"], who)
    return load_next(services, who, state)


def open_image(services: Services, annotator: str, state: dict | None, image_id: int) -> AnnotateView:
    """Open a given image (from Browse) without taking it from the queue."""
    state = dict(state or empty_state())
    get_image(services.conn(), int(image_id))
    state.update(image_id=int(image_id), selected=0)
    return render(services, (annotator or "").strip(), state, say("opened_image", id=int(image_id)))


def select(services: Services, annotator: str, state: dict, row: int | None = None, delta: int = 0) -> AnnotateView:
    """Move the selection to ``row`` (0-based) or by ``delta`` rows; the image stays as the page shows it."""
    state = dict(state or empty_state())
    state["selected"] = (row if row is not None else state.get("selected", 0)) + delta
    return render(services, (annotator or "").strip(), state, picture=False)


def decide(services: Services, annotator: str, state: dict, verdict: str, row: int | None = None) -> AnnotateView:
    """Record ``verdict`` on the selected caption (or caption ``row``), then show the saved state."""
    who = _require(annotator)
    state = dict(state or empty_state())
    caption, score = _selected_caption(services, state, row)
    _, model_id = services.scorer()
    record_decision(services.conn(), state["image_id"], caption.id, verdict, who, model_version=model_id,
                    score_shown=None if score != score else score)
    if row is None and verdict != "best":
        state["selected"] = state.get("selected", 0) + 1
    elif row is not None:
        state["selected"] = row
    return render(services, who, state, say("saved_verdict", verdict=verdict_name(verdict), caption=caption.id))


def undo(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Cancel this annotator's latest action and show the image it was on."""
    who = _require(annotator)
    state = dict(state or empty_state())
    undone = undo_last(services.conn(), who)
    if undone is None:
        return render(services, who, state, say("nothing_to_undo"))
    if undone.image_id != state.get("image_id"):
        state.update(image_id=undone.image_id, selected=0)
    return render(services, who, state, say("undone", verdict=verdict_name(undone.verdict), caption=undone.caption_id))


def edit(services: Services, annotator: str, state: dict, new_text: str) -> AnnotateView:
    """Rewrite the selected caption (the old one stays; the edit makes a triplet new > old)."""
    who = _require(annotator)
    state = dict(state or empty_state())
    caption, _ = _selected_caption(services, state)
    new_id = edit_caption(services.conn(), state["image_id"], caption.id, (new_text or "").strip(), who)
    return render(services, who, state, say("saved_edit", old=caption.id, new=new_id))


def add(services: Services, annotator: str, state: dict, text: str) -> AnnotateView:
    """Add a caption written by the annotator to the open image."""
    who = _require(annotator)
    state = dict(state or empty_state())
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    caption_id = add_caption(services.conn(), state["image_id"], (text or "").strip(), "human", author=who)
    return render(services, who, state, say("saved_new_caption", caption=caption_id))


def generate(services: Services, annotator: str, state: dict, n: float) -> AnnotateView:
    """Write ``n`` candidate captions of the open image with the active backbone; they join the ranked list."""
    state = dict(state or empty_state())
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    count = int(n or 0)
    if count < 1:
        raise ValueError(say("err_generate_count", n=n))
    added = add_generated_captions(services, state["image_id"], count)
    return render(services, (annotator or "").strip(), state,
                  say("generated", count=len(added.caption_ids), source=", ".join(added.sources)), picture=False)


def hard_negatives(services: Services, annotator: str, state: dict, n: float) -> AnnotateView:
    """Add ``n`` hard negatives of the selected caption (2–3 details changed) as new candidates of the image."""
    state = dict(state or empty_state())
    caption, _ = _selected_caption(services, state)
    count = int(n or 0)
    if count < 1:
        raise ValueError(say("err_generate_count", n=n))
    added = add_hard_negatives(services, state["image_id"], caption.id, count)
    return render(services, (annotator or "").strip(), state,
                  say("added_negatives", count=len(added.caption_ids), caption=caption.id,
                      sources=", ".join(added.sources) or "—"), picture=False)


def image_record(services: Services, annotator: str, image_id: int) -> dict:
    """An image and its captions ranked by the active model, as plain data (the ``/open_image`` endpoint).

    The image is named ``image`` (as in the store's file formats): gradio_client would fetch a ``path`` as a file.
    """
    who = (annotator or "").strip()
    image = get_image(services.conn(), int(image_id))
    _, model_id = services.scorer()
    return {"image_id": image.id, "image": image.path, "class": image.cls, "model_version": model_id,
            "captions": [{"id": row.id, "text": row.text, "score": None if math.isnan(score) else score,
                          "source": row.source, "verdict": row.verdicts.get(who)}
                         for row, score in ranked_captions(services, image.id)]}


# -- the tab -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotateTab:
    """The Annotate tab's parts the app wires to other tabs; the view functions return ``outputs`` values."""

    state: gr.State
    outputs: list
    table: gr.Dataframe
    image: gr.Image
    status: gr.Markdown
    load_next: Callable[[str, dict], tuple]
    empty: Callable[[], tuple]
    open: Callable[[str, dict, int], tuple]


def build_annotate_tab(services: Services, annotator: gr.Textbox) -> AnnotateTab:
    """The Annotate tab's components and events; ``annotator`` is the shared name box."""
    t = tr
    state = gr.State(empty_state())
    with gr.Row():
        with gr.Column(scale=5):
            image = gr.Image(label=t("image"), type="pil", interactive=False, height=460,
                             buttons=["fullscreen", "download"], elem_id="annotate-image")
            gr.Markdown(t("zoom_help"), elem_classes="zoom-help")
            info = gr.Markdown(elem_id="annotate-info")
            counters_md = gr.Markdown(elem_id="annotate-counters")
        with gr.Column(scale=7):
            table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True, label=t("captions"),
                                 elem_id="caption-table", column_widths=["3%", "4%", "57%", "10%", "10%", "16%"])
            with gr.Row():
                accept_btn = gr.Button(t("accept"), elem_id="btn-accept", variant="primary")
                reject_btn = gr.Button(t("reject"), elem_id="btn-reject", variant="stop")
                skip_btn = gr.Button(t("next"), elem_id="btn-next")
                undo_btn = gr.Button(t("undo"), elem_id="btn-undo")
            with gr.Row():
                best_btns = [gr.Button(f"★{n}", elem_id=f"btn-best-{n}", size="sm", min_width=40)
                             for n in range(1, 10)]
            up_btn = gr.Button("up", elem_id="btn-up", visible="hidden")  # clicked by ↑ / k
            down_btn = gr.Button("down", elem_id="btn-down", visible="hidden")  # clicked by ↓ / j
            with gr.Row():
                edit_box = gr.Textbox(label=t("edit_selected"), elem_id="edit-box", scale=4)
                edit_btn = gr.Button(t("save_edit"), elem_id="btn-edit", scale=1)
            with gr.Row():
                add_box = gr.Textbox(label=t("add_caption"), elem_id="add-box", scale=4)
                add_btn = gr.Button(t("add"), elem_id="btn-add", scale=1)
            with gr.Row():
                generate_n = gr.Number(3, label=t("generate_n"), precision=0, minimum=1, maximum=10, scale=1,
                                       elem_id="generate-n")
                generate_btn = gr.Button(t("generate"), elem_id="btn-generate", scale=2)
                negatives_btn = gr.Button(t("hard_negatives"), elem_id="btn-hard-negatives", scale=2)
            status = gr.Markdown(elem_id="annotate-status")
            gr.Markdown(t("keys_help"))
    outputs = [state, image, info, table, counters_md, status, edit_box]

    def wire(button: gr.Button, api_name: str, fn, extra: list | None = None) -> None:
        button.click(user_errors(lambda *a: fn(*a).outputs()), [annotator, state, *(extra or [])], outputs,
                     api_name=api_name, concurrency_limit=None)

    wire(skip_btn, "skip", lambda who, st: skip(services, who, st))
    wire(accept_btn, "accept", lambda who, st: decide(services, who, st, "accept"))
    wire(reject_btn, "reject", lambda who, st: decide(services, who, st, "reject"))
    for n, btn in enumerate(best_btns, 1):
        wire(btn, f"best_{n}", lambda who, st, row=n - 1: decide(services, who, st, "best", row))
    wire(up_btn, "select_up", lambda who, st: select(services, who, st, delta=-1))
    wire(down_btn, "select_down", lambda who, st: select(services, who, st, delta=1))
    wire(undo_btn, "undo", lambda who, st: undo(services, who, st))
    wire(edit_btn, "edit", lambda who, st, text: edit(services, who, st, text), [edit_box])
    wire(generate_btn, "generate", lambda who, st, n: generate(services, who, st, n), [generate_n])
    wire(negatives_btn, "hard_negatives", lambda who, st, n: hard_negatives(services, who, st, n), [generate_n])
    add_btn.click(user_errors(lambda who, st, text: (*add(services, who, st, text).outputs(), "")),
                  [annotator, state, add_box], [*outputs, add_box], api_name="add_caption")

    def on_select(who: str, st: dict, evt: gr.SelectData):
        return select(services, who, st, row=evt.index[0]).outputs()

    table.select(user_errors(on_select), [annotator, state], outputs, api_name="select_row",
                 api_visibility="undocumented")

    def open_image_api(annotator: str, image_id: int) -> dict:
        """An image and its captions ranked by the active model (no lease is taken)."""
        return image_record(services, annotator, image_id)

    def hard_negatives_api(image_id: int, caption_id: int, n: int = 3) -> dict:
        """Add ``n`` hard negatives of a caption of an image as new candidates; the image as it is now."""
        added = add_hard_negatives(services, int(image_id), int(caption_id), int(n))
        return {"added": added.caption_ids, "sources": added.sources, **image_record(services, "", image_id)}

    gr.api(user_errors(open_image_api), api_name="open_image")
    gr.api(user_errors(hard_negatives_api), api_name="add_hard_negatives")
    return AnnotateTab(state, outputs, table, image, status,
                       load_next=lambda who, st: load_next(services, who, st).outputs(),
                       empty=lambda: render(services, "", empty_state(), say("enter_name_to_start")).outputs(),
                       open=lambda who, st, i: open_image(services, who, st, i).outputs())
