"""The app's listings at scale, checked on small stores against brute-force references: list_images pages
and filters in SQL, the filter values, Browse search through the index (with / without filters, hidden
images, images added later), and the streamed decision-table export."""

from __future__ import annotations

import itertools
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from project_paths import ROOT

from curation.cleanup import hide_caption, hide_image, unhide_image
from curation.decisions import record_decision, undo_last
from curation.exporters import tables
from curation.stats import stats
from curation.store import add_caption, add_image
from curation.views import ImageFilter, ImageRow, filter_values, image_ids, list_images
from scorer.search_index import CorpusSearch
from ui import browse

DEMO = ROOT / "assets" / "demo"
CLASSES = ("farm", "forest", "harbor")
SOURCES = ("human", "import", "model:x")


def _fill(conn, images: int = 40) -> None:
    """Images in three classes and two splits, 0-3 captions from three sources, two annotators who
    sometimes disagree, an undone verdict, hidden images and captions."""
    rng = np.random.default_rng(7)
    for i in range(images):
        img = add_image(conn, f"imgs/x_{i:03d}.png", cls=CLASSES[i % 3] if i % 7 else None,
                        split=("train", "test")[i % 2])
        caps = [add_caption(conn, img, f"caption {i} {j}, \"quoted\"\nline", SOURCES[(i + j) % 3])
                for j in range(i % 4)]
        for cap in caps:
            for who in ("alice", "bob"):
                if rng.random() < 0.4:
                    record_decision(conn, img, cap, str(rng.choice(["accept", "reject", "best"])), who)
        if caps and i % 5 == 0:
            record_decision(conn, img, caps[0], "reject", "carol")
            undo_last(conn, "carol")
        if i % 6 == 1:
            hide_image(conn, img, "lead")
        if len(caps) > 1 and i % 4 == 3:
            hide_caption(conn, caps[1], "lead")


def _reference(conn, flt: ImageFilter) -> list[ImageRow]:
    """list_images by brute force over the raw tables."""
    undone = {r[0] for r in conn.execute("SELECT undoes FROM decisions WHERE undoes IS NOT NULL")}
    latest: dict[tuple[int, str], tuple[int, str]] = {}
    judged: dict[int, set[str]] = defaultdict(set)
    for did, img, cap, verdict, who in conn.execute(
            "SELECT id, image_id, caption_id, verdict, annotator FROM decisions ORDER BY id"):
        if did not in undone and verdict in ("accept", "reject", "best"):
            latest[(cap, who)] = (img, verdict)
            judged[img].add(who)
    polarity: dict[int, set[bool]] = defaultdict(set)
    for (cap, _), (img, verdict) in latest.items():
        polarity[cap].add(verdict == "reject")
    disputed = {img for (cap, _), (img, _) in latest.items() if len(polarity[cap]) > 1}
    captions = conn.execute("SELECT image_id, source, hidden FROM captions").fetchall()
    rows = []
    for i, path, cls, split, n_ann, hidden in conn.execute(
            "SELECT id, path, class, split, n_annotators, hidden FROM images ORDER BY id"):
        visible = [source for img, source, h in captions if img == i and not h]
        keep = ((flt.hidden is None or hidden == flt.hidden) and flt.cls in (None, cls)
                and flt.split in (None, split) and (flt.annotator is None or flt.annotator in judged[i])
                and (flt.source is None or flt.source in visible)
                and {None: True, "unlabelled": n_ann == 0, "labelled": n_ann > 0,
                     "disputed": n_ann > 0 and i in disputed}[flt.status])
        if keep:
            rows.append(ImageRow(i, path, cls, split, len(visible), n_ann))
    end = None if flt.limit is None else flt.offset + flt.limit
    return rows[flt.offset:end]


FILTERS = [ImageFilter(cls=c, status=s, annotator=a, source=src, hidden=h)
           for c, s, a, src, h in itertools.product((None, "forest"), (None, "unlabelled", "labelled", "disputed"),
                                                    (None, "bob"), (None, "import"), (False, None))]


def test_list_images_pages_and_filters_in_sql_give_the_brute_force_rows(conn):
    _fill(conn)
    assert list_images(conn, ImageFilter(status="disputed"))  # the store has every case
    for flt in FILTERS:
        for limit, offset in ((None, 0), (5, 0), (5, 3), (None, 4), (100, 0), (3, 1000)):
            page = ImageFilter(**{**flt.__dict__, "limit": limit, "offset": offset})
            expected = _reference(conn, page)
            assert list_images(conn, page) == expected, page
            assert image_ids(conn, page).tolist() == [row.id for row in expected], page
    wanted = [3, 5, 8, 13, 1000]
    assert list_images(conn, ImageFilter(hidden=None), ids=wanted) == [
        row for row in _reference(conn, ImageFilter(hidden=None)) if row.id in wanted]


