"""Cleanup: hide an image or a caption — soft, reversible, every action logged with who, when and why.

Hiding sets the item's ``hidden`` flag and appends a row to ``visibility_log``; unhiding clears the flag and
appends another row, so an item's history is never lost. A hidden image or caption is left out of the
queue, of the image listings and caption views (unless asked for), of every export and of the triplets
training reads; its decisions and triplets stay in the store and are back as they were on unhide. A
hidden caption takes no part in its image's score margin (the queue's order) and takes no new decisions.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from curation.queue import refresh_image_margins
from curation.store import now_iso, transaction

ITEMS = ("image", "caption")


@dataclass(frozen=True)
class VisibilityAction:
    id: int
    item: str  # image | caption
    item_id: int
    action: str  # hide | unhide
    who: str
    reason: str | None
    created_at: str


@dataclass(frozen=True)
class HiddenItem:
    item: str  # image | caption
    item_id: int
    image_id: int
    image: str  # the image's path (of the caption's image for a caption)
    text: str | None  # the caption's text; None for an image
    who: str  # who hid it
    reason: str | None
    hidden_at: str


def _table(item: str) -> str:
    if item not in ITEMS:
        raise ValueError(f"hidden item kind {item!r} is not one of {', '.join(ITEMS)}")
    return "images" if item == "image" else "captions"


def _set_hidden(conn: sqlite3.Connection, item: str, item_id: int, hide: bool, who: str,
                reason: str | None) -> VisibilityAction:
    if not who or not who.strip():
        raise ValueError(f"who hides or unhides {item} {item_id} is not named")
    table = _table(item)
    with transaction(conn):
        row = conn.execute(f"SELECT hidden FROM {table} WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ValueError(f"{item} {item_id} does not exist")
        if bool(row[0]) == hide:
            raise ValueError(f"{item} {item_id} is already {'hidden' if hide else 'visible'}")
        conn.execute(f"UPDATE {table} SET hidden = ? WHERE id = ?", (int(hide), item_id))
        cursor = conn.execute(
            f"INSERT INTO visibility_log({item}_id, action, who, reason, created_at) VALUES (?, ?, ?, ?, ?)",
            (item_id, "hide" if hide else "unhide", who, reason, now_iso()),
        )
        if item == "image" and hide:
            conn.execute("DELETE FROM leases WHERE image_id = ?", (item_id,))
        if item == "caption":
            image_id = conn.execute("SELECT image_id FROM captions WHERE id = ?", (item_id,)).fetchone()[0]
            refresh_image_margins(conn, image_id)
        return _action(conn.execute(_ACTIONS + " WHERE id = ?", (cursor.lastrowid,)).fetchone())


def hide_image(conn: sqlite3.Connection, image_id: int, who: str, reason: str | None = None) -> VisibilityAction:
    """Hide an image (and with it all its captions) from the queue, listings, exports and training."""
    return _set_hidden(conn, "image", image_id, True, who, reason)


def unhide_image(conn: sqlite3.Connection, image_id: int, who: str, reason: str | None = None) -> VisibilityAction:
    """Make a hidden image visible again; its decisions and triplets are back as they were."""
    return _set_hidden(conn, "image", image_id, False, who, reason)


def hide_caption(conn: sqlite3.Connection, caption_id: int, who: str, reason: str | None = None) -> VisibilityAction:
    """Hide a caption (e.g. gibberish a model generated) from views, exports, triplets and margins."""
    return _set_hidden(conn, "caption", caption_id, True, who, reason)


def unhide_caption(
    conn: sqlite3.Connection, caption_id: int, who: str, reason: str | None = None
) -> VisibilityAction:
    """Make a hidden caption visible again."""
    return _set_hidden(conn, "caption", caption_id, False, who, reason)


_ACTIONS = (
    "SELECT id, CASE WHEN image_id IS NULL THEN 'caption' ELSE 'image' END, coalesce(image_id, caption_id),"
    " action, who, reason, created_at FROM visibility_log"
)


def _action(row: tuple) -> VisibilityAction:
    return VisibilityAction(*row)


def visibility_history(conn: sqlite3.Connection, item: str, item_id: int) -> list[VisibilityAction]:
    """Every hide / unhide of one image or caption, oldest first."""
    _table(item)
    rows = conn.execute(_ACTIONS + f" WHERE {item}_id = ? ORDER BY id", (item_id,)).fetchall()
    return [_action(row) for row in rows]


def hidden_items(conn: sqlite3.Connection) -> list[HiddenItem]:
    """Every image and caption hidden now, with who hid it, when and why; images first, then captions."""
    latest = "SELECT max(id) FROM visibility_log WHERE {col} = {ref}"
    images = conn.execute(
        "SELECT 'image', i.id, i.id, i.path, NULL, v.who, v.reason, v.created_at FROM images i"
        f" JOIN visibility_log v ON v.id = ({latest.format(col='image_id', ref='i.id')})"
        " WHERE i.hidden = 1 ORDER BY i.id"
    ).fetchall()
    captions = conn.execute(
        "SELECT 'caption', c.id, c.image_id, i.path, c.text, v.who, v.reason, v.created_at FROM captions c"
        " JOIN images i ON i.id = c.image_id"
        f" JOIN visibility_log v ON v.id = ({latest.format(col='caption_id', ref='c.id')})"
        " WHERE c.hidden = 1 ORDER BY c.id"
    ).fetchall()
    return [HiddenItem(*row) for row in images + captions]
