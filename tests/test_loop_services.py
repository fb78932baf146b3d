"""The curation loop driven as a library, no server and no browser: the model registry, hard negatives,
refusals that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop import AppConfig, Services, TrainForm, add_hard_negatives

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_checkpoint_session):
    import app

    served = Services(AppConfig(data_dir=tmp_path_factory.mktemp("loop-data"), image_root=DEMO,
                                checkpoint=tiny_checkpoint_session))
    app.import_demo_if_empty(served)
    yield served
    served.close()


def test_a_given_checkpoint_is_registered_once_and_stays_active_on_the_next_start(services, tiny_checkpoint_session):
    from curation.models import active_model, list_model_versions
    from loop.registry import initial_model

    conn = services.conn()
    first = services.scorer()[1]
    assert active_model(conn).id == first and active_model(conn).path == str(tiny_checkpoint_session.resolve())
    again = initial_model(conn, "tiny", tiny_checkpoint_session, services.config.models_dir)
    assert again == first and len(list_model_versions(conn)) == 1  # the same path keeps its version
    assert initial_model(conn, "tiny", None, services.config.models_dir) == first  # no checkpoint: the active one
    with pytest.raises(FileNotFoundError, match="not a scorer checkpoint"):
        initial_model(conn, "tiny", services.config.data_dir, services.config.models_dir)
    with pytest.raises(ValueError, match="model version 99 does not exist"):
        services.activate(99)


def test_rule_hard_negatives_of_a_caption_are_added_with_their_edit_kinds(services):
    from curation.views import image_captions
    from scorer.generation import EDIT_KINDS

    conn = services.conn()
    image_id = 1
    caption = next(c for c in image_captions(conn, image_id) if "seven green fields" in c.text)
    added = add_hard_negatives(services, image_id, caption.id, 3, use_model=False)
    assert len(added.caption_ids) == 3 and added.image_id == image_id
    stored = {c.id: c for c in image_captions(conn, image_id)}
    for caption_id in added.caption_ids:
        row = stored[caption_id]
        kinds = row.source.removeprefix("hard-negative:").split("+")
        assert row.source.startswith("hard-negative:") and set(kinds) <= set(EDIT_KINDS)
        assert row.author == "rule" and row.text != caption.text
    assert sorted({stored[i].source for i in added.caption_ids}) == added.sources
    with pytest.raises(ValueError, match="has no caption"):
        add_hard_negatives(services, image_id, 10**6, 1, use_model=False)
    with pytest.raises(ValueError, match="at least 1"):
        add_hard_negatives(services, image_id, caption.id, 0, use_model=False)


def test_training_refuses_a_store_without_human_triplets_before_starting_a_process(services):
    with pytest.raises(ValueError, match="too few to train and hold out"):
        services.training.start(TrainForm(human_only=True, max_steps=1))
    assert services.training.running() is None and services.training.snapshot() is None
    with pytest.raises(ValueError, match="validation share"):
        TrainForm(val_split=1.0)
