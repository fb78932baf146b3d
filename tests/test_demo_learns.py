"""The demo that learns: its first launch starts a training run; the next launch finds the trained model."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import app
from curation.models import get_model_version, list_model_versions
from loop import TrainForm
from loop import demo as demo_module
from ui.annotate import model_note


def fast_form() -> TrainForm:
    return TrainForm(max_steps=2, batch_size=8, lr=1e-3, lora_rank=0, max_pixels=app.DEMO_TRAIN_PIXELS)


@pytest.fixture
def demo_cache(tmp_path, monkeypatch):
    cache = tmp_path / "demo-model"
    monkeypatch.setattr(demo_module, "cache_root", lambda: cache)
    monkeypatch.setattr(app, "demo_form", fast_form)
    return cache


def launch(data_dir):
    return app.make_services(app.parse_args(["--demo", "--data-dir", str(data_dir)]))


def wait_for(predicate, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("the demo's training run did not end in time")
        time.sleep(0.5)


@pytest.mark.slow
def test_first_launch_trains_and_the_next_launch_finds_the_model(tmp_path, demo_cache):
    first = launch(tmp_path / "first")
    try:
        snapshot = first.training.snapshot()
        assert snapshot is not None and snapshot.status == "running"  # started by the launch itself (spawn takes s)
        note = model_note(first, first.scorer()[1])  # what the Annotate tab adds after "model v1"
        assert "(untrained)" in note and f"a better model is training (run {snapshot.run_id}" in note
        wait_for(lambda: any(demo_cache.glob(f"*/{demo_module.INFO_FILE}")))
        run = first.training.snapshot()
        assert run.status == "done" and run.result["evaluation"]["new"]  # held-out evaluation, as the Train tab's
    finally:
        first.close()
    cached = next(demo_cache.glob(f"*/{demo_module.INFO_FILE}")).parent
    info = json.loads((cached / demo_module.INFO_FILE).read_text(encoding="utf-8"))
    assert info["run"] == run.run_id and info["promoted"] == bool(run.promotion and run.promotion.promoted)

    second = launch(tmp_path / "second")  # a fresh store: only the cache remembers the run
    try:
        assert second.training.snapshot() is None  # no second training run
        versions = {v.path: v for v in list_model_versions(second.conn())}
        assert str(cached) in versions and versions[str(cached)].provenance["kind"] == "demo"
        assert (second.scorer()[1] == versions[str(cached)].id) == info["promoted"]
    finally:
        second.close()


def test_a_cached_model_that_beat_the_untrained_one_ranks_at_launch(tmp_path, demo_cache):
    services = launch_without_training(tmp_path / "data")
    try:
        base = get_model_version(services.conn(), services.scorer()[1])
        key = demo_module.demo_key(app.DEMO_IMAGES / "triplets.json", services.image_root, fast_form())
        cached = demo_cache / key
        shutil.copytree(base.path, cached)
        (cached / demo_module.INFO_FILE).write_text(json.dumps({"run": 1, "promoted": True}), encoding="utf-8")
        assert demo_module.start_demo_learning(services, app.DEMO_IMAGES / "triplets.json", fast_form()) is None
        active = get_model_version(services.conn(), services.scorer()[1])
        assert active.path == str(cached) and services.training.snapshot() is None
    finally:
        services.close()


def test_a_cached_model_that_was_not_better_is_registered_but_not_active(tmp_path, demo_cache):
    services = launch_without_training(tmp_path / "data")
    try:
        base_id = services.scorer()[1]
        cached = demo_cache / "model"
        shutil.copytree(get_model_version(services.conn(), base_id).path, cached)
        (cached / demo_module.INFO_FILE).write_text(json.dumps({"run": 1, "promoted": False}), encoding="utf-8")
        model_id = demo_module.use_cached_model(services, cached)
        assert model_id != base_id and services.scorer()[1] == base_id
    finally:
        services.close()


def launch_without_training(data_dir):
    return app.make_services(app.parse_args(["--demo", "--no-demo-training", "--data-dir", str(data_dir)]))
