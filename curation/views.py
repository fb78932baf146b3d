"""Read-only views for the app: one image's captions with everyone's verdicts, image lists, counters.

Hidden images and captions (:mod:`curation.cleanup`) are left out unless a view is asked to include them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from curation.queue import queue_model

STATUSES = ("unlabelled", "labelled", "disputed")
_VERDICT = "verdict IN ('accept', 'reject', 'best')"


@dataclass(frozen=True)
class CaptionRow:
    id: int
    text: str
    source: str
    author: str | None
    created_at: str
    verdicts: dict[str, str] = field(default_factory=dict)  # annotator → latest effective verdict
    score: float | None = None  # under the model asked for (default: the queue's model)
    edit_of: int | None = None  # the caption this one was edited from
    hidden: bool = False  # listed only when image_captions is asked to include hidden captions


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: str
    cls: str | None
    split: str | None
    n_captions: int
    n_annotators: int


@dataclass(frozen=True)
class ImageFilter:
    """``status`` is one of unlabelled / labelled / disputed (annotators disagree on a caption).

    ``hidden``: False lists visible images only, True hidden ones only, None both.
    """

    cls: str | None = None
    status: str | None = None
    annotator: str | None = None
    source: str | None = None
    split: str | None = None
    limit: int | None = None
    offset: int = 0
    hidden: bool | None = False

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"image status {self.status!r} is not one of {', '.join(STATUSES)}")


def latest_verdicts(
    conn: sqlite3.Connection, image_id: int | None = None
) -> dict[tuple[int, int], dict[str, str]]:
    """(image id, caption id) → {annotator: latest effective verdict}, for one image or all."""
    where, params = ("d.image_id = ? AND ", (image_id,)) if image_id is not None else ("", ())
    out: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
    for img, cap, who, verdict in conn.execute(
        "SELECT image_id, caption_id, annotator, verdict FROM effective_decisions d"
        f" WHERE {where}{_VERDICT} ORDER BY id",
        params,
    ):
        out[(img, cap)][who] = verdict
    return dict(out)


def image_captions(
    conn: sqlite3.Connection, image_id: int, model_version: int | None = None, include_hidden: bool = False
) -> list[CaptionRow]:
    """Captions of an image in insertion order, with every annotator's latest verdict and the score under
    ``model_version`` (default: the queue's model, see :mod:`curation.queue`); hidden captions only with
    ``include_hidden``."""
    verdicts = latest_verdicts(conn, image_id)
    model = model_version if model_version is not None else queue_model(conn)
    rows = conn.execute(
        "SELECT c.id, c.text, c.source, c.author, c.created_at,"
        " (SELECT s.score FROM scores s WHERE s.model_version_id = ? AND s.caption_id = c.id),"
        " (SELECT e.old_caption_id FROM edits e WHERE e.new_caption_id = c.id LIMIT 1), c.hidden"
        " FROM captions c WHERE c.image_id = ? AND (? OR c.hidden = 0) ORDER BY c.id",
        (model, image_id, int(include_hidden)),
    ).fetchall()
    return [
        CaptionRow(
            id=r[0],
            text=r[1],
            source=r[2],
            author=r[3],
            created_at=r[4],
            verdicts=verdicts.get((image_id, r[0]), {}),
            score=r[5],
            edit_of=r[6],
            hidden=bool(r[7]),
        )
        for r in rows
    ]


def disputed_images(conn: sqlite3.Connection) -> set[int]:
    """Images where two annotators' latest verdicts on one caption differ in polarity."""
    return {
        img for (img, _), by in latest_verdicts(conn).items() if len({v == "reject" for v in by.values()}) > 1
    }


def _filter_sql(conn: sqlite3.Connection, flt: ImageFilter, ids: Collection[int] | None) -> tuple[str, list]:
    """``flt`` (and ``ids``) as one WHERE clause over ``images i``, the disputed status included."""
    sql, params = ["1"], []
    if flt.hidden is not None:
        sql.append("i.hidden = ?")
        params.append(int(flt.hidden))
    if flt.cls is not None:
        sql.append("i.class = ?")
        params.append(flt.cls)
    if flt.split is not None:
        sql.append("i.split = ?")
        params.append(flt.split)
    if flt.status == "unlabelled":
        sql.append("+i.n_annotators = 0")  # '+': walk the images in id order, not the queue's index
    elif flt.status in ("labelled", "disputed"):
        sql.append("i.n_annotators > 0")
    if flt.status == "disputed":  # its cost grows with the decisions, not the images
        disputed = disputed_images(conn)
        ids = disputed if ids is None else disputed.intersection(ids)
    if ids is not None:
        sql.append("i.id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(sorted({int(i) for i in ids})))
    if flt.annotator is not None:
        sql.append(f"i.id IN (SELECT d.image_id FROM effective_decisions d WHERE d.annotator = ? AND {_VERDICT})")
        params.append(flt.annotator)
    if flt.source is not None:
        sql.append("EXISTS (SELECT 1 FROM captions c WHERE c.image_id = i.id AND c.source = ? AND c.hidden = 0)")
        params.append(flt.source)
    return " AND ".join(sql), params


def _page(flt: ImageFilter) -> tuple[str, list]:
    if flt.limit is None and not flt.offset:
        return "", []
    return " LIMIT ? OFFSET ?", [-1 if flt.limit is None else flt.limit, flt.offset]


def list_images(
    conn: sqlite3.Connection, flt: ImageFilter | None = None, ids: Collection[int] | None = None
) -> list[ImageRow]:
    """Images matching the filter (and among ``ids`` when given), by id; the page (limit, offset) is cut in
    SQL and the captions are counted for the returned rows only."""
    flt = flt or ImageFilter()
    where, params = _filter_sql(conn, flt, ids)
    page, page_params = _page(flt)
    rows = conn.execute(
        "SELECT i.id, i.path, i.class, i.split,"
        " (SELECT COUNT(*) FROM captions c WHERE c.image_id = i.id AND c.hidden = 0), i.n_annotators"
        f" FROM (SELECT i.* FROM images i WHERE {where} ORDER BY i.id{page}) i ORDER BY i.id",
        params + page_params,
    ).fetchall()
    return [ImageRow(*row) for row in rows]


def image_ids(conn: sqlite3.Connection, flt: ImageFilter | None = None) -> np.ndarray:
    """Ids (int64) of the images matching the filter, by id, the page applied: a light query, e.g. for
    the ``allowed`` ids of a filtered search (1M ids in ~0.4 s: one concatenated string, not 1M rows)."""
    flt = flt or ImageFilter()
    where, params = _filter_sql(conn, flt, None)
    page, page_params = _page(flt)
    (text,) = conn.execute(
        f"SELECT group_concat(id) FROM (SELECT i.id FROM images i WHERE {where} ORDER BY i.id{page})",
        params + page_params,
    ).fetchone()
    return np.fromstring(text, dtype=np.int64, sep=",") if text else np.zeros(0, dtype=np.int64)


_SOURCES: dict[str, tuple[int, frozenset[str]]] = {}  # store file → (highest caption id read, sources)


def caption_sources(conn: sqlite3.Connection) -> list[str]:
    """Sources of the store's captions, sorted. Captions have no index on source (20M captions: 6 s to
    scan), and a caption's source never changes, so each store's sources are kept here and only the
    captions added since the last call are read."""
    file = conn.execute("PRAGMA database_list").fetchone()[2]
    (top,) = conn.execute("SELECT ifnull(max(id), 0) FROM captions").fetchone()
    seen, known = _SOURCES.get(file, (0, frozenset()))
    if not file or seen > top:  # an in-memory store, or another store at this path: read them all
        seen, known = 0, frozenset()
    fresh = {row[0] for row in conn.execute("SELECT DISTINCT source FROM captions WHERE id > ? AND id <= ?",
                                            (seen, top))}
    known = known | fresh
    if file:
        _SOURCES[file] = (top, known)
    return sorted(known)


def filter_values(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Values an :class:`ImageFilter` can take in this store, sorted: ``class`` (of visible images),
    ``status``, ``annotator`` (with any action) and ``source`` (of captions); cheap at 1M images."""
    classes = conn.execute(
        "SELECT k.class FROM class_counts k WHERE k.class != '' AND k.images > 0"
        " AND EXISTS (SELECT 1 FROM images i WHERE i.class = k.class AND i.hidden = 0) ORDER BY k.class"
    ).fetchall()
    annotators = conn.execute(
        "SELECT DISTINCT annotator FROM decisions ORDER BY annotator"  # as in stats: undone actions count
    ).fetchall()
    return {"class": [row[0] for row in classes], "status": list(STATUSES),
            "annotator": [row[0] for row in annotators], "source": caption_sources(conn)}


def to_frame(rows: list) -> pd.DataFrame:
    """Any list of these dataclasses as a DataFrame (e.g. for a Gradio table)."""
    return pd.DataFrame([asdict(row) for row in rows])


def counters(conn: sqlite3.Connection, annotator: str) -> dict[str, int]:
    """done: images decided by anyone; total: images; mine: images ``annotator`` decided;
    today: images ``annotator`` decided since 00:00 UTC. Hidden images count in none of them."""
    done, total = conn.execute("SELECT SUM(n_annotators > 0), COUNT(*) FROM images WHERE hidden = 0").fetchone()
    today = datetime.now(timezone.utc).date().isoformat()
    mine, mine_today = conn.execute(
        "SELECT COUNT(DISTINCT image_id), COUNT(DISTINCT CASE WHEN created_at >= ? THEN image_id END)"
        " FROM effective_decisions WHERE annotator = ? AND verdict != 'undo'"
        " AND image_id NOT IN (SELECT id FROM images WHERE hidden = 1)",
        (today, annotator),
    ).fetchone()
    return {"done": done or 0, "total": total, "mine": mine, "today": mine_today}


def store_mark(conn: sqlite3.Connection) -> tuple[str, tuple[int, int]]:
    """The store's file name and its (highest image id, highest visibility-log id): what changed since a mark."""
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    return name, tuple(conn.execute("SELECT (SELECT ifnull(max(id), 0) FROM images),"
                                    " (SELECT ifnull(max(id), 0) FROM visibility_log)").fetchone())


def images_visible_since(conn: sqlite3.Connection, seen: tuple[int, int],
                         top: tuple[int, int]) -> list[tuple[int, str]]:
    """(id, path) of visible images added after mark ``seen`` up to ``top``, and of those unhidden meanwhile."""
    return conn.execute(
        "SELECT id, path FROM images WHERE hidden = 0 AND id > ? AND id <= ? UNION"
        " SELECT i.id, i.path FROM visibility_log v JOIN images i ON i.id = v.image_id"
        " WHERE v.id > ? AND v.id <= ? AND v.action = 'unhide' AND i.hidden = 0",
        (seen[0], top[0], seen[1], top[1])).fetchall()
