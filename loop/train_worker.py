"""The training process of a run (``spawn``): train, then evaluate on the held-out triplets.

:func:`run_training` is the target of the process :class:`loop.training.TrainingJobs` starts. It sends
``{"event": "progress" | "log" | "done" | "error", ...}`` dicts through a queue; the app's watcher thread
drains it. Nothing here touches the store: the app records what the process reports.
"""

from __future__ import annotations

import logging
import traceback


def run_training(config: dict, eval_spec: dict, events, stop_event) -> None:
    """Child process: train, then evaluate the new, the parent and the active checkpoint on the held-out triplets."""
    import torch

    torch.set_num_threads(1)  # leave the other cores to the app's annotators

    class QueueHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.put({"event": "log", "message": self.format(record)})

    handler = QueueHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        import trainer
        from trainer.config import TrainConfig

        val_file, image_root = eval_spec["val_file"], eval_spec["image_root"]
        # the model it starts from, first: step 0 of the accuracy curves
        parent, primary = held_out_metrics(eval_spec["parent"], val_file, image_root)
        events.put({"event": "progress", "step": 0, **{f"val/{k}": v for k, v in parent.items()}})
        checkpoint, metrics = trainer.train(
            TrainConfig.from_dict(config), lambda p: events.put({"event": "progress", **p}), stop_event)
        cancelled = stop_event.is_set()  # read once: a cancel from now on must not leave a run half evaluated
        result = {"checkpoint": str(checkpoint), "metrics": metrics, "cancelled": cancelled}
        if not cancelled:
            active = parent if eval_spec["active"] == eval_spec["parent"] else (
                held_out_metrics(eval_spec["active"], val_file, image_root)[0])
            result["evaluation"] = {"primary_metric": primary, "new": held_out_metrics(str(checkpoint), val_file,
                                                                                       image_root)[0],
                                    "active": active}
        events.put({"event": "done", **result})
    except BaseException:  # noqa: BLE001 - everything goes back to the app, which records the failure
        events.put({"event": "error", "message": traceback.format_exc()})


def held_out_metrics(checkpoint: str, val_file: str, image_root: str) -> tuple[dict[str, float], str]:
    """The trainer's triplet evaluation of one checkpoint on the held-out file, and its primary metric's name."""
    from scorer import load_checkpoint
    from trainer.evaluate import build_evaluator

    evaluator = build_evaluator(val_file, image_root, skip_missing=True)
    model, processor = load_checkpoint(checkpoint)  # the GPU when there is one, as the trainer
    return {k: float(v) for k, v in evaluator(model, processor, 16).items()}, evaluator.primary_metric
