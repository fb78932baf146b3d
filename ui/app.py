"""``build_ui(services) -> gr.Blocks``: the tabs assembled, the annotator's name kept in the browser."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from loop import Services
from ui.annotate import build_annotate_tab, empty_state
from ui.browse import build_browse_tab
from ui.common import publish_roots, tr, user_errors
from ui.data import build_data_tab
from ui.models import build_models_tab
from ui.train import build_train_tab

_HERE = Path(__file__).parent
# gradio runs one function on load: the key bindings, then the image zoom
APP_JS = ("() => { (" + (_HERE / "keyboard.js").read_text(encoding="utf-8") + ")(); ("
               + (_HERE / "zoom.js").read_text(encoding="utf-8") + ")(); }")
CSS = "#caption-table td { font-size: 0.95em } .hidden-controls { display: none }"


def build_ui(services: Services) -> gr.Blocks:
    t = tr
    publish_roots(services.image_root, services.config.data_dir)  # error messages show no absolute path
    with gr.Blocks(title="Remote Scorer") as demo:
        with gr.Row():
            gr.Markdown("## Remote Scorer")
            annotator = gr.Textbox(label=t("annotator"), elem_id="annotator-name", scale=1, max_lines=1,
                                   interactive=not services.access.enabled)  # with --auth: the logged-in user
        if services.read_only:
            gr.Markdown(t("read_only_banner"), elem_id="read-only-banner")
        saved_name = gr.BrowserState("", storage_key="remote_scorer_annotator")
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab_annotate"), id="annotate"):
                annotate = build_annotate_tab(services, annotator)
            with gr.Tab(t("tab_browse"), id="browse") as browse_tab:
                browse = build_browse_tab(services)
            with gr.Tab(t("tab_data"), id="data"):
                build_data_tab(services)
            with gr.Tab(t("tab_train"), id="train") as train_tab:
                train = build_train_tab(services)
            with gr.Tab(t("tab_models"), id="models") as models_tab:
                models = build_models_tab(services)
        outputs = annotate.outputs

        def on_load(saved: str, request: gr.Request):
            who = (getattr(request, "username", None) or saved or "").strip()
            if not who:  # keep whatever the user may already have typed
                return (gr.skip(), gr.skip(), *annotate.empty())
            view = annotate.load_next(who, empty_state())
            return (gr.update(value=who, interactive=not getattr(request, "username", None)), who, *view)

        demo.load(user_errors(on_load), [saved_name], [annotator, saved_name, *outputs], api_name=False)

        def on_name(who: str, state: dict):
            who = (who or "").strip()
            if not who or (state or {}).get("image_id") is not None:
                return (who, *[gr.skip()] * len(outputs))
            return (who, *annotate.load_next(who, state))

        gr.on([annotator.submit, annotator.blur], user_errors(on_name), [annotator, annotate.state],
              [saved_name, *outputs], api_name="start")

        def open_from_gallery(who: str, state: dict, ids: list[int], evt: gr.SelectData):
            return (gr.Tabs(selected="annotate"), *annotate.open(who, state, ids[evt.index]))

        browse.gallery.select(user_errors(open_from_gallery), [annotator, annotate.state, browse.ids],
                              [tabs, *outputs], api_name=False)
        browse_tab.select(browse.refresh, None, browse.filters, api_name=False)
        models_tab.select(models.refresh, None, models.refresh_outputs, api_name=False)
        train_tab.select(train.refresh, train.refresh_inputs, train.refresh_outputs, api_name=False)
    return demo
