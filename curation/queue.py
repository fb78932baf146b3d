"""Annotation queue: which image an annotator sees next, and leases so no two people get the same one.

Order (:func:`next_image`):

1. the annotator's own unexpired lease on an image they have not decided yet (a reload shows the
   same image);
2. with ``overlap_share`` > 0: images already decided by exactly one other annotator that fall in the
   overlap share (a fixed pseudo-random subset of ids) — the second opinions behind the agreement in
   ``stats``; they can only come after a first annotator, and are bounded by the share;
3. unlabelled images (no effective decision by anyone) in the options' ``order``: ``"uncertainty"``,
   most uncertain first (smallest margin between the two best caption scores of the queue's model,
   unscored images last, then by id); ``"random"``, a fixed pseudo-random order drawn from ``seed``
   (the same for every annotator: leases keep them apart).

Hidden images (:mod:`curation.cleanup`) are never handed out, and hidden captions take no part in the
margins.

With ``class_balance`` the image comes from the class with the fewest decided (or leased) images that
still has a candidate. Selection and lease happen in one ``BEGIN IMMEDIATE`` transaction, so two
annotators (threads or processes) never hold the same image at once.

The queue's model is the active model version; before any is active, the newest model version that
:func:`record_scores` was given. Its margins are copied onto ``images.queue_margin`` so the order is an
index scan.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from curation.store import transaction

OVERLAP_BUCKETS = 10_000
_HASH = 2654435761  # Knuth's multiplicative hash: spreads consecutive ids over the buckets
ORDERS = ("uncertainty", "random")
_ORDER_SQL = {"uncertainty": "i.queue_margin, i.id", "random": "queue_key(:seed, i.id)"}


@dataclass(frozen=True)
class QueueOptions:
    """How the queue hands out images (the app uses class balance: ``loop.services.AppConfig.queue``)."""

    lease_seconds: float = 900.0
    class_balance: bool = False
    overlap_share: float = 0.0
    order: str = "uncertainty"  # one of ORDERS
    seed: int = 0  # of the "random" order

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {self.lease_seconds}")
        if not 0.0 <= self.overlap_share <= 1.0:
            raise ValueError(f"overlap_share must lie in [0, 1], got {self.overlap_share}")
        if self.order not in ORDERS:
            raise ValueError(f"queue order {self.order!r} is not one of {', '.join(ORDERS)}")


def queue_key(seed: int, image_id: int) -> int:
    """An image's place in the seeded random order (a hash: the same seed gives the same order)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=7).digest(), "big")


_MINE = (
    "EXISTS (SELECT 1 FROM effective_decisions d WHERE d.image_id = i.id AND d.annotator = :who"
    " AND d.verdict != 'undo')"
)
_FREE = "NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = i.id)"


def next_image(
    conn: sqlite3.Connection,
    annotator: str,
    options: QueueOptions | None = None,
    exclude: Collection[int] = (),
) -> int | None:
    """Lease the next image to ``annotator`` and return its id, or ``None`` when nothing is left.

    ``exclude`` lists image ids to pass over (e.g. ones the annotator skipped in this session).
    """
    opts = options or QueueOptions()
    if not annotator or not annotator.strip():
        raise ValueError("annotator name is empty")
    now = time.time()
    params = {"who": annotator, "share": opts.overlap_share * OVERLAP_BUCKETS}
    skip = f"AND i.id NOT IN ({','.join(str(int(i)) for i in exclude)})" if exclude else ""
    with transaction(conn):
        row = conn.execute(
            f"SELECT i.id FROM leases l JOIN images i ON i.id = l.image_id WHERE l.annotator = :who"
            f" AND l.expires_at > :now AND i.hidden = 0 {skip} AND NOT {_MINE} LIMIT 1",
            {**params, "now": now},
        ).fetchone()
        image_id = row[0] if row else None
        if image_id is None:
            conn.execute("DELETE FROM leases WHERE annotator = ? OR expires_at <= ?", (annotator, now))
            image_id = _pick(conn, opts, params, skip)
        if image_id is not None:
            conn.execute(
                "INSERT OR REPLACE INTO leases(image_id, annotator, expires_at) VALUES (?, ?, ?)",
                (image_id, annotator, now + opts.lease_seconds),
            )
        return image_id


def _pick(conn: sqlite3.Connection, opts: QueueOptions, params: dict, skip: str) -> int | None:
    pools = []
    if opts.overlap_share > 0:
        pools.append(f"i.n_annotators = 1 AND (i.id * {_HASH}) % {OVERLAP_BUCKETS} < :share AND NOT {_MINE}")
    pools.append("i.n_annotators = 0")
    conn.create_function("queue_key", 2, queue_key, deterministic=True)
    for pool in pools:
        classes = _classes_by_need(conn) if opts.class_balance else [None]
        for cls in classes:
            class_sql = (
                ""
                if not opts.class_balance
                else ("AND i.class IS NULL" if cls is None else "AND i.class = :cls")
            )
            row = conn.execute(
                f"SELECT i.id FROM images i WHERE {pool} {class_sql} AND i.hidden = 0 AND {_FREE} {skip}"
                f" ORDER BY {_ORDER_SQL[opts.order]} LIMIT 1",
                {**params, "cls": cls, "seed": opts.seed},
            ).fetchone()
            if row:
                return row[0]
    return None


