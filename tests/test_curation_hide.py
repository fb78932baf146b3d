"""Cleanup: hiding images and captions is soft, logged, reversible, and reaches queue, views, exports, triplets."""

from __future__ import annotations

import json

import pytest

from curation.cleanup import (
    hidden_items,
    hide_caption,
    hide_image,
    unhide_caption,
    unhide_image,
    visibility_history,
)
from curation.cli import main
from curation.decisions import record_decision
from curation.exporters import EXPORTS, export_file
from curation.models import add_model_version, set_active_model
from curation.queue import next_image, record_scores
from curation.store import add_caption, add_image, get_image, open_store
from curation.triplets import list_triplets, triplet_records
from curation.views import ImageFilter, counters, image_captions, list_images


def _store(conn):
    """Two images, three captions each; ann accepted the first caption and rejected the others."""
    ids = {}
    for name in ("a.png", "b.png"):
        image_id = add_image(conn, name, cls="beach")
        caps = [add_caption(conn, image_id, f"{name} {text}", "import") for text in ("good", "bad", "gibberish")]
        record_decision(conn, image_id, caps[0], "accept", "ann")
        for cap in caps[1:]:
            record_decision(conn, image_id, cap, "reject", "ann")
        ids[name] = (image_id, caps)
    return ids


def _export_texts(conn, tmp_path):
    """Every image path and caption text in every text export kind."""
    out = ""
    for kind, spec in EXPORTS.items():
        if spec.suffix in (".json", ".csv", ".jsonl"):
            path = tmp_path / f"{kind}{spec.suffix}"
            export_file(conn, kind, path)
            out += path.read_text()
    return out


def test_hidden_caption_leaves_views_triplets_and_exports_and_comes_back(conn, tmp_path):
    ids = _store(conn)
    image_id, (good, bad, gibberish) = ids["a.png"]
    before = triplet_records(conn)
    assert "a.png gibberish" in _export_texts(conn, tmp_path)
    action = hide_caption(conn, gibberish, "lead", reason="gibberish")
    assert (action.item, action.item_id, action.action, action.who, action.reason) == (
        "caption", gibberish, "hide", "lead", "gibberish")
    assert [c.id for c in image_captions(conn, image_id)] == [good, bad]
    assert [c.hidden for c in image_captions(conn, image_id, include_hidden=True)] == [False, False, True]
    assert {(t.positive, t.negative) for t in list_triplets(conn) if t.image_id == image_id} == {
        ("a.png good", "a.png bad")}
    assert "a.png gibberish" not in _export_texts(conn, tmp_path)
    [item] = hidden_items(conn)
    assert (item.item, item.item_id, item.text, item.image, item.who, item.reason) == (
        "caption", gibberish, "a.png gibberish", "a.png", "lead", "gibberish")
    with pytest.raises(ValueError, match="hidden"):
        record_decision(conn, image_id, gibberish, "accept", "ann")
    with pytest.raises(ValueError, match="already hidden"):
        hide_caption(conn, gibberish, "lead")

    unhide_caption(conn, gibberish, "lead2")
    assert triplet_records(conn) == before
    assert "a.png gibberish" in _export_texts(conn, tmp_path)
    assert hidden_items(conn) == []
    history = visibility_history(conn, "caption", gibberish)
    assert [(h.action, h.who) for h in history] == [("hide", "lead"), ("unhide", "lead2")]
    assert all(h.created_at for h in history) and history[0].created_at <= history[1].created_at


def test_hidden_image_leaves_queue_listings_counters_exports_and_triplets(conn, tmp_path):
    ids = _store(conn)
    fresh = add_image(conn, "c.png")
    add_caption(conn, fresh, "c.png caption", "import")
    assert next_image(conn, "ann2") == fresh
    hide_image(conn, fresh, "lead", "blurry")
    assert get_image(conn, fresh).hidden
    assert next_image(conn, "ann2") is None  # its lease went with it; nothing else is unlabelled
    assert next_image(conn, "ann3") is None
    hidden_a = ids["a.png"][0]
    hide_image(conn, hidden_a, "lead")
    assert [row.path for row in list_images(conn)] == ["b.png"]
    assert [row.path for row in list_images(conn, ImageFilter(hidden=True))] == ["a.png", "c.png"]
    assert len(list_images(conn, ImageFilter(hidden=None))) == 3
    assert counters(conn, "ann") == {"done": 1, "total": 1, "mine": 1, "today": 1}
    assert {r["image_name"] for r in triplet_records(conn)} == {"b.png"}
    text = _export_texts(conn, tmp_path)
    assert "b.png good" in text and "a.png" not in text and "c.png" not in text
    assert [(h.item, h.item_id) for h in hidden_items(conn)] == [("image", hidden_a), ("image", fresh)]

    unhide_image(conn, fresh, "lead")
    unhide_image(conn, hidden_a, "lead")
    assert next_image(conn, "ann2") == fresh
    assert {r["image_name"] for r in triplet_records(conn)} == {"a.png", "b.png"}
    assert "a.png good" in _export_texts(conn, tmp_path)
    assert [h.action for h in visibility_history(conn, "image", fresh)] == ["hide", "unhide"]


def test_hidden_caption_leaves_the_queue_margin(conn):
    image_id = add_image(conn, "a.png")
    caps = [add_caption(conn, image_id, text, "import") for text in ("x", "y", "zzz")]
    model = add_model_version(conn, "m")
    set_active_model(conn, model)
    record_scores(conn, model, [(image_id, caps[0], 0.5), (image_id, caps[1], 0.2), (image_id, caps[2], 0.49)])
    margin = "SELECT queue_margin FROM images WHERE id = ?"
    assert conn.execute(margin, (image_id,)).fetchone()[0] == pytest.approx(0.01)
    hide_caption(conn, caps[2], "lead")
    assert conn.execute(margin, (image_id,)).fetchone()[0] == pytest.approx(0.3)
    unhide_caption(conn, caps[2], "lead")
    assert conn.execute(margin, (image_id,)).fetchone()[0] == pytest.approx(0.01)


def test_bad_hide_requests_name_the_item(conn):
    with pytest.raises(ValueError, match="image 7 does not exist"):
        hide_image(conn, 7, "lead")
    image_id = add_image(conn, "a.png")
    with pytest.raises(ValueError, match="not named"):
        hide_image(conn, image_id, " ")
    with pytest.raises(ValueError, match="already visible"):
        unhide_image(conn, image_id, "lead")


def test_cli_hide_unhide_and_list(tmp_path, capsys):
    db = tmp_path / "store.db"
    conn = open_store(db)
    ids = _store(conn)
    conn.close()
    caption = ids["b.png"][1][2]
    assert main(["--db", str(db), "hide", "image", "a.png", "--who", "lead", "--reason", "duplicate"]) == 0
    assert main(["--db", str(db), "hide", "caption", str(caption), "--who", "lead"]) == 0
    assert main(["--db", str(db), "hidden", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(h["item"], h["image"], h["who"], h["reason"]) for h in listed] == [
        ("image", "a.png", "lead", "duplicate"), ("caption", "b.png", "lead", None)]
    assert main(["--db", str(db), "unhide", "image", "--id", str(ids["a.png"][0]), "--who", "lead"]) == 0
    assert main(["--db", str(db), "unhide", "caption", str(caption), "--who", "lead"]) == 0
    assert main(["--db", str(db), "hide", "image", "nope.png", "--who", "lead"]) == 2
    assert "nope.png" in capsys.readouterr().err
    conn = open_store(db)
    assert hidden_items(conn) == []
    conn.close()
