"""Concurrent writers and the annotation queue: nothing lost, nothing doubled, no image held twice."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

import pytest

from curation.decisions import record_decision, undo_last
from curation.models import add_model_version, set_active_model
from curation.queue import QueueOptions, next_image, record_scores, release_lease
from curation.stats import stats
from curation.store import add_caption, add_image, open_store
from curation.views import image_captions

WRITERS = 8  # half threads, half processes
DECISIONS = 500


def _seed(db, images=50, per_image=2, classes=("a",)):
    conn = open_store(db)
    out = []
    for i in range(images):
        image_id = add_image(conn, f"img{i:04d}.png", cls=classes[i % len(classes)])
        out.append(
            (
                image_id,
                [add_caption(conn, image_id, f"caption {j} of {i}", "import") for j in range(per_image)],
            )
        )
    conn.close()
    return out


def _decide(db, annotator, items, count):
    conn = open_store(db)
    for n in range(count):
        image_id, captions = items[n % len(items)]
        verdict = ("accept", "reject", "best")[n % 3]
        record_decision(conn, image_id, captions[n % len(captions)], verdict, annotator, score_shown=float(n))
    conn.close()


def _take_images(db, annotator, results):
    """Lease, decide, repeat until the queue is empty; report every image handed out."""
    conn = open_store(db)
    while (image_id := next_image(conn, annotator, QueueOptions(lease_seconds=60))) is not None:
        caption = conn.execute("SELECT id FROM captions WHERE image_id = ? LIMIT 1", (image_id,)).fetchone()[
            0
        ]
        record_decision(conn, image_id, caption, "accept", annotator)
        results.put((annotator, image_id))
    conn.close()


def _run_mixed(target, db, args_for):
    """Run ``target(db, name, *args)`` in WRITERS workers, odd ones threads, even ones processes."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    errors = []

    def in_thread(*args):
        try:
            target(*args)
        except Exception as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)

    workers = [
        threading.Thread(target=in_thread, args=(db, f"w{k}", *args_for(queue)))
        if k % 2
        else ctx.Process(target=target, args=(db, f"w{k}", *args_for(queue)))
        for k in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    assert all(w.exitcode == 0 for w in workers if isinstance(w, multiprocessing.process.BaseProcess))
    return queue


def test_eight_writers_lose_and_duplicate_nothing(tmp_path):
    db = tmp_path / "store.db"
    items = _seed(db)
    _run_mixed(_decide, db, lambda queue: (items, DECISIONS))
    conn = open_store(db)
    rows = conn.execute("SELECT annotator, score_shown FROM decisions").fetchall()
    assert len(rows) == WRITERS * DECISIONS
    assert len(set(rows)) == WRITERS * DECISIONS  # each (writer, sequence number) exactly once
    assert Counter(who for who, _ in rows) == {f"w{k}": DECISIONS for k in range(WRITERS)}
    assert stats(conn)["decisions"] == WRITERS * DECISIONS


def test_queue_never_hands_one_image_to_two_annotators(tmp_path):
    db = tmp_path / "store.db"
    items = _seed(db, images=120)
    queue = _run_mixed(_take_images, db, lambda queue: (queue,))
    handed = []
    while len(handed) < len(items):
        handed.append(queue.get(timeout=10))
    assert sorted(image for _, image in handed) == sorted(image for image, _ in items)


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "store.db"
    items = _seed(db, images=6, per_image=3, classes=("a", "a", "a", "a", "b", "b"))
    conn = open_store(db)
    yield conn, items
    conn.close()


def test_queue_unlabelled_first_then_smallest_margin(store):
    conn, items = store
    model = add_model_version(conn, "m")
    # margins: image0 .5, image1 .05, image2 .3; images 3..5 unscored
    scores = {0: (0.9, 0.4, 0.1), 1: (0.55, 0.5, 0.1), 2: (0.8, 0.5, 0.2)}
    record_scores(
        conn, model, [(items[i][0], c, s) for i, ss in scores.items() for c, s in zip(items[i][1], ss)]
    )
    record_decision(conn, items[1][0], items[1][1][0], "accept", "old")  # labelled: comes last, if ever
    order = []
    while (image_id := next_image(conn, "ann")) is not None:
        order.append(image_id)
        record_decision(conn, image_id, dict(items)[image_id][0], "accept", "ann")
    assert order == [items[i][0] for i in (2, 0, 3, 4, 5)]


def test_margin_of_the_active_model_orders_the_queue(store):
    conn, items = store
    first, second = add_model_version(conn, "m1"), add_model_version(conn, "m2")
    for model, close in ((first, 0), (second, 5)):
        record_scores(conn, model, [(items[close][0], c, 0.5) for c in items[close][1]])
    set_active_model(conn, first)
    assert next_image(conn, "ann") == items[0][0]
    set_active_model(conn, second)
    assert next_image(conn, "bob") == items[5][0]
    assert image_captions(conn, items[0][0])[0].score is None  # the active model did not score it
    assert image_captions(conn, items[0][0], model_version=first)[0].score == 0.5


def test_lease_is_exclusive_until_it_expires_or_is_released(store):
    conn, items = store
    opts = QueueOptions(lease_seconds=0.3)
    held = next_image(conn, "ann", opts)
    assert next_image(conn, "ann", opts) == held  # a reload shows the same image
    assert next_image(conn, "bob", opts) != held
    assert next_image(conn, "ann", opts, exclude={held}) != held  # skip
    time.sleep(0.4)
    assert next_image(conn, "carl", opts) == held  # ann's lease expired
    assert release_lease(conn, held, "carl") and not release_lease(conn, held, "carl")
    assert next_image(conn, "dana", opts) == held


def test_class_balance_takes_from_the_least_done_class(store):
    conn, items = store
    opts = QueueOptions(class_balance=True)
    first = next_image(conn, "ann", opts)  # both classes empty: 'a' by name
    assert first == items[0][0]
    assert next_image(conn, "bob", opts) == items[4][0]  # 'a' has one leased, 'b' none
    for image_id, captions in items[4:]:
        record_decision(conn, image_id, captions[0], "accept", "carl")
    assert next_image(conn, "carl", opts) in {image for image, _ in items[:4]}  # 'b' is done
    undo_last(conn, "carl")
    counts = conn.execute("SELECT class, images, decided FROM class_counts ORDER BY class").fetchall()
    assert [tuple(row) for row in counts] == [("a", 4, 0), ("b", 2, 1)]


def test_overlap_share_gives_decided_images_to_a_second_annotator(store):
    conn, items = store
    for image_id, captions in items:
        record_decision(conn, image_id, captions[0], "accept", "ann")
    assert next_image(conn, "bob") is None
    assert next_image(conn, "ann", QueueOptions(overlap_share=1.0)) is None  # never your own again
    second = next_image(conn, "bob", QueueOptions(overlap_share=1.0))
    assert second == items[0][0]
    record_decision(conn, second, dict(items)[second][0], "reject", "bob")
    agreement = stats(conn)["agreement"]
    assert agreement["items"] == 1 and agreement["pairs"]["ann / bob"]["items"] == 1
    with pytest.raises(ValueError, match="overlap_share"):
        QueueOptions(overlap_share=2)


def test_record_scores_rejects_a_caption_of_another_image(store):
    conn, items = store
    model = add_model_version(conn, "m")
    with pytest.raises(ValueError, match=f"caption {items[1][1][0]}"):
        record_scores(conn, model, [(items[0][0], items[0][1][0], 0.1), (items[0][0], items[1][1][0], 0.2)])
    assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
