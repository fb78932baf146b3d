"""Training checkpoints: a scorer checkpoint plus ``trainer_state.pt``, written atomically.

``OUTPUT_DIR/last`` and ``OUTPUT_DIR/best`` are complete scorer checkpoints (loadable with
``scorer.load_checkpoint``) that also carry::

    trainer_state.pt    step, optimizer, scheduler, RNG states, best metric, trainable parameter names (last only)
    train_config.json   the TrainConfig of the run
    metrics.json        the latest training and validation metrics

Each is built in a temporary sibling directory and renamed into place, so a crash or a stop never
leaves a half-written ``last`` or ``best``. ``best`` is no second copy: its files are hard links to those
of ``last`` at the step it was chosen (a save never rewrites a file in place, it writes a new directory, so
the links keep that step's weights), without the optimizer state; a copy only where links are impossible.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from scorer.checkpoint import _link_or_copy, replace_dir, save_checkpoint

TRAINER_STATE = "trainer_state.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(out: Path, model, processor, trainer_state: dict, config: dict, metrics: dict,
                             save_backbone: bool) -> Path:
    """Write the checkpoint to ``out`` (e.g. OUTPUT_DIR/last) atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        checkpoint = save_checkpoint(model, processor, staging / "checkpoint", save_backbone=save_backbone)
        torch.save(trainer_state, checkpoint / TRAINER_STATE)
        (checkpoint / "train_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        (checkpoint / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        replace_dir(checkpoint, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def copy_checkpoint(source: Path, out: Path) -> Path:
    """Atomic link of ``last`` → ``best``: hard links to its files (copies across file systems), without the
    optimizer state (``trainer_state.pt`` stays in ``last`` only)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(source, staging / "checkpoint", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(TRAINER_STATE))
        replace_dir(staging / "checkpoint", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_trainer_state(checkpoint: Path) -> dict:
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} has no {TRAINER_STATE}: it is not a resumable training checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
