"""Schema, connection, migrations, and the two primitive writes: images and captions.

The database is SQLite in WAL mode with foreign keys on. ``PRAGMA user_version`` holds the schema
version; :data:`MIGRATIONS` lists the scripts that bring a database from one version to the next and
:func:`open_store` applies the missing ones in one transaction.

Every write runs inside :func:`transaction` (``BEGIN IMMEDIATE``): it takes the write lock at once,
so two writers (threads or processes) never interleave and nothing half-written is ever visible.
Connections are opened in autocommit mode; use one connection per thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.formats import MAX_CAPTION_CHARS, caption_problem
from common.paths import normalize_relative, resolve_inside

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 60_000

_SCHEMA_V1 = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- POSIX path relative to the image root
    root TEXT,                          -- the image root it was imported from (informational)
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    class TEXT,
    tags TEXT,                          -- JSON list
    split TEXT,
    n_annotators INTEGER NOT NULL DEFAULT 0,  -- annotators with an effective decision (kept by decisions.py)
    queue_margin REAL NOT NULL DEFAULT 9e999, -- top-2 score margin under the queue's model; +inf: unscored
    created_at TEXT NOT NULL
);
CREATE INDEX images_queue ON images(n_annotators, queue_margin, id);
CREATE INDEX images_class_queue ON images(class, n_annotators, queue_margin, id);

-- Per-class image counts for the queue's class balance, kept by triggers ('' stands for no class).
CREATE TABLE class_counts (
    class TEXT PRIMARY KEY,
    images INTEGER NOT NULL DEFAULT 0,
    decided INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER class_counts_insert AFTER INSERT ON images BEGIN
    INSERT INTO class_counts(class, images, decided) VALUES (ifnull(NEW.class, ''), 1, NEW.n_annotators > 0)
    ON CONFLICT(class) DO UPDATE SET images = images + 1, decided = decided + (NEW.n_annotators > 0);
END;
CREATE TRIGGER class_counts_update AFTER UPDATE OF class, n_annotators ON images
WHEN ifnull(OLD.class, '') != ifnull(NEW.class, '') OR (OLD.n_annotators > 0) != (NEW.n_annotators > 0)
BEGIN
    UPDATE class_counts SET images = images - 1, decided = decided - (OLD.n_annotators > 0)
    WHERE class = ifnull(OLD.class, '');
    INSERT INTO class_counts(class, images, decided) VALUES (ifnull(NEW.class, ''), 1, NEW.n_annotators > 0)
    ON CONFLICT(class) DO UPDATE SET images = images + 1, decided = decided + (NEW.n_annotators > 0);
END;

CREATE TABLE captions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    text TEXT NOT NULL,
    source TEXT NOT NULL,               -- human, ucm-captions, rsicap, karpathy, model:<name>, import, ...
    author TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (image_id, text)
);

CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    parent_id INTEGER REFERENCES model_versions(id),
    provenance TEXT NOT NULL DEFAULT '{}',
    active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX model_versions_one_active ON model_versions(active) WHERE active = 1;

-- Append-only log of every human action. Undo is a row of its own (verdict 'undo', undoes = id).
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    caption_id INTEGER NOT NULL REFERENCES captions(id),
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'best', 'edit', 'undo')),
    annotator TEXT NOT NULL,
    model_version_id INTEGER REFERENCES model_versions(id),
    score_shown REAL,
    undoes INTEGER UNIQUE REFERENCES decisions(id),
    created_at TEXT NOT NULL
);
CREATE INDEX decisions_image ON decisions(image_id, annotator);
CREATE INDEX decisions_annotator ON decisions(annotator, id);
CREATE INDEX decisions_caption ON decisions(caption_id);

CREATE TABLE edits (
    decision_id INTEGER PRIMARY KEY REFERENCES decisions(id),
    old_caption_id INTEGER NOT NULL REFERENCES captions(id),
    new_caption_id INTEGER NOT NULL REFERENCES captions(id),
    makes_triplet INTEGER NOT NULL DEFAULT 1
);

-- Derived from decisions/edits (origin 'derived', rebuilt per image and annotator) or imported.
CREATE TABLE triplets (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    positive_id INTEGER NOT NULL REFERENCES captions(id),
    negative_id INTEGER NOT NULL REFERENCES captions(id),
    origin TEXT NOT NULL CHECK (origin IN ('derived', 'import')),
    provenance TEXT NOT NULL,           -- decision, edit, import, or what an imported file said
    annotator TEXT,
    position INTEGER,                   -- order of the negative in an imported record
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX triplets_unique
    ON triplets(image_id, positive_id, negative_id, origin, provenance, ifnull(annotator, ''));

CREATE TABLE scores (
    model_version_id INTEGER NOT NULL REFERENCES model_versions(id),
    caption_id INTEGER NOT NULL REFERENCES captions(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    score REAL NOT NULL,
    PRIMARY KEY (model_version_id, caption_id)
) WITHOUT ROWID;
CREATE INDEX scores_image ON scores(model_version_id, image_id, score);

-- Margin between the two best caption scores of an image under one model (NULL: < 2 captions scored).
CREATE TABLE margins (
    model_version_id INTEGER NOT NULL REFERENCES model_versions(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    margin REAL,
    PRIMARY KEY (model_version_id, image_id)
) WITHOUT ROWID;
CREATE INDEX margins_order ON margins(model_version_id, margin);

CREATE TABLE leases (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    annotator TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX leases_annotator ON leases(annotator);

CREATE TABLE training_runs (
    id INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    model_version_id INTEGER REFERENCES model_versions(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

# v2: the decisions in force, named once. A row is in force unless an 'undo' row cancels it (undo rows
# themselves are never undone, so they are in it too: filter on verdict).
_SCHEMA_V2 = """
CREATE VIEW effective_decisions AS
SELECT d.* FROM decisions d WHERE NOT EXISTS (SELECT 1 FROM decisions u WHERE u.undoes = d.id);
"""

# v3: cleanup and review. Hiding is soft: an append-only log of hide / unhide actions (who, when, why) and a
# ``hidden`` flag on the item kept by curation.cleanup in the same transaction (read by queue, views,
# exports, triplets). A reviewer's resolution overrides the annotators' verdicts on one caption
# (curation.resolutions); the latest one per caption is in force, 'clear' withdraws it.
_SCHEMA_V3 = """
ALTER TABLE images ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
ALTER TABLE captions ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
CREATE TABLE visibility_log (
    id INTEGER PRIMARY KEY,
    image_id INTEGER REFERENCES images(id),
    caption_id INTEGER REFERENCES captions(id),
    action TEXT NOT NULL CHECK (action IN ('hide', 'unhide')),
    who TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL,
    CHECK ((image_id IS NULL) != (caption_id IS NULL))
);
CREATE INDEX visibility_image ON visibility_log(image_id, id);
CREATE INDEX visibility_caption ON visibility_log(caption_id, id);
CREATE TABLE resolutions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    caption_id INTEGER NOT NULL REFERENCES captions(id),
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'best', 'clear')),
    reviewer TEXT NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX resolutions_image ON resolutions(image_id, caption_id, id);
