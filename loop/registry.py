"""The store's model versions as the app uses them: which model it starts with, and untrained base scorers.

The store (``curation.models``) lists versions and the active one; this module decides what the app
activates at launch: a given ``--checkpoint`` (registered once, by path), else the store's active model
(e.g. one promoted earlier), else an untrained scorer on ``--model`` written once under ``models/``.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from curation.models import active_model, add_model_version, list_model_versions, set_active_model
from scorer import is_checkpoint, new_scorer, save_checkpoint

log = logging.getLogger(__name__)


def initial_model(conn: sqlite3.Connection, model: str, checkpoint: Path | None, models_dir: Path,
                  device: str | None = None, dtype: str | None = None, keep: dict | None = None) -> int:
    """The model version the app starts with, registered and made active in the store.

    ``keep``: a dict that gets ``{path: (model, processor)}`` when an untrained scorer was built here, so the
    app uses it as loaded instead of loading its backbone a second time.
    """
    if checkpoint is not None:
        path = Path(checkpoint).resolve()
        if not is_checkpoint(path):
            raise FileNotFoundError(f"--checkpoint {path} is not a scorer checkpoint")
        provenance = {"kind": "checkpoint", "given": str(checkpoint)}
    elif (current := active_model(conn)) is not None:
        return current.id
    else:
        path = base_checkpoint(model, models_dir, device, dtype, keep)
        provenance = {"kind": "base", "model": model}
    known = {v.path: v.id for v in list_model_versions(conn)}  # a path seen before keeps its version
    model_id = known.get(str(path)) or add_model_version(conn, str(path), provenance=provenance)
    set_active_model(conn, model_id)
    return model_id


def base_checkpoint(model: str, models_dir: Path, device: str | None = None, dtype: str | None = None,
                    keep: dict | None = None) -> Path:
    """An untrained scorer on ``model`` (tiny, hub id or path), written once under ``models_dir``.

    Its heads are the scorer's default for that backbone (:func:`scorer.config.default_scorer_config`);
    the random tiny backbone is saved inside the checkpoint (it is trained in full later).
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    out = (models_dir / f"base-{slug}").resolve()
    if not is_checkpoint(out):
        tiny = model == "tiny"
        scorer_model, processor = new_scorer(model, device=device, dtype="float32" if tiny else dtype)
        save_checkpoint(scorer_model, processor, out, save_backbone=tiny)
        log.info("untrained scorer on %s written to %s", model, out)
        if keep is not None and not tiny:  # the tiny one is reloaded from the checkpoint (its saved backbone)
            keep[str(out)] = (scorer_model, processor)
    return out
