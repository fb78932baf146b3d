"""Review tab: the items where annotators disagree or where a decision contradicts the model strongly, their
captions side by side; the reviewer's verdict resolves an item (:func:`curation.review.resolve`: recorded as a
resolution, the image's triplets rebuilt with it). Per-annotator progress and agreement (Cohen's κ) below."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from curation.review import ReviewItem, ReviewOptions, resolve, review_items
from curation.stats import agreement_summary, annotator_progress
from loop import Services
from scorer.images import load_image
from ui.common import acting_user, headers, localized, require, say, tr, user_errors

ITEM_COLUMNS = ("number", "kind", "image", "reason")
PROGRESS_COLUMNS = ("annotator", "decisions", "images", "accept", "reject", "best", "edit", "undone", "last")
AGREEMENT_COLUMNS = ("annotator_a", "annotator_b", "kappa", "items", "agreed")
VERDICTS = ("accept", "reject", "best", "clear")
SHOWN_PIXELS = 512 * 512


def _said(verdicts: dict[str, str]) -> str:
    return " · ".join(f"{who} {say(f'verdict_{v}')}" for who, v in sorted(verdicts.items()))


def reason(item: ReviewItem) -> str:
    """Why the item is listed, in the request's language (the store's ``reason`` is English)."""
    first = item.captions[0]
    if item.kind == "disagreement":
        return say("reason_disagreement", said=_said(first.verdicts))
    if item.kind == "best-pick":
        pickers = sorted({who for c in item.captions for who, v in c.verdicts.items() if v == "best"})
        return say("reason_best_pick", who=", ".join(pickers))
    other = item.captions[1] if len(item.captions) > 1 else first
    return say("reason_contradiction", said=_said(first.verdicts), rank=first.rank or "—",
               score=first.score if first.score is not None else float("nan"),
               other=other.score if other.score is not None else float("nan"))


def items_table(items: list[ReviewItem]) -> pd.DataFrame:
    rows = [[n + 1, say(f"kind_{item.kind}"), f"{item.image_id} · {item.image}", reason(item)]
            for n, item in enumerate(items)]
    return pd.DataFrame(rows, columns=headers(*ITEM_COLUMNS))


def side_by_side(item: ReviewItem) -> str:
    """The item's captions as columns of one HTML table: text, each annotator's verdict, the model's view."""
    head = "".join(f"<th>{say('review_caption', n=n + 1)}</th>" for n in range(len(item.captions)))
    def cells(fn) -> str:
        return "".join(f"<td>{fn(c)}</td>" for c in item.captions)
    verdicts = cells(lambda c: "<br>".join(f"{html.escape(who)}: <b>{html.escape(say(f'verdict_{v}'))}</b>"
                                           for who, v in sorted(c.verdicts.items())) or "—")
    model = cells(lambda c: "—" if c.score is None else say("review_score", score=c.score, rank=c.rank))
    resolution = cells(lambda c: html.escape(say(f"verdict_{c.resolution}") if c.resolution else "—"))
    return (f'<table class="review-side-by-side"><tr><th></th>{head}</tr>'
            f"<tr><th>{say('col_caption')}</th>{cells(lambda c: html.escape(c.text))}</tr>"
            f"<tr><th>{say('review_verdicts')}</th>{verdicts}</tr><tr><th>{say('review_model')}</th>{model}</tr>"
            f"<tr><th>{say('review_resolution')}</th>{resolution}</tr></table>")


def progress_tables(services: Services) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """Per-annotator progress, the pooled κ line, and κ per pair of annotators."""
    conn = services.conn()
    progress = pd.DataFrame([[p.annotator, p.decisions, p.images, p.accept, p.reject, p.best, p.edit, p.undone,
                              (p.last_at or "")[:19]] for p in annotator_progress(conn)],
                            columns=headers(*PROGRESS_COLUMNS))
    agreement = agreement_summary(conn)
    kappa = "—" if agreement.kappa is None else f"{agreement.kappa:.3f}"
    pairs = pd.DataFrame([[p.annotator_a, p.annotator_b, None if p.kappa is None else round(p.kappa, 3), p.items,
                           p.agreed] for p in agreement.pairs], columns=headers(*AGREEMENT_COLUMNS))
    return progress, say("agreement_line", kappa=kappa, items=agreement.items), pairs


def load_items(services: Services, include_resolved: bool) -> tuple[pd.DataFrame, list[dict]]:
    items = review_items(services.conn(), ReviewOptions(include_resolved=bool(include_resolved)))
    keys = [{"image_id": item.image_id, "kind": item.kind, "captions": [c.caption_id for c in item.captions]}
            for item in items]
    return items_table(items), keys


