"""Resolutions: a reviewer's verdict on one caption that overrides what the annotators said about it.

The ``resolutions`` table is append-only: the latest row of a caption is in force, and the verdict
``clear`` withdraws the override (the annotators' own verdicts count again). A resolution in force:

* replaces every annotator's latest verdict on that caption when triplets are derived
  (:func:`curation.triplets.rebuild_derived`); annotators who never judged the caption are not given
  one. Triplets that rest on a resolved caption carry the provenance ``resolution``;
* decides the best caption: a ``best`` resolution makes the caption its image's best caption, and
  annotators' ``best`` verdicts on the other captions of that image then count as ``accept``.

Resolutions are written by :func:`curation.review.resolve`, which rebuilds the image's triplets in the
same transaction. This module only reads them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

RESOLUTION_VERDICTS = ("accept", "reject", "best", "clear")


@dataclass(frozen=True)
class Resolution:
    id: int
    image_id: int
    caption_id: int
    verdict: str  # accept | reject | best | clear
    reviewer: str
    note: str | None
    created_at: str


_COLUMNS = "id, image_id, caption_id, verdict, reviewer, note, created_at"


def resolutions_in_force(conn: sqlite3.Connection, image_id: int | None = None) -> dict[int, Resolution]:
    """caption id → the resolution in force on it (``clear`` ones left out), for one image or all."""
    where, params = ("WHERE image_id = ?", (image_id,)) if image_id is not None else ("", ())
    latest: dict[int, Resolution] = {}
    for row in conn.execute(f"SELECT {_COLUMNS} FROM resolutions {where} ORDER BY id", params):
        latest[row[2]] = Resolution(*row)
    return {caption: r for caption, r in latest.items() if r.verdict != "clear"}


def resolution_history(conn: sqlite3.Connection, image_id: int) -> list[Resolution]:
    """Every resolution of an image's captions, oldest first (withdrawn and superseded ones included)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM resolutions WHERE image_id = ? ORDER BY id", (image_id,))
    return [Resolution(*row) for row in rows]


def resolved_verdict(caption_id: int, verdict: str, image_id: int, resolved: dict[int, Resolution]) -> str:
    """An annotator's ``verdict`` on a caption of ``image_id`` as the resolutions in force read it."""
    if caption_id in resolved:
        return resolved[caption_id].verdict
    if verdict == "best" and any(r.image_id == image_id and r.verdict == "best" for r in resolved.values()):
        return "accept"
    return verdict
