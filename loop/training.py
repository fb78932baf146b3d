"""Training runs in a separate process, watched by a thread of the app.

:meth:`TrainingJobs.start` writes the run's triplets (from the store, split by image into train and
held-out files), records the run, and starts ``trainer.train`` in a ``spawn`` process
(:mod:`loop.train_worker`). The child
sends progress dicts, log lines and its result through a queue; a monitor thread in the app drains
it, so a run is finished and recorded even when no browser is watching. The UI polls
:meth:`TrainingJobs.snapshot` with a ``gr.Timer``. Cancel sets a ``multiprocessing.Event`` the trainer
checks between steps. When a run ends, the new checkpoint, the model it started from and the active
model are evaluated on the held-out file, and the new one is registered as a model version. With
``auto_promote`` the watcher then makes it active when its primary metric is strictly higher than the
active model's (:mod:`loop.promotion`), and records the decision and both numbers in the version's provenance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curation.models import (
    add_model_version,
    add_training_run,
    get_model_version,
    get_training_run,
    list_model_versions,
    list_training_runs,
    update_training_run,
)
from curation.triplets import TripletFilter, triplet_records
from loop.backbones import resolve_lora_rank
from loop.memory_plan import Plan, available_bytes, checkpoint_shape, dtype_bytes, plan_training, training_need
from loop.promotion import AppliedPromotion, decide_promotion
from loop.train_worker import run_training

if TYPE_CHECKING:
    from loop.services import Services

log = logging.getLogger(__name__)

FINISHED = ("done", "failed", "cancelled", "interrupted")
CANCEL_GRACE_S = 60.0
EVALUATIONS = 10  # held-out evaluations per run (each a point of the accuracy curves)
RUN_OWNED = {"init_checkpoint", "train_file", "val_file", "image_root", "val_image_root", "output_dir", "resume"}


@dataclass(frozen=True)
class TrainForm:
    """What the Train tab asks for. ``lora_rank`` 0 trains the whole backbone (needed for tiny); None lets
    :func:`loop.backbones.lora_default` choose from the model the run starts from."""

    loss: str = "infonce+focal_triplet"
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 1e-4
    lora_rank: int | None = None
    human_only: bool = False
    val_split: float = 0.2
    batch_size: int = 8
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    evaluations: int = EVALUATIONS  # held-out evaluations during the run (points of the accuracy curves)
    max_held_out: int | None = None  # at most this many held-out triplets (None: the whole split)
    max_pixels: int | None = None
    base_checkpoint: str | None = None  # None: the active model
    auto_promote: bool = True  # make the new model active when it is better on the held-out set
    recipe: dict = field(default_factory=dict)  # further TrainConfig fields (a recipe's: seed, head_lr, augment ...)

    def __post_init__(self) -> None:
        if owned := sorted(set(self.recipe) & RUN_OWNED):
            raise ValueError(f"training recipe sets {owned}: the run chooses these itself")
        if not 0.0 < self.val_split < 1.0:
            raise ValueError(f"validation share must lie strictly between 0 and 1, got {self.val_split}")
        for name in ("batch_size", "grad_accum", "evaluations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_held_out is not None and self.max_held_out < 1:
            raise ValueError(f"max_held_out must be at least 1 triplet, got {self.max_held_out}")
        if self.lora_rank is not None and self.lora_rank < 0:
            raise ValueError(f"LoRA rank must be 0 or more, got {self.lora_rank}")


@dataclass
class Job:
    run_id: int
    parent_model_id: int
    active_model_id: int  # the active model when the run started: the one the new model is compared with
    auto_promote: bool
    process: mp.process.BaseProcess
    stop_event: object
    status: str = "running"
    progress: list[dict] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    model_version_id: int | None = None
    promotion: AppliedPromotion | None = None  # once the watcher applied the decision
    started: float = field(default_factory=time.time)
    lifeline: object = None  # the app's end of the pipe the child watches; closed when the run ends
    finished: float | None = None  # when the run ended: its time stops counting

    def elapsed(self) -> float:
        return (self.finished if self.finished is not None else time.time()) - self.started


@dataclass(frozen=True)
class RunSnapshot:
    """A training run as the UI shows it (a copy: the watcher goes on changing the job)."""

    run_id: int
    status: str  # running | done | failed | cancelled
    progress: list[dict]  # the trainer's progress dicts (step, loss terms, val/ metrics)
    log: list[str]  # the last 200 log lines
    result: dict  # checkpoint, metrics, evaluation ({"primary_metric", "new", "active"}) or error
    model_version_id: int | None
    promotion: AppliedPromotion | None
    elapsed: float  # seconds the run took, or has taken so far


def split_by_image(records: list[dict], val_share: float) -> tuple[list[dict], list[dict]]:
    """Deterministic split by image name (all triplets of an image land on one side)."""
    def bucket(name: str) -> float:
        return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = [r for r in records if bucket(r["image_name"]) >= val_share]
    val = [r for r in records if bucket(r["image_name"]) < val_share]
    if not val and len(train) > 1:  # tiny stores: hold out at least one image
        first = train[0]["image_name"]
        val = [r for r in train if r["image_name"] == first]
        train = [r for r in train if r["image_name"] != first]
    return train, val


CAPTION_TOKENS = 96  # tokens of a triplet's captions (positive and negative, with the prompt) for the plan


def plan_run(services: Services, form: TrainForm, parent_path: str, lora_rank: int, train: list[dict]) -> Plan:
    """The memory plan of a run from ``parent_path``: its need (frozen base, trainable state, activations
    of one micro-batch at the first training image's size) against the device beside the app's scorer."""
    from PIL import Image

    shape = checkpoint_shape(parent_path)
    available, scorer = available_bytes(services.config.device), services.scorer_bytes()
    if shape is None:
        return Plan(True, False, 0, scorer, available, "the backbone's size is unknown (not a local folder)")
    with Image.open(services.image_path(train[0]["image_name"])) as image:
        pixels = image.width * image.height
    need = training_need(shape, dtype_bytes(services.config.dtype, services.config.device, shape.hidden),
                         lora_rank, form.batch_size, min(pixels, form.max_pixels or pixels), CAPTION_TOKENS,
                         form.gradient_checkpointing)
    plan = plan_training(need.total(), scorer, available)
    log.info("training need: %s", need.describe())
    return plan


class TrainingJobs:
    """The app's training runs: at most one runs at a time; finished ones stay readable."""

    def __init__(self, services: Services):
        self.services = services
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # held from the check that no run is running until the new one is listed
        self.jobs: dict[int, Job] = {}
        self.listeners: list[Callable[[RunSnapshot], None]] = []  # told of every run that ends (watcher thread)
        self._context = mp.get_context("spawn")

    def running(self) -> Job | None:
        with self._lock:
            return next((job for job in self.jobs.values() if job.status == "running"), None)

    def start(self, form: TrainForm) -> int:
        """Write the run's triplets, record the run and start the training process; return the run id."""
        with self._start_lock:
            running = self.running()
            if running is not None:
                raise ValueError(f"training run {running.run_id} is still running; cancel it or wait")
            return self._start(form)

    def _start(self, form: TrainForm) -> int:
        conn = self.services.conn()
        _, active_id = self.services.scorer()
        active_path = get_model_version(conn, active_id).path
        parent_path = form.base_checkpoint or active_path
        lora_rank = resolve_lora_rank(form.lora_rank, parent_path)
        records = triplet_records(conn, TripletFilter(human_only=form.human_only))
        train, val = split_by_image(records, form.val_split)
        val = val[:form.max_held_out] if form.max_held_out else val
        if not train or not val:
            raise ValueError(f"{len(records)} triplets in the store ({'human only' if form.human_only else 'all'})"
                             " are too few to train and hold out; annotate or import more")
        plan = plan_run(self.services, form, parent_path, lora_rank, train)
        if not plan.fits:
            raise ValueError(f"this run cannot train on this machine: {plan.describe()}")
        parent_id = next((v.id for v in list_model_versions(conn) if v.path == parent_path), active_id)
        run_id = add_training_run(conn, {"form": {**form.__dict__, "lora_rank": lora_rank},
                                         "parent_model": parent_id, "active_model": active_id})
        run_dir = self.services.config.runs_dir / f"run-{run_id:04d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
        (run_dir / "val.json").write_text(json.dumps(val, ensure_ascii=False), encoding="utf-8")
        config = self._train_config(form, lora_rank, parent_path, run_dir, len(train))
        update_training_run(conn, run_id, "running", {"train_triplets": len(train), "val_triplets": len(val),
                                                      "config": config})
        events, stop_event = self._context.Queue(), self._context.Event()
        eval_spec = {"val_file": str(run_dir / "val.json"), "image_root": str(self.services.image_root),
                     "parent": parent_path, "active": active_path, "threads": self.services.config.train_threads}
        log.info("training run %d memory plan: %s", run_id, plan.describe())
        if plan.release_scorer:
            self.services.release_scorer(f"training run {run_id} trains")
        lifeline, keep = self._context.Pipe(duplex=False)  # the child's end reaches EOF when the app is gone
        process = self._context.Process(target=run_training, name=f"train-run-{run_id}", daemon=True,
                                        args=(config, eval_spec, events, stop_event, os.getpid(), lifeline))
        process.start()
        lifeline.close()
        update_training_run(conn, run_id, "running", {"process": process_identity(process.pid)})
        job = Job(run_id=run_id, parent_model_id=parent_id, active_model_id=active_id,
                  auto_promote=form.auto_promote, process=process, stop_event=stop_event, lifeline=keep)
        with self._lock:
            self.jobs[run_id] = job
        threading.Thread(target=self._monitor, args=(job, events), name=f"monitor-run-{run_id}", daemon=True).start()
        log.info("training run %d started (pid %d): %d train / %d held-out triplets",
                 run_id, process.pid, len(train), len(val))
        return run_id

    def _train_config(self, form: TrainForm, lora_rank: int, parent_path: str, run_dir: Path, n_train: int) -> dict:
        """The trainer's config; held-out evaluation about EVALUATIONS times per run, for the accuracy curves."""
        from trainer.config import TrainConfig  # the trainer's package loads accelerate: only when a run starts

        steps = form.max_steps or math.ceil(form.epochs * math.ceil(n_train / (form.batch_size * form.grad_accum)))

        config = TrainConfig.from_dict(dict(
            init_checkpoint=parent_path, train_backbone="lora" if lora_rank > 0 else "full",
            lora_r=max(lora_rank, 1), loss=form.loss, epochs=form.epochs, max_steps=form.max_steps or None,
            lr=form.lr, batch_size=form.batch_size, grad_accum=form.grad_accum,
            gradient_checkpointing=form.gradient_checkpointing, max_pixels=form.max_pixels,
            dtype=self.services.config.dtype,
            train_file=str(run_dir / "train.json"), val_file=str(run_dir / "val.json"),
            image_root=str(self.services.image_root), output_dir=str(run_dir / "out"), log_every=1,
            eval_every=max(1, steps // form.evaluations),
            on_invalid="skip",
        ) | form.recipe)
        return config.to_dict()

    def _monitor(self, job: Job, events) -> None:
        """Drain the child's queue until it reports a result or dies; then record the outcome."""
        outcome: dict | None = None
        while outcome is None:
            try:
                event = events.get(timeout=0.5)
            except queue_module.Empty:
                if job.process.is_alive():
                    continue
                try:  # its last events may have landed after the timeout
                    event = events.get_nowait()
                except queue_module.Empty:
                    outcome = {"event": "error", "message": f"training process exited with {job.process.exitcode}"}
                    continue
            kind = event.pop("event", "")
            with self._lock:
                if kind == "progress":
                    job.progress.append(event)
                elif kind == "log":
                    job.log.append(event["message"])
                else:
                    outcome = {"event": kind, **event}
        job.process.join(timeout=30)
        if job.lifeline is not None:
            job.lifeline.close()
        try:
            self._finish(job, outcome)
        except Exception:  # noqa: BLE001 - the run must not stay "running" and block every later one
            log.exception("training run %d: recording its outcome failed", job.run_id)
            self._fail(job, traceback.format_exc())
        try:
            for listener in list(self.listeners):
                listener(self.snapshot(job.run_id))
        except Exception:  # noqa: BLE001 - a listener's failure must not hide the run's outcome
            log.exception("training run %d: a listener failed", job.run_id)
        finally:
            self._reload_after(job)
            self.services.close_conn()  # this thread's connection to the store

    def _reload_after(self, job: Job) -> None:
        """The app's scorer, released for the run and not replaced by a promotion, is loaded again."""
        try:
            self.services.reload_scorer()
        except Exception:  # noqa: BLE001 - logged; the app keeps serving stored scores
            log.exception("training run %d: loading the app's scorer again failed", job.run_id)

    def _fail(self, job: Job, error: str) -> None:
        """Mark the job and the store's run failed, with the traceback."""
        with self._lock:
            job.log.append(error)
            job.result = {"error": error}
            job.status, job.finished = "failed", time.time()
        update_training_run(self.services.conn(), job.run_id, "failed", {"error": error[-2000:]})

    def _finish(self, job: Job, outcome: dict) -> None:
        conn = self.services.conn()
        if outcome["event"] == "error":
            self._fail(job, outcome["message"])
            log.info("training run %d failed", job.run_id)
            return
        if outcome.get("cancelled"):
            status, job.result = "cancelled", outcome
            update_training_run(conn, job.run_id, status, {"train": outcome.get("metrics", {})})
        else:
            status, job.result = "done", outcome
            self._register(job, outcome)
        with self._lock:
            job.status, job.finished = status, time.time()
        log.info("training run %d %s", job.run_id, status)

    def _register(self, job: Job, outcome: dict) -> None:
        """Record a finished run's model version, and promote it when the decision says so."""
        conn = self.services.conn()
        evaluation = outcome["evaluation"]
        decision = decide_promotion(evaluation, job.auto_promote, job.active_model_id, self.services.scorer()[1])
        metrics = {**_flat(outcome.get("metrics", {})), **{f"held_out_{k}": v for k, v in evaluation["new"].items()}}
        job.model_version_id = add_model_version(
            conn, outcome["checkpoint"], metrics=metrics, parent=job.parent_model_id,
            provenance={"run": job.run_id, "config": get_training_run(conn, job.run_id).config,
                        "promotion": decision.record()})
        promotion = AppliedPromotion(decision)
        if decision.promote:
            try:
                self.services.activate(job.model_version_id)
                promotion = AppliedPromotion(decision, promoted=True)
            except Exception as error:  # noqa: BLE001 - the run stays done; the status line and the run say why
                log.exception("training run %d: automatic promotion failed", job.run_id)
                promotion = AppliedPromotion(decision, error=f"{type(error).__name__}: {error}")
        log.info("training run %d: %s %s new %s vs active %s → %s", job.run_id, decision.reason, decision.metric,
                 decision.new, decision.active, "promoted" if promotion.promoted else "not promoted")
        job.promotion = promotion
        update_training_run(conn, job.run_id, "done", {"train": outcome.get("metrics", {}), "evaluation": evaluation,
                                                       "promotion": promotion.record()},
                            model_version=job.model_version_id)

    def cancel(self, run_id: int | None = None) -> bool:
        """Ask the running (or given) run to stop; it saves a checkpoint and ends. Returns whether one ran."""
        job = self.jobs.get(run_id) if run_id is not None else self.running()
        if job is None or job.status != "running":
            return False
        job.stop_event.set()
        threading.Thread(target=self._kill_if_stuck, args=(job,), daemon=True).start()
        return True

    def _kill_if_stuck(self, job: Job) -> None:
        job.process.join(timeout=CANCEL_GRACE_S)
        if job.process.is_alive():
            log.warning("training run %d ignored cancel for %.0f s; terminating it", job.run_id, CANCEL_GRACE_S)
            job.process.terminate()

    def cancel_all(self) -> None:
        for job in list(self.jobs.values()):
            if job.status == "running":
                job.stop_event.set()
                job.process.join(timeout=10)
                if job.process.is_alive():
                    job.process.terminate()

    def promote(self, run_id: int) -> int:
        """Make a finished run's model the active one; return its model version id."""
        run = get_training_run(self.services.conn(), run_id)
        if run.status != "done" or run.model_version_id is None:
            raise ValueError(f"training run {run_id} is {run.status}; only a finished run can be promoted")
        self.services.activate(run.model_version_id)
        return run.model_version_id

    def recover_interrupted(self) -> list[int]:
        """At start: runs the store still lists as queued or running were cut off when the app ended.
        Mark them ``interrupted`` and end their process if it still runs (matched by pid and start time,
        so a recycled pid is never killed). Returns their ids."""
        conn = self.services.conn()
        found = [run for run in list_training_runs(conn) if run.status in ("queued", "running")]
        for run in found:
            ended = end_process(run.metrics.get("process"))
            update_training_run(conn, run.id, "interrupted", {"interrupted": {"process_ended": ended}})
            log.warning("training run %d was %s when the app ended: marked interrupted%s", run.id, run.status,
                        " (its process was still running and is ended)" if ended else "")
        return [run.id for run in found]

    def snapshot(self, run_id: int | None = None) -> RunSnapshot | None:
        """A copy of a run's state for the UI (the latest run when ``run_id`` is None; a run of an earlier
        start of the app as the store has it)."""
        with self._lock:
            if not self.jobs:
                return self._stored_snapshot(run_id)
            job = self.jobs[run_id] if run_id is not None else self.jobs[max(self.jobs)]
            return RunSnapshot(job.run_id, job.status, list(job.progress), list(job.log[-200:]), dict(job.result),
                               job.model_version_id, job.promotion, job.elapsed())


    def _stored_snapshot(self, run_id: int | None) -> RunSnapshot | None:
        runs = list_training_runs(self.services.conn())
        run = next((r for r in runs if r.id == run_id), None) if run_id is not None else (runs[-1] if runs else None)
        if run is None:
            return None
        result = {key: run.metrics[key] for key in ("evaluation", "error") if key in run.metrics}
        return RunSnapshot(run.id, run.status, [], [], result, run.model_version_id, None, 0.0)


def process_identity(pid: int) -> dict:
    """A process as the store records it: pid and start time (a pid alone may be reused by another process)."""
    import psutil

    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


def end_process(identity: dict | None, grace_s: float = 5.0) -> bool:
    """Terminate (then kill) the process ``identity`` names if it still runs as that same process."""
    import psutil

    if not identity:
        return False
    try:
        process = psutil.Process(identity["pid"])
        if abs(process.create_time() - identity["create_time"]) > 0.01:
            return False  # the pid now belongs to another process
        process.terminate()
        try:
            process.wait(grace_s)
        except psutil.TimeoutExpired:
            process.kill()
        return True
    except psutil.NoSuchProcess:
        return False


def _flat(metrics: dict, prefix: str = "") -> dict:
    """Nested metric dicts → one level of numbers (``val/mean_accuracy``)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out
