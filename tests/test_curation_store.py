"""Curation store: schema, path safety, decisions → triplets, edits, undo, views, stats, models."""

from __future__ import annotations

import os
import sqlite3

import pytest

from common.paths import PathOutsideRootError
from curation.decisions import edit_caption, history, record_decision, undo_last
from curation.models import (
    active_model,
    add_model_version,
    add_training_run,
    get_training_run,
    list_model_versions,
    set_active_model,
    update_training_run,
)
from curation.stats import cohen_kappa, stats
from curation.store import SCHEMA_VERSION, add_caption, add_image, get_image, open_store
from curation.triplets import TripletFilter, list_triplets, triplet_records
from curation.views import ImageFilter, counters, image_captions, list_images, to_frame


def _image(conn, name="a.png", captions=("good", "bad", "worse")):
    image_id = add_image(conn, name, cls="beach")
    return image_id, [add_caption(conn, image_id, text, "import") for text in captions]


def _pairs(conn, flt=None):
    return sorted((t.positive, t.negative, t.provenance, t.annotator) for t in list_triplets(conn, flt))


def test_open_store_sets_wal_foreign_keys_and_version(tmp_path):
    conn = open_store(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO captions(image_id, text, source, created_at) VALUES (999, 't', 's', 'x')")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match="schema version"):
        open_store(tmp_path / "s.db")


def test_reopen_keeps_data(tmp_path):
    conn = open_store(tmp_path / "s.db")
    image_id, _ = _image(conn)
    conn.close()
    again = open_store(tmp_path / "s.db")
    assert get_image(again, image_id).path == "a.png"


def test_a_version_1_database_is_migrated_and_keeps_its_decisions(tmp_path):
    conn = open_store(tmp_path / "s.db")
    image_id, (good, bad, _) = _image(conn)
    record_decision(conn, image_id, good, "accept", "ann")
    record_decision(conn, image_id, bad, "accept", "ann")
    undo_last(conn, "ann")
    conn.execute("DROP VIEW effective_decisions")  # what schema version 1 had
    for statement in ("DROP TABLE visibility_log", "DROP TABLE resolutions", "ALTER TABLE images DROP COLUMN hidden",
                      "ALTER TABLE captions DROP COLUMN hidden"):  # schema version 3
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    conn = open_store(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    effective = conn.execute("SELECT caption_id, verdict FROM effective_decisions WHERE verdict != 'undo'").fetchall()
    assert [tuple(row) for row in effective] == [(good, "accept")]
    assert stats(conn)["per_annotator"]["ann"] == {"decisions": 1, "images": 1, "accept": 1, "reject": 0,
                                                   "best": 0, "edit": 0, "undone": 1}
    conn.close()


def test_add_image_and_caption_are_idempotent(conn):
    first = add_image(conn, "./x/a.png", cls="beach")
    assert add_image(conn, "x/a.png", split="train", cls="forest") == first
    image = get_image(conn, first)
    assert (image.path, image.cls, image.split) == ("x/a.png", "beach", "train")  # filled, not overwritten
    caption = add_caption(conn, first, "a beach", "human", author="ann")
    assert add_caption(conn, first, "a beach", "model:x") == caption
    assert conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 1
    with pytest.raises(ValueError, match="empty"):
        add_caption(conn, first, "   ", "human")
    with pytest.raises(ValueError, match="image 999"):
        add_caption(conn, 999, "text", "human")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.png", "a/../../outside.png", "", "a\x00b"])
def test_traversal_is_rejected(conn, tmp_path, bad):
    with pytest.raises(PathOutsideRootError):
        add_image(conn, bad, image_root=tmp_path)
    with pytest.raises(PathOutsideRootError):
        add_image(conn, bad)
    assert conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_symlink_leaving_the_root_is_rejected(conn, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    (root / "ok.png").write_bytes(b"x")
    with pytest.raises(PathOutsideRootError):
        add_image(conn, "link.png", image_root=root)
    assert get_image(conn, add_image(conn, "ok.png", image_root=root)).path == "ok.png"


def test_decisions_make_triplets_per_annotator(conn):
    image_id, (good, bad, worse) = _image(conn)
    record_decision(conn, image_id, good, "best", "ann")
    record_decision(conn, image_id, bad, "reject", "ann")
    record_decision(conn, image_id, worse, "reject", "ann")
    assert _pairs(conn) == [("good", "bad", "decision", "ann"), ("good", "worse", "decision", "ann")]
    record_decision(conn, image_id, bad, "accept", "bob")  # bob disagrees: kept, not merged
    record_decision(conn, image_id, good, "reject", "bob")
    assert ("bad", "good", "decision", "bob") in _pairs(conn)
    assert len(_pairs(conn, TripletFilter(annotator="ann"))) == 2
    # ann changes her mind: the latest verdict counts, the log keeps both
    record_decision(conn, image_id, worse, "accept", "ann")
    assert ("good", "worse", "decision", "ann") not in _pairs(conn)
    assert ("worse", "bad", "decision", "ann") in _pairs(conn)
    assert len(history(conn, image_id)) == 6
    assert triplet_records(conn, TripletFilter(annotator="bob")) == [
        {"image_name": "a.png", "positive": "bad", "negative": "good", "provenance": "decision"}
    ]


def test_decision_input_is_validated(conn):
    image_id, (good, *_rest) = _image(conn)
    other, (foreign, *_x) = _image(conn, "b.png", ("c",))
    with pytest.raises(ValueError, match="verdict"):
        record_decision(conn, image_id, good, "maybe", "ann")
    with pytest.raises(ValueError, match="belongs to image"):
        record_decision(conn, image_id, foreign, "accept", "ann")
    with pytest.raises(ValueError, match="annotator"):
        record_decision(conn, image_id, good, "accept", " ")
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0


def test_edit_makes_new_positive_and_old_negative(conn):
    image_id, (good, bad, _) = _image(conn)
    new_id = edit_caption(conn, image_id, bad, "bad, fixed", "ann")
    rows = {r.id: r for r in image_captions(conn, image_id)}
    assert rows[new_id].source == "human" and rows[new_id].author == "ann" and rows[new_id].edit_of == bad
    assert _pairs(conn) == [("bad, fixed", "bad", "edit", "ann")]
    edit_caption(conn, image_id, good, "good, no triplet", "ann", makes_triplet=False)
    assert len(_pairs(conn)) == 1
    with pytest.raises(ValueError, match="does not change"):
        edit_caption(conn, image_id, good, "good", "ann")


def test_undo_restores_previous_triplets_and_is_logged(conn):
    image_id, (good, bad, worse) = _image(conn)
    record_decision(conn, image_id, good, "accept", "ann")
    record_decision(conn, image_id, bad, "reject", "ann")
    before = _pairs(conn)
    record_decision(conn, image_id, worse, "reject", "ann")
    edit_caption(conn, image_id, worse, "worse, edited", "ann")
    assert len(_pairs(conn)) == 3
    assert undo_last(conn, "ann").verdict == "edit"
    undone = undo_last(conn, "ann")
    assert (undone.caption_id, undone.verdict) == (worse, "reject")
    assert _pairs(conn) == before
    assert [d.verdict for d in history(conn, image_id)][-2:] == ["undo", "undo"]  # append-only
    assert undo_last(conn, "bob") is None


def test_undo_reaches_back_ten_decisions_only(conn):
    image_id, captions = _image(conn, captions=[f"c{i}" for i in range(12)])
    for caption in captions:
        record_decision(conn, image_id, caption, "reject", "ann")
    undone = [undo_last(conn, "ann") for _ in range(11)]
    assert [d.caption_id for d in undone[:10]] == captions[::-1][:10]
    assert undone[10] is None
    assert counters(conn, "ann")["mine"] == 1  # two decisions older than the undo window remain


def test_views_list_images_and_counters(conn):
    a, (good, bad, _) = _image(conn, "a.png")
    b, _ = _image(conn, "b.png")
    record_decision(conn, a, good, "accept", "ann")
    record_decision(conn, a, good, "reject", "bob")
    assert [r.id for r in list_images(conn, ImageFilter(status="unlabelled"))] == [b]
    assert [r.id for r in list_images(conn, ImageFilter(status="disputed"))] == [a]
    assert [r.id for r in list_images(conn, ImageFilter(annotator="bob"))] == [a]
    assert [r.n_captions for r in list_images(conn, ImageFilter(cls="beach", limit=1, offset=1))] == [3]
    assert list(to_frame(list_images(conn)).columns)[:2] == ["id", "path"]
    assert counters(conn, "ann") == {"done": 1, "total": 2, "mine": 1, "today": 1}
    assert image_captions(conn, a)[0].verdicts == {"ann": "accept", "bob": "reject"}
    with pytest.raises(ValueError, match="status"):
        ImageFilter(status="nope")


def test_cohen_kappa_closed_form():
    # 2×2 table: both yes 20, both no 15, A yes B no 5, A no B yes 10 → po = .7, pe = .5, κ = .4
    pairs = [("y", "y")] * 20 + [("n", "n")] * 15 + [("y", "n")] * 5 + [("n", "y")] * 10
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([]) is None
    assert cohen_kappa([("y", "y")] * 3) is None


def test_stats_report_disagreement_and_agreement(conn):
    image_id, (good, bad, worse) = _image(conn)
    for caption, ann, bob in (
        (good, "accept", "accept"),
        (bad, "reject", "reject"),
        (worse, "reject", "best"),
    ):
        record_decision(conn, image_id, caption, ann, "ann")
        record_decision(conn, image_id, caption, bob, "bob")
    result = stats(conn)
    assert (result["images"], result["captions"], result["decisions"]) == (1, 3, 6)
    assert result["triplets"] == len(list_triplets(conn))
    assert result["per_annotator"]["ann"]["reject"] == 2
    assert result["disagreements"]["count"] == 1
    assert result["disagreements"]["items"][0]["verdicts"] == {"ann": "reject", "bob": "best"}
    assert result["agreement"]["items"] == 3
    assert result["agreement"]["kappa"] == pytest.approx(
        cohen_kappa([("positive", "positive"), ("negative", "negative"), ("negative", "positive")])
    )


def test_model_versions_and_training_runs(conn):
    base = add_model_version(conn, "models/base", {"acc": 0.5})
    tuned = add_model_version(conn, "models/v1", {"acc": 0.7}, parent=base, provenance={"run": 1})
    assert active_model(conn) is None
    set_active_model(conn, base)
    set_active_model(conn, tuned)
    assert active_model(conn).id == tuned and [m.active for m in list_model_versions(conn)] == [False, True]
    assert list_model_versions(conn)[1].provenance == {"run": 1}
    with pytest.raises(ValueError, match="model version 99"):
        set_active_model(conn, 99)
    run = add_training_run(conn, {"lr": 1e-4})
    update_training_run(conn, run, "running", {"step": 10})
    update_training_run(conn, run, "done", {"loss": 0.1}, model_version=tuned)
    finished = get_training_run(conn, run)
    assert (finished.status, finished.metrics, finished.model_version_id) == (
        "done",
        {"step": 10, "loss": 0.1},
        tuned,
    )
    with pytest.raises(ValueError, match="status"):
        update_training_run(conn, run, "exploded")
