"""What the training loop reports: running loss means, throughput, TensorBoard and metrics.jsonl.

OUTPUT_DIR/metrics.jsonl has one JSON object a line, ``{"split": "train"|"val", "step": N, <metric>: value,
...}``; TensorBoard gets the same values as "<split>/<metric>" through accelerate's tracker
(``Accelerator(log_with="tensorboard")``), under OUTPUT_DIR/tensorboard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trainer.config import TrainConfig


class RunningLoss:
    """Sums of the loss parts (0-d tensors on the device) since the last :meth:`read`, each with the
    number of steps it was part of (a focal term is absent from a step whose batch had no such negative)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self) -> dict[str, float]:
        """The mean of each part over the steps it was part of since the last read, in one transfer to the CPU."""
        names = list(self.sums)
        if not names:
            return {}
        sums = torch.stack([self.sums[name].float() for name in names]).tolist()
        self.sums, counts, self.counts = {}, self.counts, {}
        return {name: total / counts[name] for name, total in zip(names, sums)}


class Throughput:
    """Triplets per second over the steps since the last :meth:`rate`."""

    def __init__(self, triplets_per_step: int):
        self.triplets_per_step = triplets_per_step
        self.start, self.steps = time.perf_counter(), 0

    def step(self) -> None:
        self.steps += 1

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        rate = self.steps * self.triplets_per_step / max(elapsed, 1e-9)
        self.start, self.steps = time.perf_counter(), 0
        return rate


def hparams(config: TrainConfig) -> dict:
    """The config as TensorBoard hyperparameters (numbers, strings, booleans; the rest as JSON text)."""
    return {name: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for name, value in config.to_dict().items()}


def log_metrics(accelerator, out: Path, split: str, step: int, values: dict[str, float]) -> None:
    """TensorBoard (accelerate's tracker, as "<split>/<name>") and a line of OUTPUT_DIR/metrics.jsonl."""
    accelerator.log({f"{split}/{name}": value for name, value in values.items()}, step=step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as jsonl:
            jsonl.write(json.dumps({"split": split, "step": step, **values}) + "\n")
