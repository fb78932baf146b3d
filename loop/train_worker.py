"""The training process of a run (``spawn``): train, with the held-out evaluation of the same loaded model.

:func:`run_training` is the target of the process :class:`loop.training.TrainingJobs` starts. It sends
``{"event": "progress" | "log" | "done" | "error", ...}`` dicts through a queue; the app's watcher thread
drains it. Nothing here touches the store: the app records what the process reports.

One model in memory: the trainer evaluates the model it starts from before step 1 (``eval_at_start``: the
parent's held-out metrics, step 0 of the curves) and the new one during the run; the new model's figures
are those of the checkpoint the run returns (its ``metrics.json``). Only an active model other than the
parent is loaded, after training, once the training model is released.

The process never outlives the app: :func:`watch_parent` ends it as soon as the app is gone, noticed
either way, for every start method: the end of a pipe only the app writes to reaches EOF, or the
process's parent changes (it is re-parented when the app dies, even by SIGKILL).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import traceback
from pathlib import Path


def child_threads(requested: int | None = None, cores: int | None = None) -> int:
    """The training child's torch threads: ``requested``, else every core but one (the app's annotators')."""
    if requested is not None and requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) - 1)

PARENT_POLL_S = 0.5
ORPHAN_EXIT_CODE = 75


def watch_parent(parent_pid: int, lifeline=None, poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """A daemon thread that ends this process (exit code :data:`ORPHAN_EXIT_CODE`) once the app is gone: its
    parent process changes (under ``forkserver`` the parent is the fork server, which ends with the app), or
    ``lifeline`` reaches EOF (the app's end is closed by the kernel when it dies; under ``fork`` the child
    inherits a copy of that end, so the parent check covers it)."""
    first_parent = os.getppid()

    def parent_gone() -> bool:
        if os.getppid() != first_parent:
            return True
        if lifeline is None:
            return False
        try:
            if lifeline.poll(poll_s):
                lifeline.recv()  # the parent never sends: data or EOF both mean the pipe was closed
                return True
        except (EOFError, OSError):
            return True
        return False

    def watch() -> None:
        while True:
            if parent_gone():
                logging.getLogger(__name__).error("the app (pid %d) is gone: training process exits", parent_pid)
                os._exit(ORPHAN_EXIT_CODE)
            if lifeline is None:
                threading.Event().wait(poll_s)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


def run_training(config: dict, eval_spec: dict, events, stop_event, parent_pid: int | None = None,
                 lifeline=None) -> None:
    """Child process: train (evaluating the parent at step 0), then report the new model's held-out figures.

    ``parent_pid`` (the app) and ``lifeline`` (the read end of a pipe the app keeps open) let the
    process notice the app is gone and exit (:func:`watch_parent`)."""
    if parent_pid is not None:
        watch_parent(parent_pid, lifeline)
    import torch

    torch.set_num_threads(child_threads(eval_spec.get("threads")))

    class QueueHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.put({"event": "log", "message": self.format(record)})

    handler = QueueHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        import trainer
        from trainer.config import TrainConfig
        from trainer.evaluate import TripletEvaluator

        logging.getLogger(__name__).info("training process: %d threads", torch.get_num_threads())
        parent: dict[str, float] = {}

        def progress(row: dict) -> None:
            if row.get("step") == 0:
                parent.update({k[4:]: float(v) for k, v in row.items() if k.startswith("val/")})
            events.put({"event": "progress", **row})

        train_config = TrainConfig.from_dict({**config, "eval_at_start": True})
        checkpoint, metrics = trainer.train(train_config, progress, stop_event)
        cancelled = stop_event.is_set()  # read once: a cancel from now on must not leave a run half evaluated
        result = {"checkpoint": str(checkpoint), "metrics": metrics, "cancelled": cancelled}
        if not cancelled:
            gc.collect()  # the training model is gone before another one is loaded
            active = parent if eval_spec["active"] == eval_spec["parent"] else held_out_metrics(
                eval_spec["active"], eval_spec["val_file"], eval_spec["image_root"], config.get("dtype"))[0]
            result["evaluation"] = {"primary_metric": TripletEvaluator.primary_metric,
                                    "new": checkpoint_metrics(checkpoint), "active": active, "parent": parent}
        events.put({"event": "done", **result})
    except BaseException:  # noqa: BLE001 - everything goes back to the app, which records the failure
        events.put({"event": "error", "message": traceback.format_exc()})


def checkpoint_metrics(checkpoint: str | os.PathLike[str]) -> dict[str, float]:
    """The held-out metrics the trainer measured for the checkpoint it returned (its ``metrics.json``)."""
    path = Path(checkpoint) / "metrics.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    values = {k[4:]: float(v) for k, v in saved.items() if k.startswith("val/")}
    if not values:
        raise ValueError(f"{path} has no held-out (val/) metrics: the run evaluated nothing")
    return values


def held_out_metrics(checkpoint: str, val_file: str, image_root: str,
                     dtype: str | None = None) -> tuple[dict[str, float], str]:
    """The trainer's triplet evaluation of one checkpoint on the held-out file, and its primary metric's name."""
    from scorer import load_checkpoint
    from trainer.evaluate import build_evaluator

    evaluator = build_evaluator(val_file, image_root, skip_missing=True)
    model, processor = load_checkpoint(checkpoint, dtype=dtype)  # the GPU when there is one, as the trainer
    metrics = {k: float(v) for k, v in evaluator(model, processor, 16).items()}
    del model
    gc.collect()
    return metrics, evaluator.primary_metric
