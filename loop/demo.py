"""The demo that learns: on its first launch, a training run on the demo scenes; later launches reuse its model.

:func:`start_demo_learning` is called once the demo's store holds the demo scenes. When the cache holds a
model trained on this demo set with this recipe (``$REMOTE_SCORER_CACHE/demo-model/<key>``, the key a
hash of the triplet file, the images and the form), it is registered and made active if it beat the
untrained model and the active one is still untrained. Otherwise it starts a run exactly as the Train tab
does (:class:`loop.training.TrainingJobs`: split by image, held-out evaluation, automatic promotion), and
a listener copies the finished run's model into the cache with the run's promotion decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from curation.models import add_model_version, get_model_version, list_model_versions
from loop.training import RunSnapshot, TrainForm

if TYPE_CHECKING:
    from loop.services import Services

log = logging.getLogger(__name__)

INFO_FILE = "demo_model.json"  # beside the cached checkpoint: the run's promotion decision


def cache_root() -> Path:
    """Where trained demo models are kept between launches (and between data directories)."""
    return Path(os.environ.get("REMOTE_SCORER_CACHE", Path.home() / ".cache" / "remote_scorer")) / "demo-model"


def demo_key(triplets: Path, image_root: Path, form: TrainForm) -> str:
    """A hash of what the demo model depends on: the triplet file, every image it names, the training form."""
    digest = hashlib.sha256(triplets.read_bytes())
    for record in json.loads(triplets.read_text(encoding="utf-8")):
        digest.update((image_root / record["image"]).read_bytes())
    digest.update(json.dumps(asdict(form), sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]


def start_demo_learning(services: Services, triplets: Path, form: TrainForm) -> int | None:
    """Use the cached demo model, or start the run that trains it; returns the run id (None: cached)."""
    cached = cache_root() / demo_key(triplets, services.image_root, form)
    if (cached / INFO_FILE).is_file():
        use_cached_model(services, cached)
        return None
    run_id = services.training.start(form)
    services.training.listeners.append(lambda snapshot: _cache_model(snapshot, run_id, cached))
    log.info("demo: training run %d started on the demo scenes; its model will be cached in %s", run_id, cached)
    return run_id


def use_cached_model(services: Services, cached: Path) -> int:
    """Register the cached model; make it active when it beat the untrained one and nothing else was promoted."""
    conn = services.conn()
    info = json.loads((cached / INFO_FILE).read_text(encoding="utf-8"))
    known = {v.path: v.id for v in list_model_versions(conn)}
    model_id = known.get(str(cached)) or add_model_version(
        conn, str(cached), metrics=info.get("metrics", {}), provenance={"kind": "demo", **info})
    active = get_model_version(conn, services.scorer()[1])
    if info.get("promoted") and active.provenance.get("kind") == "base":
        services.activate(model_id)
        log.info("demo: the cached demo model (version %d) ranks", model_id)
    return model_id


def _cache_model(snapshot: RunSnapshot, run_id: int, cached: Path) -> None:
    """Copy a finished demo run's checkpoint into the cache (atomically: a temporary sibling, then a rename)."""
    if snapshot.run_id != run_id or snapshot.status != "done" or (cached / INFO_FILE).is_file():
        return
    promotion = snapshot.promotion
    info = {"run": run_id, "promoted": bool(promotion and promotion.promoted),
            "metrics": {f"held_out_{k}": v for k, v in snapshot.result["evaluation"]["new"].items()},
            "promotion": promotion.record() if promotion else None}
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}.tmp-", dir=cached.parent))
    try:
        shutil.copytree(snapshot.result["checkpoint"], staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("trainer_state.pt"))  # the optimizer: not needed to rank
        (staging / INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
        shutil.rmtree(cached, ignore_errors=True)
        staging.rename(cached)
        log.info("demo: run %d's model cached in %s (promoted: %s)", run_id, cached, info["promoted"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
