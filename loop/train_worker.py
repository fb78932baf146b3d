"""The training process of a run (``spawn``): train, with the held-out evaluation of the same loaded model.

:func:`run_training` is the target of the process :class:`loop.training.TrainingJobs` starts. It sends
``{"event": "progress" | "log" | "done" | "error", ...}`` dicts through a queue; the app's watcher thread
drains it. Nothing here touches the store: the app records what the process reports.

One model in memory: the trainer evaluates the model it starts from before step 1 (``eval_at_start``: the
parent's held-out metrics, step 0 of the curves) and the new one during the run; the new model's figures
are those of the checkpoint the run returns (its ``metrics.json``). Only an active model other than the
parent is loaded, after training, once the training model is released.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import traceback
from pathlib import Path


def child_threads(requested: int | None = None, cores: int | None = None) -> int:
    """The training child's torch threads: ``requested``, else every core but one (the app's annotators')."""
    if requested is not None and requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) - 1)


def run_training(config: dict, eval_spec: dict, events, stop_event) -> None:
    """Child process: train (evaluating the parent at step 0), then report the new model's held-out figures."""
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