def show_item(services: Services, keys: list[dict], index: int) -> tuple:
    """(image, side-by-side HTML, caption choices) of item ``index`` (0-based) of the list shown."""
    if not 0 <= index < len(keys):
        raise ValueError(say("err_no_review_item", number=index + 1))
    key = keys[index]
    items = review_items(services.conn(), ReviewOptions(include_resolved=True))
    item = next((i for i in items if i.image_id == key["image_id"] and i.kind == key["kind"]
                 and [c.caption_id for c in i.captions] == key["captions"]), None)
    if item is None:
        raise ValueError(say("err_no_review_item", number=index + 1))
    picture = load_image(services.image_path(item.image), max_pixels=SHOWN_PIXELS)
    choices = [(f"{n + 1}: {c.text[:70]}", c.caption_id) for n, c in enumerate(item.captions)]
    return picture, side_by_side(item), gr.update(choices=choices, value=choices[0][1]), key["image_id"]


def resolve_item(services: Services, reviewer: str, image_id: int | None, caption_id: int | None, verdict: str,
                 note: str) -> str:
    """Record the reviewer's verdict on one caption of the item shown; the triplets follow it."""
    require(services, "resolve")  # reviewers and admins (everyone without --auth)
    who = acting_user(reviewer)
    if not who:
        raise ValueError(say("err_name_required"))
    if image_id is None or caption_id is None:
        raise ValueError(say("err_choose_review_item"))
    resolution = resolve(services.conn(), int(image_id), int(caption_id), verdict, who, (note or "").strip() or None)
    return say("resolved", verdict=resolution.verdict, caption=caption_id, image=image_id)


@dataclass(frozen=True)
class ReviewTab:
    refresh: Callable[..., tuple]
    refresh_inputs: list
    refresh_outputs: list


def build_review_tab(services: Services, reviewer: gr.Textbox) -> ReviewTab:
    """The Review tab; ``reviewer`` is the shared name box."""
    t = tr
    keys, shown_image = gr.State([]), gr.State(None)
    with gr.Row():
        include_resolved = gr.Checkbox(False, label=t("include_resolved"), elem_id="review-include-resolved")
        refresh_btn = gr.Button(t("refresh"), size="sm", elem_id="btn-review-refresh")
    items = gr.Dataframe(interactive=False, wrap=True, label=t("review_items"),
                         elem_id="review-items")
    with gr.Row():
        image = gr.Image(label=t("image"), type="pil", interactive=False, height=300, scale=2, elem_id="review-image")
        with gr.Column(scale=5):
            captions = gr.HTML(elem_id="review-captions")
            with gr.Row():
                caption = gr.Dropdown([], label=t("review_which"), elem_id="review-caption", scale=3)
                verdict = gr.Radio([(t(f"verdict_{v}"), v) for v in VERDICTS], value="accept",
                                   label=t("review_verdict"), elem_id="review-verdict", scale=2)
            note = gr.Textbox(label=t("review_note"), max_lines=1, elem_id="review-note")
            resolve_btn = gr.Button(t("resolve"), variant="primary", elem_id="btn-resolve")
            message = gr.Markdown(elem_id="review-message")
    gr.Markdown(t("annotator_progress"))
    progress = gr.Dataframe(interactive=False, elem_id="review-progress")
    agreement_line = gr.Markdown(elem_id="review-agreement")
    pairs = gr.Dataframe(interactive=False, elem_id="review-pairs")

    def refresh(resolved: bool):
        return (*load_items(services, resolved), *progress_tables(services))

    outputs = [items, keys, progress, agreement_line, pairs]
    gr.on([refresh_btn.click, include_resolved.input], localized(refresh), include_resolved, outputs,
          api_name="review_items")

    def on_select(shown: list[dict], evt: gr.SelectData):
        return show_item(services, shown, evt.index[0])

    items.select(user_errors(on_select), keys, [image, captions, caption, shown_image], api_name=False)

    def on_resolve(who, image_id, caption_id, v, text, resolved):
        line = resolve_item(services, who, image_id, caption_id, v, text)
        return (line, *refresh(resolved))

    resolve_btn.click(user_errors(on_resolve), [reviewer, shown_image, caption, verdict, note, include_resolved],
                      [message, *outputs], api_name="resolve")
    return ReviewTab(localized(refresh), [include_resolved], outputs)
