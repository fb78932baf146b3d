"""Human decisions: verdicts, edits and undo, all appended to one log that is never rewritten.

Each function runs in one ``BEGIN IMMEDIATE`` transaction that writes the log row, rebuilds the
derived triplets of that image and annotator, and refreshes the image's annotator count (used by
the queue). Undo appends a row (verdict ``undo``) pointing at the decision it cancels.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from curation.store import add_caption, now_iso, transaction
from curation.triplets import rebuild_derived

VERDICTS = ("accept", "reject", "best")
UNDO_DEPTH = 10


@dataclass(frozen=True)
class Decision:
    id: int
    image_id: int
    caption_id: int
    verdict: str
    annotator: str
    model_version_id: int | None
    score_shown: float | None
    undoes: int | None
    created_at: str


def _decision(conn: sqlite3.Connection, decision_id: int) -> Decision:
    row = conn.execute(
        "SELECT id, image_id, caption_id, verdict, annotator, model_version_id, score_shown, undoes,"
        " created_at"
        " FROM decisions WHERE id = ?",
        (decision_id,),
    ).fetchone()
    return Decision(*row)


def _check_caption(conn: sqlite3.Connection, image_id: int, caption_id: int, annotator: str) -> None:
    if not annotator or not annotator.strip():
        raise ValueError("annotator name is empty")
    row = conn.execute(
        "SELECT c.image_id, c.hidden, i.hidden FROM captions c JOIN images i ON i.id = c.image_id WHERE c.id = ?",
        (caption_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"caption {caption_id} does not exist")
    if row[0] != image_id:
        raise ValueError(f"caption {caption_id} belongs to image {row[0]}, not to image {image_id}")
    if row[1] or row[2]:
        what = f"caption {caption_id}" if row[1] else f"image {image_id}"
        raise ValueError(f"{what} is hidden; unhide it before deciding on it")


def refresh_annotator_count(conn: sqlite3.Connection, image_id: int) -> None:
    """Store on the image how many annotators have an effective (not undone) action on it."""
    conn.execute(
        "UPDATE images SET n_annotators = (SELECT COUNT(DISTINCT annotator) FROM effective_decisions"
        " WHERE image_id = ? AND verdict != 'undo') WHERE id = ?",
        (image_id, image_id),
    )


def _append(
    conn: sqlite3.Connection,
    image_id: int,
    caption_id: int,
    verdict: str,
    annotator: str,
    model_version_id: int | None = None,
    score_shown: float | None = None,
    undoes: int | None = None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO decisions(image_id, caption_id, verdict, annotator, model_version_id, score_shown,"
        " undoes,"
        " created_at) VALUES (?,?,?,?,?,?,?,?)",
        (image_id, caption_id, verdict, annotator, model_version_id, score_shown, undoes, now_iso()),
    )
    return cursor.lastrowid


def record_decision(
    conn: sqlite3.Connection,
    image_id: int,
    caption_id: int,
    verdict: str,
    annotator: str,
    model_version: int | None = None,
    score_shown: float | None = None,
) -> Decision:
    """Append a verdict (accept / reject / best) by ``annotator`` on a caption of an image.

    ``model_version`` is the id of the model whose score ``score_shown`` the annotator saw, if any.
    A later verdict on the same caption by the same annotator supersedes the earlier one for
    triplets; both stay in the log.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    with transaction(conn):
        _check_caption(conn, image_id, caption_id, annotator)
        decision_id = _append(conn, image_id, caption_id, verdict, annotator, model_version, score_shown)
        rebuild_derived(conn, image_id, annotator)
        refresh_annotator_count(conn, image_id)
        return _decision(conn, decision_id)


def edit_caption(
    conn: sqlite3.Connection,
    image_id: int,
    caption_id: int,
    new_text: str,
    annotator: str,
    makes_triplet: bool = True,
) -> int:
    """Record that ``annotator`` rewrote a caption; return the id of the new caption (source ``human``).

    The old caption stays. With ``makes_triplet`` the edit yields the triplet (new text positive,
    old text negative).
    """
    with transaction(conn):
        _check_caption(conn, image_id, caption_id, annotator)
        old_text = conn.execute("SELECT text FROM captions WHERE id = ?", (caption_id,)).fetchone()[0]
        if new_text == old_text:
            raise ValueError(f"edit of caption {caption_id} does not change its text")
        new_id = add_caption(conn, image_id, new_text, "human", author=annotator)
        decision_id = _append(conn, image_id, caption_id, "edit", annotator)
        conn.execute(
            "INSERT INTO edits(decision_id, old_caption_id, new_caption_id, makes_triplet) VALUES (?,?,?,?)",
            (decision_id, caption_id, new_id, int(makes_triplet)),
        )
        rebuild_derived(conn, image_id, annotator)
        refresh_annotator_count(conn, image_id)
        return new_id


def undo_last(conn: sqlite3.Connection, annotator: str) -> Decision | None:
    """Cancel the annotator's latest action not yet undone, among their last ten; return it.

    The undo is appended to the log (nothing is deleted) and the derived triplets go back to what
    they were before that action. Returns ``None`` when nothing within the last ten is left to undo.
    """
    with transaction(conn):
        # the latest action in force, no older than the annotator's UNDO_DEPTH-th latest action
        target = conn.execute(
            "SELECT id, image_id, caption_id FROM effective_decisions WHERE annotator = :who AND verdict != 'undo'"
            " AND id >= ifnull((SELECT id FROM decisions WHERE annotator = :who AND verdict != 'undo'"
            " ORDER BY id DESC LIMIT 1 OFFSET :back), 0) ORDER BY id DESC LIMIT 1",
            {"who": annotator, "back": UNDO_DEPTH - 1},
        ).fetchone()
        if target is None:
            return None
        decision_id, image_id, caption_id = target
        _append(conn, image_id, caption_id, "undo", annotator, undoes=decision_id)
        rebuild_derived(conn, image_id, annotator)
        refresh_annotator_count(conn, image_id)
        return _decision(conn, decision_id)


def history(conn: sqlite3.Connection, image_id: int) -> list[Decision]:
    """Every log row of an image, oldest first (undos and edits included)."""
    ids = conn.execute("SELECT id FROM decisions WHERE image_id = ? ORDER BY id", (image_id,)).fetchall()
    return [_decision(conn, row[0]) for row in ids]
