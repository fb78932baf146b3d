"""Train tab: a form, a background run with live progress, loss and accuracy plots, a log, Cancel and Promote
(by hand, or automatically when the new model is better on the held-out set)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from curation.models import get_model_version, list_model_versions
from curation.triplets import TripletFilter, triplet_records
from loop import AppliedPromotion, RunSnapshot, Services, TrainForm, lora_default
from loop.run_settings import default_settings, estimate_time
from ui.common import localized, metric_label, require, say, tr, user_errors

LOSSES = ["infonce+focal_triplet", "infonce", "siglip", "focal_triplet", "siglip+focal_triplet"]
ACTIVE = "active model"
PALETTE = ["#e4572e", "#2e86ab", "#76b041", "#a23b72", "#f3a712", "#5c6bc0", "#17becf", "#8c564b"]
POLL_SECONDS = 1.0


def start_training(services: Services, base: str | None, loss: str, epochs: float, max_steps: float | None,
                   lr: float, lora_rank: float, triplets: str, val_split: float, auto_promote: bool = True,
                   batch_size: float | None = None, grad_accum: float | None = None,
                   gradient_checkpointing: bool | None = None, evaluations: float | None = None,
                   max_held_out: float | None = None, max_pixels: int | None = None) -> str:
    """Start a run in the background; return a status line. Unset run settings take the model's defaults."""
    require(services, "train")
    base_path = _base_path(services, base)
    defaults = default_settings(services, base_path or _active_path(services))
    form = TrainForm(loss=loss, epochs=float(epochs), max_steps=int(max_steps) if max_steps else None,
                     lr=float(lr), lora_rank=None if lora_rank in (None, "") else int(lora_rank),
                     human_only=triplets == "human",
                     val_split=float(val_split), max_pixels=max_pixels or services.config.max_pixels,
                     base_checkpoint=base_path, auto_promote=bool(auto_promote),
                     batch_size=int(batch_size or defaults.batch_size),
                     grad_accum=int(grad_accum or defaults.grad_accum),
                     gradient_checkpointing=defaults.gradient_checkpointing if gradient_checkpointing is None
                     else bool(gradient_checkpointing), evaluations=int(evaluations or defaults.evaluations),
                     max_held_out=int(max_held_out) if max_held_out else None)
    run_id = services.training.start(form)
    return say("train_started", run=run_id)


def base_labels(choices: list[str]) -> list[tuple]:
    """The Start-from choices as the dropdown shows them: the active model's label in the browser's language."""
    return [(tr("active_model_choice") if c == ACTIVE else c, c) for c in choices]


def _active_path(services: Services) -> str:
    return get_model_version(services.conn(), services.scorer()[1]).path


def _base_path(services: Services, base: str | None) -> str | None:
    """The checkpoint of a "Start from" choice (None: the active model)."""
    if base in (None, "", ACTIVE):
        return None
    versions = {f"v{v.id}": v.path for v in list_model_versions(services.conn())}
    if base not in versions:
        raise ValueError(f"unknown model version {base!r}")
    return versions[base]


def settings_fields(services: Services, base: str | None = ACTIVE) -> tuple[dict, ...]:
    """(batch, accumulation, checkpointing, evaluations, held-out cap) updates: the defaults for ``base``."""
    settings = default_settings(services, _base_path(services, base) or _active_path(services))
    return (gr.update(value=settings.batch_size), gr.update(value=settings.grad_accum),
            gr.update(value=settings.gradient_checkpointing), gr.update(value=settings.evaluations),
            gr.update(value=settings.max_held_out or 0))


def estimate_text(services: Services, base: str | None, epochs: float, max_steps: float | None, val_split: float,
                  batch_size: float, grad_accum: float, evaluations: float, max_held_out: float | None) -> str:
    """The run's time per step and in total, before it starts, with what the figures are based on."""
    path = _base_path(services, base) or _active_path(services)
    n = len(triplet_records(services.conn(), TripletFilter()))
    batch, accum = max(1, int(batch_size or 1)), max(1, int(grad_accum or 1))
    steps = int(max_steps) if max_steps else max(1, math.ceil(float(epochs or 1) * n * (1 - val_split) /
                                                               (batch * accum)))
    held_out = int(n * val_split) if not max_held_out else min(int(max_held_out), int(n * val_split))
    estimate = estimate_time(services, path, batch, accum, steps, int(evaluations or 1), max(1, held_out))
    settings = default_settings(services, path)
    return say("estimate", settings=settings.why, per_step=estimate.seconds_per_step,
               total=_duration(estimate.total_seconds), steps=steps, evals=int(evaluations or 1) + 1,
               held_out=max(1, held_out), basis=estimate.basis)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def base_choices(services: Services) -> list[str]:
    """The "Start from" choices: the active model, then every model version."""
    return [ACTIVE, *[f"v{v.id}" for v in list_model_versions(services.conn())]]


