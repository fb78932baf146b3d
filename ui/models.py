"""Models tab: every model version with its metrics and provenance; compare two; roll back."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from curation.models import get_model_version, list_model_versions
from loop import Services
from ui.common import require, say, tr, user_errors

COLUMNS = ["id", "active", "created", "parent", "metrics", "provenance", "path"]


def models_table(services: Services) -> pd.DataFrame:
    rows = [[v.id, "●" if v.active else "", v.created_at[:19], v.parent_id,
             json.dumps(v.metrics, sort_keys=True), json.dumps(v.provenance, sort_keys=True), v.path]
            for v in list_model_versions(services.conn())]
    return pd.DataFrame(rows, columns=COLUMNS)


def model_choices(services: Services) -> list[tuple[str, int]]:
    return [(f"v{v.id}{' (active)' if v.active else ''}", v.id) for v in list_model_versions(services.conn())]


def compare(services: Services, a: int, b: int) -> pd.DataFrame:
    """One row per metric, the two versions side by side (blank where a version lacks the metric)."""
    versions = [get_model_version(services.conn(), int(x)) if x is not None else None for x in (a, b)]
    if any(v is None for v in versions):
        raise ValueError(say("err_choose_two", a=a, b=b))
    names = sorted(set(versions[0].metrics) | set(versions[1].metrics))
    return pd.DataFrame([[n, versions[0].metrics.get(n), versions[1].metrics.get(n)] for n in names],
                        columns=["metric", f"v{versions[0].id}", f"v{versions[1].id}"])


def rollback(services: Services, model_id: int) -> tuple[pd.DataFrame, str]:
    """Make an earlier (or any) version the active one; the app ranks with it from now on."""
    require(services, "rollback")
    if model_id is None:
        raise ValueError(say("err_choose_model"))
    services.activate(int(model_id))
    return models_table(services), say("active_model_is", model=int(model_id))


@dataclass(frozen=True)
class ModelsTab:
    """The Models tab's parts the app wires: ``refresh`` (table, model A, model B) when the tab is opened."""

    table: gr.Dataframe
    refresh: Callable[[], tuple]
    refresh_outputs: list


def build_models_tab(services: Services) -> ModelsTab:
    t = tr
    table = gr.Dataframe(models_table(services), label=t("models"), interactive=False, wrap=True,
                         elem_id="models-table")
    refresh_btn = gr.Button(t("refresh"), size="sm")
    with gr.Row():
        a = gr.Dropdown(model_choices(services), label=t("model_a"))
        b = gr.Dropdown(model_choices(services), label=t("model_b"))
        compare_btn = gr.Button(t("compare"))
        rollback_btn = gr.Button(t("rollback"), variant="stop")
    comparison = gr.Dataframe(label=t("compare"), interactive=False)
    status = gr.Markdown()

    def refresh():
        choices = model_choices(services)
        return models_table(services), gr.update(choices=choices), gr.update(choices=choices)

    refresh_btn.click(refresh, None, [table, a, b], api_name="models")
    compare_btn.click(user_errors(lambda x, y: compare(services, x, y)), [a, b], comparison, api_name="compare")
    rollback_btn.click(user_errors(lambda x: rollback(services, x)), [a], [table, status], api_name="rollback")
    return ModelsTab(table, refresh, [table, a, b])
