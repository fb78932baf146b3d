"""Review: disagreements and model contradictions listed side by side; resolutions drive the triplets."""

from __future__ import annotations

import json

import pytest

from curation.cli import main
from curation.decisions import record_decision
from curation.exporters import best_captions, export_file
from curation.models import add_model_version, set_active_model
from curation.queue import record_scores
from curation.resolutions import resolution_history
from curation.review import ReviewOptions, resolve, review_items
from curation.stats import agreement_summary, annotator_progress
from curation.store import add_caption, add_image, open_store


def _disagreement(conn):
    """ann accepts 'good' and rejects 'bad'; bob the other way round."""
    image_id = add_image(conn, "a.png")
    good, bad = (add_caption(conn, image_id, text, "import") for text in ("good", "bad"))
    for who, pos, neg in (("ann", good, bad), ("bob", bad, good)):
        record_decision(conn, image_id, pos, "accept", who)
        record_decision(conn, image_id, neg, "reject", who)
    return image_id, good, bad


def _exported(conn, tmp_path):
    export_file(conn, "triplets", tmp_path / "t.json")
    records = json.loads((tmp_path / "t.json").read_text())
    return sorted((r["positive"], r["negative"], r["provenance"]) for r in records)


def test_disagreement_is_listed_side_by_side_and_the_resolution_drives_exported_triplets(conn, tmp_path):
    image_id, good, bad = _disagreement(conn)
    assert _exported(conn, tmp_path) == [("bad", "good", "decision"), ("good", "bad", "decision")]
    items = review_items(conn)
    assert [(i.kind, i.image, [c.caption_id for c in i.captions]) for i in items] == [
        ("disagreement", "a.png", [good]), ("disagreement", "a.png", [bad])]
    assert items[0].captions[0].verdicts == {"ann": "accept", "bob": "reject"}
    assert "ann accept" in items[0].reason and "bob reject" in items[0].reason

    resolve(conn, image_id, bad, "reject", "rev")
    resolve(conn, image_id, good, "accept", "rev", note="bob misread the image")
    assert _exported(conn, tmp_path) == [("good", "bad", "resolution")] * 2  # ann's and bob's, now alike
    assert review_items(conn) == []
    resolved = review_items(conn, ReviewOptions(include_resolved=True))
    assert [(i.resolved, i.captions[0].resolution) for i in resolved] == [(True, "accept"), (True, "reject")]
    # the resolution outlives a later decision by an annotator, and 'clear' withdraws it
    record_decision(conn, image_id, bad, "accept", "bob")
    assert _exported(conn, tmp_path) == [("good", "bad", "resolution")] * 2
    resolve(conn, image_id, good, "clear", "rev")
    resolve(conn, image_id, bad, "clear", "rev")
    assert _exported(conn, tmp_path) == [("bad", "good", "decision"), ("good", "bad", "decision")]
    assert [(r.verdict, r.reviewer, r.note) for r in resolution_history(conn, image_id)][1] == (
        "accept", "rev", "bob misread the image")


def test_best_pick_disagreement_and_a_best_resolution_choose_the_best_caption(conn):
    image_id = add_image(conn, "a.png")
    one, two = (add_caption(conn, image_id, text, "import") for text in ("one", "two"))
    record_decision(conn, image_id, one, "best", "ann")
    record_decision(conn, image_id, two, "accept", "ann")
    record_decision(conn, image_id, two, "best", "bob")
    [item] = review_items(conn)
    assert (item.kind, [c.text for c in item.captions]) == ("best-pick", ["one", "two"])
    assert best_captions(conn)[0].caption == "two"  # the latest best pick, until a reviewer decides
    resolve(conn, image_id, one, "best", "rev")
    assert review_items(conn) == []
    [best] = best_captions(conn)
    assert (best.caption, best.annotator) == ("one", "rev")


def test_decisions_the_model_contradicts(conn):
    image_id = add_image(conn, "a.png")
    top, low, mid = (add_caption(conn, image_id, text, "import") for text in ("top", "low", "mid"))
    model = add_model_version(conn, "m")
    set_active_model(conn, model)
    record_scores(conn, model, [(image_id, top, 0.9), (image_id, low, 0.3), (image_id, mid, 0.7)])
    record_decision(conn, image_id, low, "accept", "ann")  # 0.6 below the best
    record_decision(conn, image_id, top, "reject", "ann")  # the model's first by 0.2
    record_decision(conn, image_id, mid, "accept", "ann")  # 0.2 below: within the gap asked for
    items = review_items(conn, ReviewOptions(accepted_gap=0.25, rejected_margin=0.15))
    assert [(i.kind, [c.text for c in i.captions]) for i in items] == [
        ("model-contradiction", ["top", "mid"]), ("model-contradiction", ["low", "top"])]
    rejected_top, accepted_low = items
    assert [(c.score, c.rank) for c in accepted_low.captions] == [(0.3, 3), (0.9, 1)]
    assert "0.600 below" in accepted_low.reason and "first by 0.200" in rejected_top.reason
    assert accepted_low.model_version_id == model
    assert review_items(conn, ReviewOptions(accepted_gap=0.7, rejected_margin=0.25)) == []
    assert review_items(conn, ReviewOptions(kinds=("disagreement",))) == []


def test_progress_and_pairwise_agreement(conn):
    _disagreement(conn)
    image_id = add_image(conn, "b.png")
    caps = [add_caption(conn, image_id, text, "import") for text in ("x", "y")]
    for who in ("ann", "bob", "cy"):
        record_decision(conn, image_id, caps[0], "accept", who)
        record_decision(conn, image_id, caps[1], "reject", who)
    progress = {p.annotator: p for p in annotator_progress(conn)}
    assert (progress["ann"].decisions, progress["ann"].images, progress["ann"].accept) == (4, 2, 2)
    assert (progress["cy"].decisions, progress["cy"].images) == (2, 1) and progress["cy"].last_at
    summary = agreement_summary(conn)
    pairs = {(p.annotator_a, p.annotator_b): p for p in summary.pairs}
    assert (pairs[("ann", "bob")].items, pairs[("ann", "bob")].agreed) == (4, 2)
    assert pairs[("ann", "bob")].kappa == pytest.approx(0.0)
    assert pairs[("ann", "cy")].kappa == pytest.approx(1.0)
    assert summary.items == 8


def test_bad_resolutions_name_the_problem(conn):
    image_id, good, _ = _disagreement(conn)
    other = add_image(conn, "b.png")
    with pytest.raises(ValueError, match="not one of"):
        resolve(conn, image_id, good, "maybe", "rev")
    with pytest.raises(ValueError, match="belongs to image"):
        resolve(conn, other, good, "accept", "rev")
    with pytest.raises(ValueError, match="reviewer name is empty"):
        resolve(conn, image_id, good, "accept", "")


def test_cli_review_and_resolve(tmp_path, capsys):
    db = tmp_path / "store.db"
    conn = open_store(db)
    image_id, good, bad = _disagreement(conn)
    conn.close()
    assert main(["--db", str(db), "review", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["captions"][0]["text"] for i in items] == ["good", "bad"]
    assert main(["--db", str(db), "resolve", str(image_id), str(bad), "reject", "--who", "rev"]) == 0
    assert main(["--db", str(db), "review"]) == 0
    assert "1 items to review" in capsys.readouterr().out