def lora_field(services: Services, base: str | None = ACTIVE) -> dict:
    """Value and explanation of the LoRA-rank box for a run starting from ``base`` (``loop.backbones``)."""
    conn = services.conn()
    if base in (None, "", ACTIVE):
        model_id = services.scorer()[1]
    elif base.startswith("v") and base[1:].isdigit():
        model_id = int(base[1:])
    else:
        raise ValueError(f"unknown model version {base!r}")
    version = get_model_version(conn, model_id)
    if version is None:
        raise ValueError(f"unknown model version {base!r}")
    default = lora_default(version.path)
    return {"value": default.rank, "info": say(f"lora_default_{default.reason}", model=f"v{model_id}",
                                               rank=default.rank)}


def refresh_form(services: Services, base: str | None = ACTIVE) -> tuple[dict, dict]:
    """(Start-from dropdown, LoRA-rank box) as the store has them now: new versions, the active model's default."""
    choices = base_choices(services)
    return (gr.update(choices=base_labels(choices), value=base if base in choices else ACTIVE),
            gr.update(**lora_field(services, base if base in choices else ACTIVE)))


def progress_frames(progress: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long-format (step, value, series) frames of the loss terms and of the accuracies."""
    loss_rows, acc_rows = [], []
    for p in progress:
        step = p.get("step")
        if step is None:
            continue
        for key, value in p.items():
            if not isinstance(value, (int, float)) or key in ("step", "max_steps", "total_steps", "epoch"):
                continue
            if "loss" in key:
                loss_rows.append((step, float(value), metric_label(key)))
            elif "accuracy" in key:
                acc_rows.append((step, float(value), metric_label(key)))
    return _frame(loss_rows), _frame(acc_rows)


def _frame(rows: list[tuple[int, float, str]]) -> pd.DataFrame:
    """Typed even when empty, so the plots get a quantitative y axis from the start."""
    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    return frame.astype({"step": "int64", "value": "float64", "series": object})


def plot_update(frame: pd.DataFrame, shown: dict) -> tuple[dict, dict]:
    """The plot's new data, and its colours once the browser holds every series: (update, new ``shown``).

    The browser builds a plot's colour scale only when a setting of the plot changes, from the data it holds
    at that moment; data updates alone keep the first (empty) scale and the lines get no colour. So a new set
    of series is sent as data first, and its colours in the next poll, which rebuilds the scale from that data.
    ``shown`` is what this browser has: {"data": series in its data, "colours": series in its colour map}.
    """
    names = sorted(frame["series"].unique())
    if names != shown["data"] or names == shown["colours"]:
        return gr.update(value=frame), {"data": names, "colours": shown["colours"]}
    colours = {name: PALETTE[n % len(PALETTE)] for n, name in enumerate(names)}
    return (gr.update(value=frame, color_map=colours, x_title=say("axis_step"), y_title=say("axis_value"),
                      color_title=say("axis_series")), {"data": names, "colours": names})


def promotion_text(promotion: AppliedPromotion, model_id: int | None) -> str:
    """The status line of a decision as the watcher applied it."""
    if promotion.error:
        return say("promotion_failed", error=promotion.error)
    decision = promotion.decision
    values = {"metric": decision.metric, "new": decision.new, "active": decision.active,
              "compared": decision.compared_with, "current": decision.current_active, "model": model_id}
    if promotion.promoted:
        return say("auto_promoted", **values)
    return say(f"not_promoted_{decision.reason}", **values)


def progress_fraction(snapshot: RunSnapshot | None) -> tuple[float, str]:
    """(fraction done, status line); a finished run's line says whether its model was promoted and why."""
    if snapshot is None:
        return 0.0, say("no_training_run")
    last = next((p for p in reversed(snapshot.progress) if "step" in p), {})
    total = last.get("max_steps") or last.get("total_steps")
    step = last.get("step", 0)
    fraction = 1.0 if snapshot.status == "done" else (step / total if total else 0.0)
    line = say("run_status", run=snapshot.run_id, status=say(f"status_{snapshot.status}"), step=step,
               total=f" / {total}" if total else "", elapsed=snapshot.elapsed)
    if snapshot.promotion is not None:
        line += "\n\n" + promotion_text(snapshot.promotion, snapshot.model_version_id)
    return fraction, line


def evaluation_table(snapshot: RunSnapshot | None) -> pd.DataFrame:
    """The new model beside the active one on the held-out triplets."""
    evaluation = snapshot.result.get("evaluation") if snapshot is not None else None
    if not evaluation:
        return pd.DataFrame(columns=[say("col_metric"), say("col_active_model"), say("col_new_model")])
    names = sorted(set(evaluation["new"]) | set(evaluation["active"]))
    primary = evaluation.get("primary_metric")

    def shown(value):
        return round(value, 4) if isinstance(value, float) else value

    return pd.DataFrame([[metric_label(n) + (" *" if n == primary else ""), shown(evaluation["active"].get(n)),
                          shown(evaluation["new"].get(n))] for n in names],
                        columns=[say("col_metric"), say("col_active_model"), say("col_new_model")])


def poll(services: Services, shown: dict | None = None) -> tuple:
    """(progress %, status, loss plot, accuracy plot, log, evaluation, promote button, Start-from dropdown,
    ``shown``, the timer: on while a run runs); the dropdown gets new choices when the model versions changed
    (a run ended)."""
    shown = shown or empty_shown()
    choices = base_choices(services)
    bases = gr.update(choices=base_labels(choices)) if choices != shown.get("bases") else gr.skip()
    snapshot = services.training.snapshot()
    fraction, status = progress_fraction(snapshot)
    losses, accuracies = progress_frames(snapshot.progress if snapshot else [])
    loss_plot, shown_loss = plot_update(losses, shown["loss"])
    acc_plot, shown_acc = plot_update(accuracies, shown["accuracy"])
    if not shown.get("titled"):  # the axis titles in the browser's language, once
        for plot in (loss_plot, acc_plot):
            plot.update(x_title=say("axis_step"), y_title=say("axis_value"), color_title=say("axis_series"))
    log_text = "\n".join(snapshot.log[-60:]) if snapshot else ""
    can_promote = bool(snapshot and snapshot.status == "done"
                       and snapshot.model_version_id != services.scorer()[1])  # not when already active
    # quiet when idle: the timer polls while a run runs and until the plots got their colours (one more poll)
    settling = any(seen["data"] != seen["colours"] for seen in (shown_loss, shown_acc))
    active = bool(snapshot and snapshot.status == "running") or settling
    return (round(100 * fraction, 1), status, loss_plot, acc_plot, log_text, evaluation_table(snapshot),
            gr.update(interactive=can_promote), bases,
            {"loss": shown_loss, "accuracy": shown_acc, "bases": choices, "titled": True},
            gr.Timer(active=active))


def empty_shown() -> dict:
    """What a new browser holds: no plotted series, no Start-from choices known (the first poll sends them)."""
    return {"loss": {"data": [], "colours": []}, "accuracy": {"data": [], "colours": []}, "bases": None,
            "titled": False}


def cancel_training(services: Services) -> str:
    require(services, "cancel_training")
    return say("cancel_requested" if services.training.cancel() else "no_run_running")


def promote_latest(services: Services) -> str:
    require(services, "promote")
    snapshot = services.training.snapshot()
    if snapshot is None:
        raise ValueError(say("err_no_run_to_promote"))
    model_id = services.training.promote(snapshot.run_id)
    return say("promoted", run=snapshot.run_id, model=model_id)


@dataclass(frozen=True)
class TrainTab:
    """The Train tab's parts the app wires: ``refresh`` (Start-from choices, LoRA box) when the tab is opened."""

    timer: gr.Timer
    message: gr.Markdown
    promote: gr.Button
    refresh: Callable
    refresh_inputs: list
    refresh_outputs: list


def build_train_tab(services: Services) -> TrainTab:
    t = tr
    lora = lora_field(services)
    with gr.Row():
        with gr.Column(scale=1):
            base = gr.Dropdown(base_labels(base_choices(services)), value=ACTIVE, label=t("base_model"))
            loss = gr.Dropdown(LOSSES, value=LOSSES[0], label=t("loss"))
            epochs = gr.Number(1.0, label=t("epochs"), minimum=0.01)
            max_steps = gr.Number(20, label=t("max_steps"), precision=0, minimum=0, elem_id="train-max-steps")
            lr = gr.Number(1e-4, label=t("lr"), minimum=0)
            lora_rank = gr.Number(lora["value"], label=t("lora_rank"), info=lora["info"], precision=0, minimum=0,
                                  elem_id="train-lora-rank")
            triplets = gr.Radio([(t("triplets_all"), "all"), (t("triplets_human"), "human")], value="all",
                                label=t("which_triplets"))
            val_split = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label=t("val_split"))
            defaults = default_settings(services, _active_path(services))
            with gr.Row():
                batch_size = gr.Number(defaults.batch_size, label=t("batch_size"), precision=0, minimum=1,
                                       elem_id="train-batch-size")
                grad_accum = gr.Number(defaults.grad_accum, label=t("grad_accum"), precision=0, minimum=1,
                                       elem_id="train-grad-accum")
            with gr.Row():
                evaluations = gr.Number(defaults.evaluations, label=t("evaluations"), precision=0, minimum=1,
                                        elem_id="train-evaluations")
                max_held_out = gr.Number(defaults.max_held_out or 0, label=t("max_held_out"), precision=0,
                                         minimum=0, elem_id="train-max-held-out")
            checkpointing = gr.Checkbox(defaults.gradient_checkpointing, label=t("grad_checkpointing"),
                                        elem_id="train-checkpointing")
            auto_promote = gr.Checkbox(True, label=t("auto_promote"), info=t("auto_promote_info"),
                                       elem_id="train-auto-promote")
            estimate = gr.Markdown(elem_id="train-estimate")
            with gr.Row():
                start_btn = gr.Button(t("start"), variant="primary", elem_id="btn-train-start")
                cancel_btn = gr.Button(t("cancel"), variant="stop", elem_id="btn-train-cancel")
                promote_btn = gr.Button(t("promote"), interactive=False, variant="primary",
                                        elem_id="btn-train-promote")
            message = gr.Markdown(elem_id="train-message")
        with gr.Column(scale=2):
            percent = gr.Slider(0, 100, value=0, label=t("progress"), interactive=False, elem_id="train-progress")
            status = gr.Markdown(elem_id="train-status")
            with gr.Row():
                loss_plot = gr.LinePlot(_frame([]), x="step", y="value", color="series", label=t("plot_loss"),
                                        height=220, elem_id="train-loss-plot")
                acc_plot = gr.LinePlot(_frame([]), x="step", y="value", color="series", label=t("plot_accuracy"),
                                       height=220, elem_id="train-accuracy-plot")
            evaluation = gr.Dataframe(label=t("evaluation"), interactive=False, elem_id="train-evaluation")
            log_box = gr.Textbox(label=t("log"), lines=8, max_lines=8, interactive=False, autoscroll=True)
    timer = gr.Timer(POLL_SECONDS, active=False)  # switched on by Start and by opening the tab
    shown = gr.State(empty_shown())  # which series this browser's plots hold and colour
    poll_outputs = [percent, status, loss_plot, acc_plot, log_box, evaluation, promote_btn, base, shown, timer]
    timer.tick(localized(lambda seen: poll(services, seen)), shown, poll_outputs, api_name="train_poll",
               show_progress="hidden", concurrency_limit=None)
    start_btn.click(user_errors(lambda *a: start_training(services, *a)),
                    [base, loss, epochs, max_steps, lr, lora_rank, triplets, val_split, auto_promote, batch_size,
                     grad_accum, checkpointing, evaluations, max_held_out], message,
                    api_name="train_start").success(lambda: gr.Timer(active=True), None, timer, api_name=False)
    estimate_inputs = [base, epochs, max_steps, val_split, batch_size, grad_accum, evaluations, max_held_out]
    for field in estimate_inputs:
        field.change(user_errors(lambda *a: estimate_text(services, *a)), estimate_inputs, estimate,
                     api_name=False, show_progress="hidden")
    cancel_btn.click(user_errors(lambda: cancel_training(services)), None, message, api_name="train_cancel")
    promote_btn.click(user_errors(lambda: promote_latest(services)), None, message, api_name="train_promote")
    base.input(user_errors(lambda b: gr.update(**lora_field(services, b))), base, lora_rank, api_name=False)
    base.input(user_errors(lambda b: settings_fields(services, b)), base,
               [batch_size, grad_accum, checkpointing, evaluations, max_held_out], api_name=False)
    return TrainTab(timer, message, promote_btn, localized(lambda b: refresh_form(services, b)), [base],
                    [base, lora_rank])
