"""Read-only views for the app: one image's captions with everyone's verdicts, image lists, counters.

Hidden images and captions (:mod:`curation.cleanup`) are left out unless a view is asked to include them.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

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


def list_images(conn: sqlite3.Connection, flt: ImageFilter | None = None) -> list[ImageRow]:
    """Images matching the filter, by id."""
    flt = flt or ImageFilter()
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
        sql.append("i.n_annotators = 0")
    elif flt.status in ("labelled", "disputed"):
        sql.append("i.n_annotators > 0")
    if flt.annotator is not None:
        sql.append(
            f"EXISTS (SELECT 1 FROM effective_decisions d WHERE d.image_id = i.id AND d.annotator = ? AND {_VERDICT})"
        )
        params.append(flt.annotator)
    if flt.source is not None:
        sql.append("EXISTS (SELECT 1 FROM captions c WHERE c.image_id = i.id AND c.source = ? AND c.hidden = 0)")
        params.append(flt.source)
    rows = conn.execute(
        "SELECT i.id, i.path, i.class, i.split,"
        " (SELECT COUNT(*) FROM captions c WHERE c.image_id = i.id AND c.hidden = 0),"
        f" i.n_annotators FROM images i WHERE {' AND '.join(sql)} ORDER BY i.id",
        params,
    ).fetchall()
    images = [ImageRow(*row) for row in rows]
    if flt.status == "disputed":
        disputed = disputed_images(conn)
        images = [row for row in images if row.id in disputed]
    end = None if flt.limit is None else flt.offset + flt.limit
    return images[flt.offset : end]


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
