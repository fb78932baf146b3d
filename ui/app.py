"""``build_ui(services) -> gr.Blocks``: the tabs assembled, the annotator's name kept in the browser."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from loop import Services
from ui.annotate import empty_state
from ui.annotate_tab import build_annotate_tab
from ui.browse import build_browse_tab
from ui.common import publish_roots, tr, user_errors
from ui.data import build_data_tab
from ui.models import build_models_tab
from ui.review import build_review_tab
from ui.strings import KEY_LABELS
from ui.train import build_train_tab

_HERE = Path(__file__).parent
# gradio runs one function on load: the key bindings, the image zoom, the plots' line styles
APP_JS = ("() => { (" + (_HERE / "keyboard.js").read_text(encoding="utf-8") + ")(" + json.dumps(KEY_LABELS)
          + "); (" + (_HERE / "zoom.js").read_text(encoding="utf-8") + ")(); ("
          + (_HERE / "plots.js").read_text(encoding="utf-8") + ")(); }")
CJK_FONTS = '"Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif'
CSS = (
    "#caption-table td { font-size: 0.95em } .hidden-controls { display: none }"
    " #caption-table mark { background: #ffe08a; color: inherit; padding: 0 2px; border-radius: 2px }"
    " .key-settings-table td { padding: 2px 8px } .key-binding, .key-reset { border: 1px solid #999;"
    " border-radius: 4px; padding: 0 8px; min-width: 4em }"
    f" body, .gradio-container, button, input, textarea {{ font-family: var(--font), {CJK_FONTS} }}"
    " .review-side-by-side td, .review-side-by-side th { vertical-align: top; padding: 4px 8px }"
)


def build_ui(services: Services) -> gr.Blocks:
    t = tr
    publish_roots(services.image_root, services.config.data_dir)  # error messages show no absolute path
    with gr.Blocks(title="Remote Scorer") as demo:
        with gr.Row():
            gr.Markdown("## " + t("title"), elem_id="app-title")
            annotator = gr.Textbox(label=t("annotator"), elem_id="annotator-name", scale=1, max_lines=1,
                                   interactive=not services.access.enabled)  # with --auth: the logged-in user
        if services.read_only:
            gr.Markdown(t("read_only_banner"), elem_id="read-only-banner")
        saved_name = gr.BrowserState("", storage_key="remote_scorer_annotator")
        saved_advance = gr.BrowserState(False, storage_key="remote_scorer_accept_advances")
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab_annotate"), id="annotate"):
                annotate = build_annotate_tab(services, annotator)
            with gr.Tab(t("tab_browse"), id="browse") as browse_tab:
                browse = build_browse_tab(services, annotator)
            with gr.Tab(t("tab_review"), id="review") as review_tab:
                review = build_review_tab(services, annotator)
            with gr.Tab(t("tab_data"), id="data") as data_tab:
                data = build_data_tab(services)
            with gr.Tab(t("tab_train"), id="train") as train_tab:
                train = build_train_tab(services)
            with gr.Tab(t("tab_models"), id="models") as models_tab:
                models = build_models_tab(services)
        outputs = annotate.outputs

        def on_load(saved: str, advances: bool, request: gr.Request):
            who = (getattr(request, "username", None) or saved or "").strip()
            if not who:  # keep whatever the user may already have typed
                return (gr.skip(), gr.skip(), bool(advances), *annotate.empty())
            view = annotate.load_next(who, empty_state())
            return (gr.update(value=who, interactive=not getattr(request, "username", None)), who, bool(advances),
                    *view)

        demo.load(user_errors(on_load), [saved_name, saved_advance],
                  [annotator, saved_name, annotate.advance, *outputs], api_name=False)
        annotate.advance.input(lambda v: v, annotate.advance, saved_advance, api_name=False)

        def on_name(who: str, state: dict):
            who = (who or "").strip()
            if not who or (state or {}).get("image_id") is not None:
                return (who, *[gr.skip()] * len(outputs))
            return (who, *annotate.load_next(who, state))

        # Enter both submits and (focus to the captions) blurs the box: one call, not two racing ones
        gr.on([annotator.submit, annotator.blur], user_errors(on_name), [annotator, annotate.state],
              [saved_name, *outputs], api_name="start", trigger_mode="once")

        def open_from_gallery(who: str, state: dict, ids: list[int], evt: gr.SelectData):
            return (gr.Tabs(selected="annotate"), *annotate.open(who, state, ids[evt.index]))

        browse.gallery.select(user_errors(open_from_gallery), [annotator, annotate.state, browse.ids],
                              [tabs, *outputs], api_name=False)
        browse_tab.select(browse.refresh, None, browse.filters, api_name=False)
        review_tab.select(review.refresh, review.refresh_inputs, review.refresh_outputs, api_name=False)
        models_tab.select(models.refresh, None, models.refresh_outputs, api_name=False)
        train_tab.select(train.refresh, train.refresh_inputs, train.refresh_outputs, api_name=False).then(
            lambda: gr.Timer(active=True), None, train.timer, api_name=False)  # one poll; on while a run runs
        data_tab.select(lambda: gr.Timer(active=True), None, data.timer, api_name=False)
    return demo
