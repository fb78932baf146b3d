"""The Annotate tab's widgets and events; the handlers are in :mod:`ui.annotate`, the keys in ``keyboard.js``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from loop import Services, add_hard_negatives
from ui.annotate import (
    add,
    decide,
    edit,
    empty_state,
    generate,
    hard_negatives,
    hide_open_image,
    hide_selected_caption,
    image_record,
    load_next,
    open_image,
    previous,
    render,
    select,
    skip,
    undo,
)
from ui.captions import TABLE_DATATYPES
from ui.common import say, tr, user_errors

TABLE_COLUMNS = ["", "#", "caption", "score", "source", "my verdict"]
# every row rendered (the table virtualizes rows outside its own scroll area): the page scrolls to the selected row
TABLE_MAX_HEIGHT = 20_000


@dataclass(frozen=True)
class AnnotateTab:
    """The Annotate tab's parts the app wires to other tabs; the view functions return ``outputs`` values."""

    state: gr.State
    outputs: list
    table: gr.Dataframe
    image: gr.Image
    status: gr.Markdown
    advance: gr.Checkbox
    load_next: Callable[[str, dict], tuple]
    empty: Callable[[], tuple]
    open: Callable[[str, dict, int], tuple]


def _caption_panel(t) -> dict:
    """The table, the verdict buttons and the text boxes (the right-hand column)."""
    w = {"table": gr.Dataframe(headers=TABLE_COLUMNS, datatype=TABLE_DATATYPES, interactive=False, wrap=True,
                               label=t("captions"), elem_id="caption-table", max_height=TABLE_MAX_HEIGHT,
                               column_widths=["3%", "4%", "57%", "10%", "10%", "16%"])}
    with gr.Row():
        w["accept"] = gr.Button(t("accept"), elem_id="btn-accept", variant="primary")
        w["reject"] = gr.Button(t("reject"), elem_id="btn-reject", variant="stop")
        w["previous"] = gr.Button(t("previous"), elem_id="btn-previous")
        w["skip"] = gr.Button(t("next"), elem_id="btn-next")
        w["undo"] = gr.Button(t("undo"), elem_id="btn-undo")
    with gr.Row():
        w["best"] = [gr.Button(f"★{n}", elem_id=f"btn-best-{n}", size="sm", min_width=40) for n in range(1, 10)]
    with gr.Row():
        w["advance"] = gr.Checkbox(False, label=t("accept_advances"), elem_id="accept-advances")
        w["hide_caption"] = gr.Button(t("hide_caption"), elem_id="btn-hide-caption", size="sm")
        w["hide_image"] = gr.Button(t("hide_image"), elem_id="btn-hide-image", size="sm", variant="stop")
    w["up"] = gr.Button("up", elem_id="btn-up", visible="hidden")  # clicked by ↑ / k
    w["down"] = gr.Button("down", elem_id="btn-down", visible="hidden")  # clicked by ↓ / j
    with gr.Row():
        w["edit_box"] = gr.Textbox(label=t("edit_selected"), elem_id="edit-box", scale=4)
        w["edit"] = gr.Button(t("save_edit"), elem_id="btn-edit", scale=1)
    with gr.Row():
        w["add_box"] = gr.Textbox(label=t("add_caption"), elem_id="add-box", scale=4)
        w["add"] = gr.Button(t("add"), elem_id="btn-add", scale=1)
    with gr.Row():
        w["generate_n"] = gr.Number(3, label=t("generate_n"), precision=0, minimum=1, maximum=10, scale=1,
                                    elem_id="generate-n")
        w["generate"] = gr.Button(t("generate"), elem_id="btn-generate", scale=2)
        w["negatives"] = gr.Button(t("hard_negatives"), elem_id="btn-hard-negatives", scale=2)
    w["status"] = gr.Markdown(elem_id="annotate-status")
    gr.Markdown(t("keys_help"), elem_id="keys-help")
    with gr.Accordion(t("key_settings"), open=False, elem_id="key-settings-panel"):
        gr.HTML('<div id="key-settings"></div>')  # filled by keyboard.js from this browser's bindings
    return w


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
            w = _caption_panel(t)
    table, status, edit_box, add_box = w["table"], w["status"], w["edit_box"], w["add_box"]
    outputs = [state, image, info, table, counters_md, status, edit_box]

    def wire(button: gr.Button, api_name: str, fn, extra: list | None = None, progress: str = "minimal") -> None:
        """A button's click: ``fn``'s view into the outputs; a small spinner (no overlay) while it runs."""
        button.click(user_errors(lambda *a: fn(*a).outputs()), [annotator, state, *(extra or [])], outputs,
                     api_name=api_name, concurrency_limit=None, show_progress=progress)

    wire(w["skip"], "skip", lambda who, st: skip(services, who, st))
    wire(w["previous"], "previous", lambda who, st: previous(services, who, st))
    wire(w["accept"], "accept", lambda who, st, adv: decide(services, who, st, "accept", advance=bool(adv)),
         [w["advance"]])
    wire(w["reject"], "reject", lambda who, st: decide(services, who, st, "reject"))
    for n, btn in enumerate(w["best"], 1):
        wire(btn, f"best_{n}", lambda who, st, row=n - 1: decide(services, who, st, "best", row))
    wire(w["up"], "select_up", lambda who, st: select(services, who, st, delta=-1))
    wire(w["down"], "select_down", lambda who, st: select(services, who, st, delta=1))
    wire(w["undo"], "undo", lambda who, st: undo(services, who, st))
    wire(w["hide_caption"], "hide_caption", lambda who, st: hide_selected_caption(services, who, st))
    wire(w["hide_image"], "hide_image", lambda who, st: hide_open_image(services, who, st))
    wire(w["edit"], "edit", lambda who, st, text: edit(services, who, st, text), [edit_box])
    wire(w["generate"], "generate", lambda who, st, n: generate(services, who, st, n), [w["generate_n"]],
         progress="full")  # seconds: the overlay says it is working
    wire(w["negatives"], "hard_negatives", lambda who, st, n: hard_negatives(services, who, st, n),
         [w["generate_n"]], progress="full")
    w["add"].click(user_errors(lambda who, st, text: (*add(services, who, st, text).outputs(), "")),
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
    return AnnotateTab(state, outputs, table, image, status, w["advance"],
                       load_next=lambda who, st: load_next(services, who, st).outputs(),
                       empty=lambda: render(services, "", empty_state(), say("enter_name_to_start")).outputs(),
                       open=lambda who, st, i: open_image(services, who, st, i).outputs())
