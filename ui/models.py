"""Models tab: every model version with its held-out metrics as columns and where it came from; compare two on
the same held-out set; roll back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from curation.models import ModelVersion, get_model_version, list_model_versions, list_training_runs
from loop import Services
from ui.common import metric_label, require, say, tr, user_errors

HELD_OUT = "held_out_"  # the prefix of a version's metrics measured on its run's held-out triplets


def _number(value):
    return round(value, 4) if isinstance(value, float) else value


def models_table(services: Services) -> pd.DataFrame:
    """One row per version: active, created, parent, its run, every held-out metric (one column each), path."""
    versions = list_model_versions(services.conn())
    metrics = sorted({k for v in versions for k in v.metrics if k.startswith(HELD_OUT)})
    rows = [[f"v{v.id}", "●" if v.active else "", v.created_at[:19], f"v{v.parent_id}" if v.parent_id else "",
             v.provenance.get("run", ""), *(_number(v.metrics.get(k)) for k in metrics), v.path]
            for v in versions]
    columns = ["id", say("col_active"), say("col_created"), say("col_parent"), say("col_run"),
               *(metric_label(k[len(HELD_OUT):]) for k in metrics), say("col_path")]
    return pd.DataFrame(rows, columns=columns)


def model_choices(services: Services) -> list[tuple[str, int]]:
    return [(f"v{v.id}{say('active_suffix') if v.active else ''}", v.id) for v in list_model_versions(services.conn())]


def held_out_evaluations(services: Services) -> list[tuple[int, dict[int, dict]]]:
    """(run id, {model version: its metrics on that run's held-out triplets}) of every finished run, newest first.

    A run evaluated both its new model and the model it was compared with (the active one when it started)."""
    out = []
    for run in sorted(list_training_runs(services.conn()), key=lambda r: -r.id):
        evaluation = run.metrics.get("evaluation") or {}
        compared = (run.metrics.get("promotion") or {}).get("compared_with")
        scored = {}
        if run.model_version_id is not None and evaluation.get("new"):
            scored[run.model_version_id] = evaluation["new"]
        if compared is not None and evaluation.get("active"):
            scored[int(compared)] = evaluation["active"]
        if scored:
            out.append((run.id, scored))
    return out


def compare(services: Services, a: int, b: int) -> tuple[pd.DataFrame, str]:
    """One row per held-out metric, the two versions side by side, measured on the same held-out set: the
    latest run that evaluated both. Without one, each version's latest evaluation, and the note says so."""
    versions: list[ModelVersion | None] = [get_model_version(services.conn(), int(x)) if x is not None else None
                                           for x in (a, b)]
    if any(v is None for v in versions):
        raise ValueError(say("err_choose_two", a=a, b=b))
    ids = [v.id for v in versions]
    evaluations = held_out_evaluations(services)
    shared = next(((run, scored) for run, scored in evaluations if all(i in scored for i in ids)), None)
    if shared is not None:
        run, scored = shared
        numbers, note = [scored[i] for i in ids], say("compare_same_set", run=run)
    else:
        latest = [next(((run, scored[i]) for run, scored in evaluations if i in scored), (None, {})) for i in ids]
        numbers = [m for _, m in latest]
        runs = ", ".join(f"v{i}: {say('col_run')} {run}" if run else f"v{i}: —" for i, (run, _) in zip(ids, latest))
        note = say("compare_different_sets", runs=runs)
    names = sorted(set(numbers[0]) | set(numbers[1]))
    frame = pd.DataFrame([[metric_label(n), _number(numbers[0].get(n)), _number(numbers[1].get(n))] for n in names],
                         columns=[say("col_metric"), f"v{ids[0]}", f"v{ids[1]}"])
    return frame, note


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
        # versions come and go while the page is open: any id is taken, and compare() checks that it exists
        a = gr.Dropdown(model_choices(services), label=t("model_a"), elem_id="compare-a", allow_custom_value=True)
        b = gr.Dropdown(model_choices(services), label=t("model_b"), elem_id="compare-b", allow_custom_value=True)
        compare_btn = gr.Button(t("compare"), elem_id="btn-compare")
        rollback_btn = gr.Button(t("rollback"), variant="stop")
    comparison = gr.Dataframe(label=t("compare"), interactive=False, elem_id="compare-table")
    note = gr.Markdown(elem_id="compare-note")
    status = gr.Markdown()

    def refresh():
        choices = model_choices(services)
        return models_table(services), gr.update(choices=choices), gr.update(choices=choices)

    refresh = user_errors(refresh)
    refresh_btn.click(refresh, None, [table, a, b], api_name="models")
    compare_btn.click(user_errors(lambda x, y: compare(services, x, y)), [a, b], [comparison, note],
                      api_name="compare")
    rollback_btn.click(user_errors(lambda x: rollback(services, x)), [a], [table, status], api_name="rollback")
    return ModelsTab(table, refresh, [table, a, b])
