"""Triplets (image, positive caption, negative caption): derived from decisions, or imported.

Derivation, per image and annotator, from that annotator's effective decisions (the latest verdict on
each caption, undone ones left out):

* every accepted or best caption × every rejected caption → provenance ``decision``;
* every edit recorded with ``makes_triplet`` → (new text, old text), provenance ``edit``;
* a reviewer's resolution in force on a caption (:mod:`curation.resolutions`) replaces the annotator's
  verdict on it; the pairs that rest on a resolved caption get provenance ``resolution``.

Derived rows (origin ``derived``) are rebuilt by :func:`rebuild_derived` in the same transaction as the
decision that changes them, so they always equal what the decision log implies; undo restores the
previous set. Annotators are never merged: two people who disagree give two sets of triplets.
Imported triplets (origin ``import``) are stored as read and never rebuilt.

Triplets whose image, positive or negative is hidden (:mod:`curation.cleanup`) stay in the table but are
left out of every listing and export here, so they come back on unhide.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from common.formats import ReadmeTriplet
from curation.resolutions import resolutions_in_force, resolved_verdict

POSITIVE = ("accept", "best")
NEGATIVE = ("reject",)
VISIBLE = "i.hidden = 0 AND p.hidden = 0 AND n.hidden = 0"  # over aliases i (image), p / n (captions)


@dataclass(frozen=True)
class TripletFilter:
    """Which records to read or export (also used for best-captions and table exports).

    ``human_only`` keeps what people decided in this store (no imported triplets or captions choices);
    ``annotator`` / ``source`` restrict to one annotator / to captions whose source is one of these;
    ``since`` / ``until`` are ISO dates or times, both inclusive (``"2025-03-01"`` covers that day);
    ``split`` restricts to images of that split.
    """

    human_only: bool = False
    annotator: str | None = None
    source: tuple[str, ...] | None = None
    since: str | None = None
    until: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class Triplet:
    id: int
    image_id: int
    image: str
    cls: str | None
    positive_id: int
    positive: str
    negative_id: int
    negative: str
    origin: str
    provenance: str
    annotator: str | None
    position: int | None
    created_at: str


def effective_verdicts(conn: sqlite3.Connection, image_id: int, annotator: str) -> dict[int, tuple[str, str]]:
    """caption id → (latest verdict, its time) for one annotator on one image, undone decisions left out."""
    rows = conn.execute(
        "SELECT caption_id, verdict, created_at FROM effective_decisions"
        " WHERE image_id = ? AND annotator = ? AND verdict IN ('accept', 'reject', 'best') ORDER BY id",
        (image_id, annotator),
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def rebuild_derived(conn: sqlite3.Connection, image_id: int, annotator: str) -> int:
    """Replace the derived triplets of (image, annotator) by what the decision log implies; return count.

    Call inside the transaction that wrote the decision.
    """
    resolved = resolutions_in_force(conn, image_id)
    verdicts = {
        c: (resolved_verdict(c, v, image_id, resolved), max(t, resolved[c].created_at) if c in resolved else t)
        for c, (v, t) in effective_verdicts(conn, image_id, annotator).items()
    }
    positives = [(c, t) for c, (v, t) in verdicts.items() if v in POSITIVE]
    negatives = [(c, t) for c, (v, t) in verdicts.items() if v in NEGATIVE]
    rows = [
        (image_id, p, n, "resolution" if p in resolved or n in resolved else "decision", annotator, max(tp, tn))
        for p, tp in positives
        for n, tn in negatives
        if p != n
    ]
    edits = conn.execute(
        "SELECT e.new_caption_id, e.old_caption_id, d.created_at FROM effective_decisions d"
        " JOIN edits e ON e.decision_id = d.id WHERE d.image_id = ? AND d.annotator = ? AND e.makes_triplet = 1",
        (image_id, annotator),
    ).fetchall()
    rows += [(image_id, new, old, "edit", annotator, t) for new, old, t in edits]
    conn.execute(
        "DELETE FROM triplets WHERE image_id = ? AND annotator = ? AND origin = 'derived'",
        (image_id, annotator),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO triplets(image_id, positive_id, negative_id, origin, provenance, annotator,"
        " created_at) VALUES (?, ?, ?, 'derived', ?, ?, ?)",
        rows,
    )
    return len(rows)


def add_imported_triplets(
    conn: sqlite3.Connection, rows: Iterable[tuple[int, int, int, str, int, str]]
) -> int:
    """Insert (image_id, positive_id, negative_id, provenance, position, created_at) rows; skip present ones.

    Returns how many were new.
    """
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO triplets(image_id, positive_id, negative_id, origin, provenance, position,"
        " created_at) VALUES (?, ?, ?, 'import', ?, ?, ?)",
        rows,
    )
    return conn.total_changes - before


def filter_sql(flt: TripletFilter, time_column: str, annotator_column: str | None) -> tuple[str, list]:
    """SQL conditions (joined by AND, starting with ``1``) and parameters for a filter.

    Expects the images table as ``i``; ``time_column`` / ``annotator_column`` name the record's columns.
    """
    sql, params = ["1"], []
    if flt.annotator is not None and annotator_column:
        sql.append(f"{annotator_column} = ?")
        params.append(flt.annotator)
    if flt.since:
        sql.append(f"{time_column} >= ?")
        params.append(flt.since)
    if flt.until:
        sql.append(f"substr({time_column}, 1, length(?)) <= ?")
        params += [flt.until, flt.until]
    if flt.split is not None:
        sql.append("i.split = ?")
        params.append(flt.split)
    return " AND ".join(sql), params


def _source_sql(flt: TripletFilter, *aliases: str) -> tuple[str, list]:
    if not flt.source:
        return "1", []
    marks = ",".join("?" * len(flt.source))
    return " AND ".join(f"{a}.source IN ({marks})" for a in aliases), list(flt.source) * len(aliases)


def list_triplets(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> list[Triplet]:
    """Triplets matching ``flt`` in insertion order (imported files keep their order).

    A source filter keeps triplets whose positive and negative both come from one of the sources.
    """
    return list(iter_triplets(conn, flt or TripletFilter()))


def triplet_query(flt: TripletFilter, columns: str, order: str = "t.id") -> tuple[str, list]:
    """SQL selecting ``columns`` of the triplets matching ``flt`` (aliases: t, i image, p / n captions)."""
    where, params = filter_sql(flt, "t.created_at", "t.annotator")
    source_where, source_params = _source_sql(flt, "p", "n")
    origin = "t.origin = 'derived'" if flt.human_only else "1"
    sql = (
        f"SELECT {columns} FROM triplets t JOIN images i ON i.id = t.image_id"
        " JOIN captions p ON p.id = t.positive_id JOIN captions n ON n.id = t.negative_id"
        f" WHERE {where} AND {source_where} AND {origin} AND {VISIBLE} ORDER BY {order}"
    )
    return sql, params + source_params


def iter_triplets(conn: sqlite3.Connection, flt: TripletFilter, order: str = "t.id") -> Iterator[Triplet]:
    columns = (
        "t.id, t.image_id, i.path, i.class, t.positive_id, p.text, t.negative_id, n.text, t.origin,"
        " t.provenance, t.annotator, t.position, t.created_at"
    )
    sql, params = triplet_query(flt, columns, order)
    for row in conn.execute(sql, params):
        yield Triplet(*row)


def triplet_records(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> list[dict]:
    """Triplets as records of the README format (docs/formats.md): what the trainer reads."""
    return list(iter_records(conn, flt or TripletFilter()))


def iter_records(conn: sqlite3.Connection, flt: TripletFilter) -> Iterator[dict]:
    sql, params = triplet_query(flt, "i.path, p.text, n.text, t.provenance")
    for image, positive, negative, provenance in conn.execute(sql, params):
        yield ReadmeTriplet(image, positive, negative, provenance).to_json()
