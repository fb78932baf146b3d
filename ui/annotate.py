"""Annotate tab: one image, its captions ranked by the active model, verdicts from the keyboard.

This module holds the handlers; the widgets are in :mod:`ui.annotate_tab`.

Handlers are plain functions ``(services, annotator, state, ...) -> AnnotateView``; the per-user state
is a small dict of ids (``image_id``, ``selected`` row, ``skipped`` ids, ``caption_ids`` in the order the
table shows them). A verdict goes to the caption the user saw at that row, even when the ranking changed
since (a promotion, another annotator's caption). Every handler that decides writes to the store first and
then reads the view back from it, so what the page shows is what is saved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from PIL import Image

from common.paths import PathOutsideRootError
from curation.cleanup import hide_caption, hide_image
from curation.decisions import edit_caption, record_decision, undo_last
from curation.models import get_model_version
from curation.queue import next_image, record_scores, release_lease
from curation.store import add_caption, get_image
from curation.views import CaptionRow, counters, image_captions
from loop import Services, add_generated_captions, add_hard_negatives
from scorer.images import ImageLoadError, load_image
from ui.captions import caption_ref, caption_table
from ui.common import acting_user, require, say
from ui.strings import EN as TEXT_KEYS

log = logging.getLogger(__name__)

DISPLAY_MAX_PIXELS = 1024 * 1024
HISTORY = 50  # images Previous can go back to


def empty_state() -> dict:
    """``selected`` is the row, ``selected_id`` the caption on it: the selection follows the caption across
    re-renders (a re-sort after an edit, a new caption); ``history`` the images opened before, for Previous."""
    return {"image_id": None, "selected": 0, "selected_id": None, "skipped": [], "caption_ids": [], "history": []}


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
    texts: dict[int, str] | None = None  # caption id → text of the captions shown (for status lines)

    def ref(self, caption_id: int, text: str = "") -> str:
        """The caption as the status line names it: its row number now and its first words."""
        texts = {caption_id: text, **(self.texts or {})}
        return caption_ref(self.state.get("caption_ids", []), texts, caption_id)

    def say(self, key: str, **values) -> AnnotateView:
        self.status = say(key, **values)
        return self

    def outputs(self) -> tuple:
        image = self.image if self.image_shown else gr.skip()
        return (self.state, image, self.info, self.table, self.counters, self.status, self.edit_text)


# -- reading -----------------------------------------------------------------------------------------
def ranked_captions(services: Services, image_id: int) -> list[tuple[CaptionRow, float]]:
    """The image's captions scored by the active model, best first. New scores are stored for the queue."""
    conn = services.conn()
    rows = image_captions(conn, image_id)
    if rows and any(row.score is None for row in rows) and services.model_loaded():  # not scored yet
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
    ids = [row.id for row, _ in ranked]
    if state.get("selected_id") in ids:  # the selection follows its caption wherever it moved
        state["selected"] = ids.index(state["selected_id"])
    state["selected"] = max(0, min(state.get("selected", 0), len(ranked) - 1))
    state["selected_id"] = ids[state["selected"]] if ids else None
    sources = sorted({row.source for row, _ in ranked})
    _, model_id = services.scorer()
    info = say("image_info", id=image.id, path=image.path, cls=image.cls or "—", sources=", ".join(sources) or "—",
               model=model_id)
    info += model_note(services, model_id)
    if not services.model_loaded():  # a training run has the memory: stored scores only
        info += "\n\n" + say("model_released", why=services.released_for)
    shown = load_image(services.image_path(image.path), max_pixels=DISPLAY_MAX_PIXELS) if picture else None
    state["caption_ids"] = ids  # what the table shows, row by row
    selected_text = ranked[state["selected"]][0].text if ranked else ""
    return AnnotateView(state, shown, info, caption_table(ranked, annotator, state["selected"]),
                        counters_text(services, annotator), status, selected_text, image_shown=picture,
                        texts={row.id: row.text for row, _ in ranked})


def model_note(services: Services, model_id: int) -> str:
    """After the model's number: whether it is untrained, and whether a run that may replace it is training."""
    version = get_model_version(services.conn(), model_id)
    note = say("model_untrained") if version is not None and version.provenance.get("kind") == "base" else ""
    running = services.training.running()
    return note + (say("model_training", run=running.run_id) if running is not None else "")