def _classes_by_need(conn: sqlite3.Connection) -> list[str | None]:
    """Classes that still have undecided images, fewest decided-or-leased images first."""
    leased = Counter(
        row[0]
        for row in conn.execute(
            "SELECT ifnull((SELECT i.class FROM images i WHERE i.id = l.image_id), '') FROM leases l"
        )
    )
    rows = conn.execute("SELECT class, decided FROM class_counts WHERE images > decided").fetchall()
    ranked = sorted(rows, key=lambda row: (row[1] + leased.get(row[0], 0), row[0]))
    return [row[0] or None for row in ranked]


def release_lease(conn: sqlite3.Connection, image_id: int, annotator: str) -> bool:
    """Give back ``annotator``'s lease on an image; return whether there was one."""
    with transaction(conn):
        cursor = conn.execute(
            "DELETE FROM leases WHERE image_id = ? AND annotator = ?", (image_id, annotator)
        )
        return cursor.rowcount > 0


def queue_model(conn: sqlite3.Connection) -> int | None:
    """The model version whose margins order the queue (see module docstring)."""
    row = conn.execute("SELECT id FROM model_versions WHERE active = 1").fetchone()
    if row:
        return row[0]
    return conn.execute("SELECT max(model_version_id) FROM margins").fetchone()[0]


def record_scores(
    conn: sqlite3.Connection, model_version: int, scores: Iterable[tuple[int, int, float]]
) -> int:
    """Store (image_id, caption_id, score) from model ``model_version`` and refresh the margins.

    A score given again replaces the earlier one of the same model. Raises ``ValueError`` naming the
    first caption that does not exist or does not belong to the given image; nothing is then stored.
    """
    rows = [(int(i), int(c), float(s)) for i, c, s in scores]
    with transaction(conn):
        if conn.execute("SELECT 1 FROM model_versions WHERE id = ?", (model_version,)).fetchone() is None:
            raise ValueError(f"model version {model_version} does not exist")
        before = conn.total_changes
        conn.executemany(
            "INSERT OR REPLACE INTO scores(model_version_id, caption_id, image_id, score)"
            " SELECT ?, c.id, c.image_id, ? FROM captions c WHERE c.id = ? AND c.image_id = ?",
            [(model_version, s, c, i) for i, c, s in rows],
        )
        if conn.total_changes - before != len(rows):
            _raise_bad_score(conn, rows)
        images = sorted({i for i, _, _ in rows})
        _refresh_margins(conn, model_version, images)
        return len(rows)


def _raise_bad_score(conn: sqlite3.Connection, rows: list[tuple[int, int, float]]) -> None:
    for image_id, caption_id, _ in rows:
        row = conn.execute("SELECT image_id FROM captions WHERE id = ?", (caption_id,)).fetchone()
        if row is None or row[0] != image_id:
            raise ValueError(f"score for caption {caption_id}: no such caption on image {image_id}")
    raise ValueError("scores list the same caption twice")


def _refresh_margins(conn: sqlite3.Connection, model_version: int, images: list[int]) -> None:
    margins = []
    for image_id in images:
        top = conn.execute(
            "SELECT s.score FROM scores s JOIN captions c ON c.id = s.caption_id"
            " WHERE s.model_version_id = ? AND s.image_id = ? AND c.hidden = 0 ORDER BY s.score DESC LIMIT 2",
            (model_version, image_id),
        ).fetchall()
        margins.append((model_version, image_id, top[0][0] - top[1][0] if len(top) == 2 else None))
    conn.executemany(
        "INSERT OR REPLACE INTO margins(model_version_id, image_id, margin) VALUES (?,?,?)", margins
    )
    if queue_model(conn) == model_version:
        conn.executemany(
            "UPDATE images SET queue_margin = coalesce(?, 9e999) WHERE id = ?",
            [(m, i) for _, i, m in margins],
        )


def refresh_image_margins(conn: sqlite3.Connection, image_id: int) -> None:
    """Recompute an image's margins under every model that scored it (after a caption is hidden or shown)."""
    models = conn.execute("SELECT DISTINCT model_version_id FROM scores WHERE image_id = ?", (image_id,))
    for (model_version,) in models.fetchall():
        _refresh_margins(conn, model_version, [image_id])


def refresh_queue_order(conn: sqlite3.Connection) -> None:
    """Copy the queue model's margins onto the images (after the active model changes)."""
    model = queue_model(conn)
    with transaction(conn):
        conn.execute(
            "UPDATE images SET queue_margin = coalesce((SELECT g.margin FROM margins g"
            " WHERE g.model_version_id = ? AND g.image_id = images.id), 9e999)",
            (model,),
        )