"""

MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Image:
    id: int
    path: str
    root: str | None
    sha256: str | None
    width: int | None
    height: int | None
    cls: str | None
    split: str | None
    tags: list[str]
    n_annotators: int
    created_at: str
    hidden: bool = False  # hidden by curation.cleanup: out of the queue, listings, exports and training


class StoreConnection(sqlite3.Connection):
    """A store connection that remembers a failed write (:attr:`failed_write`): after a read-only
    folder or a full disk SQLite may keep the handle unusable, so its owner closes it and opens a new one."""

    failed_write: bool = False


def write_failed(error: BaseException) -> bool:
    """Whether ``error`` is the database failing to write (not a constraint or a bug in a statement)."""
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError))


def now_iso() -> str:
    """UTC time as ISO 8601 with microseconds; sorts correctly as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def open_store(db_path: str | os.PathLike[str], read_only: bool | None = False) -> sqlite3.Connection:
    """Open (creating or migrating) the store at ``db_path``.

    The connection is in autocommit mode with WAL, foreign keys and a busy timeout; writes go
    through :func:`transaction`. Raises ``ValueError`` for a database newer than this code.

    ``read_only=True`` opens an existing store with SQLite's ``mode=ro`` (and ``PRAGMA query_only``):
    every write fails, nothing is created or migrated; in a folder where SQLite cannot create its
    ``-wal`` / ``-shm`` files the file is read as ``immutable``. ``read_only=None`` chooses read-only
    when the file or its folder is not writable by this process.
    """
    path = Path(db_path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder of the database {path} does not exist")
    if read_only is None:
        read_only = path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
    if read_only:
        return _open_read_only(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, factory=StoreConnection)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    _migrate(conn, path)
    return conn


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"database {path} does not exist (a read-only store is never created)")
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError:  # WAL without -shm in a folder we cannot write: nobody can write it
        log.info("opening %s as immutable: SQLite cannot create its -shm file beside it", path)
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        conn.close()
        raise ValueError(f"database {path} has schema version {version}, this code needs {SCHEMA_VERSION};"
                         " open it writable once to migrate it")
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # current: no write lock needed
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # again, under the lock
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"database {path} has schema version {version}; this code knows up to {SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            log.info("migrating %s to schema version %d", path, target)
            for statement in _statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line.split("--")[0] if "--" in line else line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error). Nested use joins the outer one."""
    if conn.in_transaction:
        yield conn
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        if write_failed(error) and isinstance(conn, StoreConnection):
            conn.failed_write = True
        raise
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as error:
        _rollback(conn, error)
        if write_failed(error) and isinstance(conn, StoreConnection):
            conn.failed_write = True
        raise


def _rollback(conn: sqlite3.Connection, error: BaseException) -> None:
    """Roll back after ``error`` without hiding it: SQLite may already have rolled back (a full disk
    does), and a failed ``ROLLBACK`` is logged, never raised in place of the real cause."""
    if not conn.in_transaction:
        log.warning("transaction already rolled back by SQLite after: %s", error)
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as rollback_error:
        log.error("rollback failed (%s) after: %s", rollback_error, error)


def check_caption_text(text: str, max_chars: int = MAX_CAPTION_CHARS) -> str | None:
    """The reason ``text`` cannot be a caption, or ``None`` if it can (the rules of
    :mod:`common.formats`: text, non-empty, at most the cap, no control characters). Kept verbatim."""
    return caption_problem(text, max_chars)


def normalize_image_path(rel_path: str, image_root: str | os.PathLike[str] | None) -> str:
    """Validate ``rel_path`` and return its canonical POSIX form (:func:`common.paths.normalize_relative`:
    ``./`` segments dropped; empty, ``.``, absolute, ``..`` and control characters refused). When
    ``image_root`` is given it must also resolve inside the root after following symlinks. Raises
    :class:`common.paths.PathOutsideRootError` naming the path.
    """
    path = normalize_relative(os.fspath(rel_path) if isinstance(rel_path, os.PathLike) else rel_path)
    if image_root is not None:
        resolve_inside(image_root, path)
    return path


def add_image(
    conn: sqlite3.Connection,
    rel_path: str,
    image_root: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    width: int | None = None,
    height: int | None = None,
    cls: str | None = None,
    split: str | None = None,
    tags: list[str] | None = None,
) -> int:
    """Add an image (idempotent on its path) and return its id.

    For an image already present, fields that are still empty are filled in; nothing set is overwritten.
    """
    path = normalize_image_path(rel_path, image_root)
    root = str(Path(image_root).resolve()) if image_root is not None else None
    tags_json = json.dumps(list(tags)) if tags else None
    with transaction(conn):
        conn.execute(
            "INSERT INTO images(path, root, sha256, width, height, class, split, tags, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(path) DO UPDATE SET root = coalesce(root, excluded.root),"
            " sha256 = coalesce(sha256, excluded.sha256), width = coalesce(width, excluded.width),"
            " height = coalesce(height, excluded.height), class = coalesce(class, excluded.class),"
            " split = coalesce(split, excluded.split), tags = coalesce(tags, excluded.tags)",
            (path, root, sha256, width, height, cls, split, tags_json, now_iso()),
        )
        return conn.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()[0]


def add_caption(
    conn: sqlite3.Connection, image_id: int, text: str, source: str, author: str | None = None
) -> int:
    """Add a caption to an image (idempotent on (image, text): returns the existing id)."""
    reason = check_caption_text(text)
    if reason:
        raise ValueError(f"caption for image {image_id}: {reason}")
    if not source:
        raise ValueError(f"caption for image {image_id}: source is empty")
    with transaction(conn):
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise ValueError(f"image {image_id} does not exist")
        conn.execute(
            "INSERT OR IGNORE INTO captions(image_id, text, source, author, created_at) VALUES (?,?,?,?,?)",
            (image_id, text, source, author, now_iso()),
        )
        return conn.execute(
            "SELECT id FROM captions WHERE image_id = ? AND text = ?", (image_id, text)
        ).fetchone()[0]


def get_image(conn: sqlite3.Connection, image_id: int) -> Image:
    """The image with this id; ``ValueError`` if there is none."""
    row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
    if row is None:
        raise ValueError(f"image {image_id} does not exist")
    return image_from_row(row)


def find_image(conn: sqlite3.Connection, rel_path: str) -> int | None:
    """The id of the image stored under ``rel_path``, or ``None``."""
    row = conn.execute("SELECT id FROM images WHERE path = ?", (rel_path,)).fetchone()
    return row[0] if row else None


def image_from_row(row: sqlite3.Row) -> Image:
    return Image(
        id=row["id"],
        path=row["path"],
        root=row["root"],
        sha256=row["sha256"],
        width=row["width"],
        height=row["height"],
        cls=row["class"],
        split=row["split"],
        tags=json.loads(row["tags"]) if row["tags"] else [],
        n_annotators=row["n_annotators"],
        created_at=row["created_at"],
        hidden=bool(row["hidden"]),
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