def _require(annotator: str) -> str:
    name = acting_user(annotator)  # with --auth the logged-in user, whatever name the client gives
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
def _moved(state: dict, image_id: int | None) -> dict:
    """``state`` on another image: the one it leaves goes to the history (for Previous), the selection to row 1."""
    if state.get("image_id") is not None and state.get("image_id") != image_id:
        state["history"] = [*state.get("history", []), state["image_id"]][-HISTORY:]
    state.update(image_id=image_id, selected=0, selected_id=None, caption_ids=[])
    return state


def load_next(services: Services, annotator: str, state: dict | None, note: str = "") -> AnnotateView:
    """The next image from the store's queue (uncertain first), leased to this annotator.

    An image that cannot be shown (file missing or unreadable, path outside the image root) is passed
    over for this session, its lease released, and the status line names it.
    """
    who = _require(annotator)
    state = dict(state or empty_state())
    unreadable = [note] if note else []
    while True:
        image_id = next_image(services.conn(), who, services.config.queue, exclude=state.get("skipped", []))
        _moved(state, image_id)
        notes = [*unreadable, "" if image_id is not None else say("queue_empty")]
        try:
            return render(services, who, state, " · ".join(note for note in notes if note))
        except (ImageLoadError, PathOutsideRootError) as error:
            release_lease(services.conn(), image_id, who)
            state["skipped"] = [*state.get("skipped", []), image_id]
            state["history"] = state["history"][:-1] if state.get("history") else []
            path = get_image(services.conn(), image_id).path
            log.warning("annotator %s: image %d (%s) skipped: %s", who, image_id, path, error)
            unreadable.append(say("skipped_unreadable", id=image_id, path=path, error=error))


def skip(services: Services, annotator: str, state: dict, note: str = "") -> AnnotateView:
    """Pass over the open image for this session (its lease is released) and open the next one."""
    who = _require(annotator)
    state = dict(state or empty_state())
    if state.get("image_id") is not None:
        state["skipped"] = [*state.get("skipped", []), state["image_id"]]
        release_lease(services.conn(), state["image_id"], who)
    return load_next(services, who, state, note)