def test_filter_values_equal_the_full_statistics_and_follow_new_captions(conn):
    _fill(conn)
    summary = stats(conn)
    visible_classes = sorted({row.cls for row in _reference(conn, ImageFilter()) if row.cls})
    assert filter_values(conn) == {"class": visible_classes, "status": ["unlabelled", "labelled", "disputed"],
                                   "annotator": sorted(summary["per_annotator"]),
                                   "source": sorted(summary["captions_by_source"])}
    add_caption(conn, 2, "a fresh caption", "rsicap")
    add_image(conn, "imgs/new.png", cls="zoo")
    values = filter_values(conn)
    assert "rsicap" in values["source"] and "zoo" in values["class"]


def _demo_store(conn, names: list[str]) -> None:
    for k, name in enumerate(names):
        add_image(conn, f"imgs/{name}", cls=CLASSES[k % 3])


def _brute_search(scorer, conn, query: str, ids: list[int], k: int) -> list[int]:
    paths = dict(conn.execute("SELECT id, path FROM images").fetchall())
    vectors = scorer.embed_images([str(DEMO / paths[i]) for i in ids]).numpy()
    scores = vectors @ scorer.embed_texts([query]).numpy()[0]
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


class _Services:
    def __init__(self, conn, scorer):
        self._conn, self.scorer = conn, scorer

    def conn(self):
        return self._conn

    @contextmanager
    def using_model(self):
        yield self.scorer, 1

    def image_path(self, rel):
        return DEMO / rel


def test_browse_search_with_and_without_filters_ranks_the_right_rows(conn, tiny_scorer, monkeypatch):
    names = sorted(p.name for p in (DEMO / "imgs").glob("*.png"))
    _demo_store(conn, names[:20])
    for img in (2, 5, 9):
        hide_image(conn, img, "lead")
    index = CorpusSearch(tiny_scorer, "image")
    monkeypatch.setattr(browse, "corpus_search", lambda scorer, kind: index)
    services, query = _Services(conn, tiny_scorer), "buildings with red roofs"
    visible = image_ids(conn).tolist()
    table, gallery, ids = browse.search(services, query, limit=6)
    assert ids == _brute_search(tiny_scorer, conn, query, visible, 6) and len(gallery) == 6
    assert table["score"].tolist() == sorted(table["score"], reverse=True)
    forest = image_ids(conn, ImageFilter(cls="forest")).tolist()
    _, _, ids = browse.search(services, query, cls="forest", limit=4)
    assert ids == _brute_search(tiny_scorer, conn, query, forest, 4)
    _, _, ids = browse.search(services, "", cls="forest", limit=4)
    assert ids == forest[:4]  # no query: by id, paged in SQL
    assert browse.search(services, query, cls="no such class")[2] == []
    # everything is in the index: a repeated search lists nothing and embeds nothing
    monkeypatch.setattr(index.index, "missing", lambda ids: pytest.fail("listed the corpus again"))
    assert browse.cover(conn, index, services.image_path) == 0
    monkeypatch.undo()
    monkeypatch.setattr(browse, "corpus_search", lambda scorer, kind: index)
    # images added and unhidden later are embedded by the next search, nothing else
    _demo_store(conn, names[20:])
    unhide_image(conn, 5, "lead")
    assert browse.cover(conn, index, services.image_path) == len(names) - 20 + 1
    visible = image_ids(conn).tolist()
    _, _, ids = browse.search(services, query, limit=len(names))
    assert ids == _brute_search(tiny_scorer, conn, query, visible, len(names)) and len(ids) == len(visible)


def test_streamed_decision_tables_equal_the_whole_table(conn, tmp_path, monkeypatch):
    _fill(conn, 30)
    whole = tables.caption_table(conn)
    assert len(whole) > 10 and whole["verdict"].notna().any()
    monkeypatch.setattr(tables, "CHUNK_ROWS", 4)  # many chunks
    report = tables.export_table(conn, tmp_path / "d.csv", kind="csv")
    assert report.records == len(whole)
    assert (tmp_path / "d.csv").read_text() == whole.to_csv(index=False)
    report = tables.export_table(conn, tmp_path / "d.parquet", kind="parquet")
    back = pd.read_parquet(tmp_path / "d.parquet")
    assert report.records == len(whole) and list(back.columns) == tables.COLUMNS

    def cells(frame):
        return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]

    assert cells(back) == cells(whole)
    empty = tables.export_table(conn, tmp_path / "none.parquet", tables.TripletFilter(annotator="nobody"),
                                kind="parquet")
    assert empty.records == 0 and len(pd.read_parquet(tmp_path / "none.parquet")) == 0


def test_an_export_that_fails_midway_leaves_the_old_file_and_no_temporary(conn, tmp_path, monkeypatch):
    _fill(conn, 30)
    out = tmp_path / "d.parquet"
    out.write_bytes(b"old")
    real = tables.iter_chunks

    def broken(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise OSError("disk full")

    monkeypatch.setattr(tables, "iter_chunks", broken)
    monkeypatch.setattr(tables, "CHUNK_ROWS", 4)
    for kind in ("parquet", "csv"):
        with pytest.raises(OSError, match="disk full"):
            tables.export_table(conn, out.with_suffix(f".{kind}"), kind=kind)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.db"))
    assert out.read_bytes() == b"old" and left == ["d.parquet"]
