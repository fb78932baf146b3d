"""The app's model at real size, tested with a fake loader: a swap releases the old model before loading the
new one, annotators go ahead of the queue scorer, and images a CLI import added get scored."""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from loop import AppConfig, Services
from scorer.ranking import RankedCaption, RankedImage

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
GIB = 1024**3


class FakeScorer:
    """Stands for a loaded scorer: says when it is loaded, ranks slowly, and says when it is freed."""

    def __init__(self, model_id: int, events: list, rank_seconds: float = 0.0):
        self.model_id, self.events, self.rank_seconds = model_id, events, rank_seconds
        self.model = SimpleNamespace(config=SimpleNamespace(backbone="tiny"),
                                     parameters=lambda: iter([torch.zeros(4)]))
        events.append(("loaded", model_id))
        weakref.finalize(self, events.append, ("released", model_id))

    def rank(self, items):
        self.events.append(("rank", len(items)))
        time.sleep(self.rank_seconds)
        return [RankedImage(path, [RankedCaption(text, 0.5 - 0.1 * n) for n, text in enumerate(texts)])
                for path, texts in items]


@pytest.fixture
def fake_services(tmp_path, tiny_checkpoint_session, monkeypatch):
    events: list = []
    monkeypatch.setattr(Services, "_load_scorer", lambda self, model_id: FakeScorer(model_id, events, 0.3))
    monkeypatch.setattr(Services, "scorer_bytes", lambda self: 7 * GIB if self.model_loaded() else 0)
    served = Services(AppConfig(data_dir=tmp_path / "data", image_root=DEMO, checkpoint=tiny_checkpoint_session))
    served.events = events
    yield served
    served.close()


def test_promotion_releases_the_old_model_before_loading_the_new_one(fake_services, monkeypatch):
    from curation.models import add_model_version

    monkeypatch.setattr("loop.memory_plan.checkpoint_bytes", lambda *a, **k: 7 * GIB)
    monkeypatch.setattr("loop.services.available_bytes", lambda device=None: 3 * GIB)  # 7 fits once 7 are freed
    old = fake_services.scorer()[1]
    new = add_model_version(fake_services.conn(), "/models/new")
    fake_services.activate(new)
    swap = fake_services.events[fake_services.events.index(("loaded", old)) + 1:]
    assert swap[:2] == [("released", old), ("loaded", new)]
    assert fake_services.scorer()[1] == new


def test_a_swap_that_cannot_fit_is_refused_before_the_old_model_is_released(fake_services, monkeypatch):
    from curation.models import add_model_version

    monkeypatch.setattr("loop.memory_plan.checkpoint_bytes", lambda *a, **k: 15 * GIB)
    monkeypatch.setattr("loop.services.available_bytes", lambda device=None: 3 * GIB)
    old = fake_services.scorer()[1]
    new = add_model_version(fake_services.conn(), "/models/too-big")
    with pytest.raises(ValueError, match=rf"model version {new} cannot be loaded.*needs 15.0 GiB.*3.0 GiB free"):
        fake_services.activate(new)
    assert fake_services.scorer()[1] == old and fake_services.model_loaded()
    assert ("released", old) not in fake_services.events


def test_a_released_scorer_refuses_new_scores_with_a_reason_and_reloads(fake_services):
    fake_services.release_scorer("training run 7 trains")
    with pytest.raises(ValueError, match="released while training run 7 trains"):
        with fake_services.using_model():
            pass
    fake_services.reload_scorer()
    with fake_services.using_model() as (scorer, _):
        assert scorer is not None


def test_an_annotator_request_goes_before_the_queue_scorers_next_batch(fake_services):
    import app

    app.import_demo_if_empty(fake_services)
    events = fake_services.events
    fake_services.queue_scorer.start()
    deadline = time.time() + 30
    while not any(e[0] == "rank" for e in events) and time.time() < deadline:
        time.sleep(0.01)
    batches_before = sum(e[0] == "rank" for e in events)  # the batch in progress (it sleeps 0.3 s)

    def annotator():
        with fake_services.using_model():
            events.append(("annotator",))

    thread = threading.Thread(target=annotator)
    thread.start()
    thread.join(10)
    fake_services.queue_scorer.stop()
    ranks_then_annotator = [e[0] for e in events if e[0] in ("rank", "annotator")]
    assert ranks_then_annotator.index("annotator") == batches_before  # right after the batch it waited for
    assert ranks_then_annotator.count("rank") >= batches_before


def test_images_a_cli_import_added_are_scored_by_the_polling_queue_scorer(fake_services):
    from curation.importers import ImportOptions, import_file
    from curation.store import open_store
    from curation.views import ImageFilter, image_captions, list_images

    fake_services.queue_scorer.start()
    assert fake_services.queue_scorer.wait(30)
    cli = open_store(fake_services.config.db_path)  # another process's connection, as `python -m curation import`
    import_file(cli, "seed-triplets", DEMO / "triplets.json", ImportOptions(image_root=DEMO))
    cli.close()
    fake_services.queue_scorer.poll(every=0.2)
    model_id = fake_services.scorer()[1]
    conn = fake_services.conn()
    deadline = time.time() + 60
    unscored = None
    while time.time() < deadline:
        rows = list_images(conn, ImageFilter(status="unlabelled"))
        unscored = [r.id for r in rows if any(c.score is None for c in image_captions(conn, r.id, model_id))]
        if rows and not unscored:
            break
        time.sleep(0.2)
    assert rows and unscored == []