def previous(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Go back to the image opened before this one (as often as the session has opened images)."""
    state = dict(state or empty_state())
    history = list(state.get("history", []))
    if not history:
        return render(services, acting_user(annotator), state, say("no_previous_image"), picture=False)
    back = history.pop()
    state.update(image_id=back, selected=0, selected_id=None, history=history)
    return render(services, acting_user(annotator), state, say("opened_image", id=back))


def open_image(services: Services, annotator: str, state: dict | None, image_id: int) -> AnnotateView:
    """Open a given image (from Browse or Review) without taking it from the queue."""
    state = dict(state or empty_state())
    get_image(services.conn(), int(image_id))
    _moved(state, int(image_id))
    return render(services, acting_user(annotator), state, say("opened_image", id=int(image_id)))


def select(services: Services, annotator: str, state: dict, row: int | None = None, delta: int = 0) -> AnnotateView:
    """Move the selection to ``row`` (0-based) or by ``delta`` rows; the image stays as the page shows it."""
    state = dict(state or empty_state())
    state["selected"] = (row if row is not None else state.get("selected", 0)) + delta
    state["selected_id"] = None  # the row moved: render names its caption
    return render(services, acting_user(annotator), state, picture=False)


def decide(services: Services, annotator: str, state: dict, verdict: str, row: int | None = None,
           advance: bool = False) -> AnnotateView:
    """Record ``verdict`` on the selected caption (or caption ``row``), then show the saved state.

    Accept or reject on the selected row moves the selection one row down; with ``advance`` an accept opens
    the next image instead (Prodigy's habit)."""
    who = _require(annotator)
    state = dict(state or empty_state())
    caption, score = _selected_caption(services, state, row)
    _, model_id = services.scorer()
    record_decision(services.conn(), state["image_id"], caption.id, verdict, who, model_version=model_id,
                    score_shown=None if score != score else score)
    number = state["caption_ids"].index(caption.id) + 1
    if advance and verdict == "accept":
        done = say("saved_verdict", verdict=verdict_name(verdict),
                   caption=caption_ref(state["caption_ids"], {caption.id: caption.text}, caption.id))
        return load_next(services, who, state, note=done)
    state["selected"], state["selected_id"] = (number if row is None and verdict != "best" else number - 1), None
    view = render(services, who, state)
    return view.say("saved_verdict", verdict=verdict_name(verdict), caption=view.ref(caption.id, caption.text))


def undo(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Cancel this annotator's latest action and show the image it was on, its caption selected."""
    who = _require(annotator)
    state = dict(state or empty_state())
    undone = undo_last(services.conn(), who)
    if undone is None:
        return render(services, who, state, say("nothing_to_undo"))
    if undone.image_id != state.get("image_id"):
        _moved(state, undone.image_id)
    state["selected_id"] = undone.caption_id
    view = render(services, who, state)
    return view.say("undone", verdict=verdict_name(undone.verdict), caption=view.ref(undone.caption_id))


def edit(services: Services, annotator: str, state: dict, new_text: str) -> AnnotateView:
    """Rewrite the selected caption (the old one stays; the edit makes a triplet new > old); the new caption
    is selected wherever the ranking puts it."""
    who = _require(annotator)
    state = dict(state or empty_state())
    caption, _ = _selected_caption(services, state)
    old = caption_ref(state["caption_ids"], {caption.id: caption.text}, caption.id)
    new_id = edit_caption(services.conn(), state["image_id"], caption.id, (new_text or "").strip(), who)
    state["selected_id"] = new_id
    view = render(services, who, state)
    return view.say("saved_edit", old=old, new=view.ref(new_id))


def add(services: Services, annotator: str, state: dict, text: str) -> AnnotateView:
    """Add a caption written by the annotator to the open image; it is selected wherever it ranks."""
    who = _require(annotator)
    state = dict(state or empty_state())
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    state["selected_id"] = add_caption(services.conn(), state["image_id"], (text or "").strip(), "human",
                                       author=who)
    view = render(services, who, state)
    return view.say("saved_new_caption", caption=view.ref(state["selected_id"]))


def hide_selected_caption(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Hide the selected caption (soft: recorded with who and when, restored from Browse › Hidden or the CLI)."""
    require(services, "hide")
    who = _require(annotator)
    state = dict(state or empty_state())
    caption, _ = _selected_caption(services, state)
    ref = caption_ref(state["caption_ids"], {caption.id: caption.text}, caption.id)
    hide_caption(services.conn(), caption.id, who)
    state["selected_id"] = None  # the row keeps its number: the caption below moves up into it
    return render(services, who, state, say("hidden_caption", caption=ref), picture=False)


def hide_open_image(services: Services, annotator: str, state: dict) -> AnnotateView:
    """Hide the open image (left out of the queue, search, exports and training) and open the next one."""
    require(services, "hide")
    who = _require(annotator)
    state = dict(state or empty_state())
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    hidden = state["image_id"]
    hide_image(services.conn(), hidden, who)
    state["image_id"] = None  # not in the history: Previous does not come back to a hidden image
    return load_next(services, who, state, note=say("hidden_image", id=hidden))


def generate(services: Services, annotator: str, state: dict, n: float) -> AnnotateView:
    """Write ``n`` candidate captions of the open image with the active backbone; they join the ranked list."""
    state = dict(state or empty_state())
    if state.get("image_id") is None:
        raise ValueError(say("err_no_image"))
    count = int(n or 0)
    if count < 1:
        raise ValueError(say("err_generate_count", n=n))
    added = add_generated_captions(services, state["image_id"], count)
    return render(services, acting_user(annotator), state,
                  say("generated", count=len(added.caption_ids), source=", ".join(added.sources)), picture=False)


def hard_negatives(services: Services, annotator: str, state: dict, n: float) -> AnnotateView:
    """Add ``n`` hard negatives of the selected caption (2–3 details changed) as new candidates of the image."""
    state = dict(state or empty_state())
    caption, _ = _selected_caption(services, state)
    count = int(n or 0)
    if count < 1:
        raise ValueError(say("err_generate_count", n=n))
    added = add_hard_negatives(services, state["image_id"], caption.id, count)
    view = render(services, acting_user(annotator), state, picture=False)
    return view.say("added_negatives", count=len(added.caption_ids), caption=view.ref(caption.id, caption.text),
                    sources=", ".join(added.sources) or "—")


def image_record(services: Services, annotator: str, image_id: int) -> dict:
    """An image and its captions ranked by the active model, as plain data (the ``/open_image`` endpoint).

    The image is named ``image`` (as in the store's file formats): gradio_client would fetch a ``path`` as a file.
    """
    who = acting_user(annotator)
    image = get_image(services.conn(), int(image_id))
    _, model_id = services.scorer()
    return {"image_id": image.id, "image": image.path, "class": image.cls, "model_version": model_id,
            "captions": [{"id": row.id, "text": row.text, "score": None if math.isnan(score) else score,
                          "source": row.source, "verdict": row.verdicts.get(who)}
                         for row, score in ranked_captions(services, image.id)]}
