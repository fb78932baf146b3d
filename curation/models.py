"""Model versions (path, metrics, lineage, one active) and training runs (config, status, metrics).

The store records what the scorer and trainer report; it never loads a model.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from curation.queue import refresh_queue_order
from curation.store import now_iso, transaction

RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class ModelVersion:
    id: int
    path: str
    metrics: dict
    parent_id: int | None
    provenance: dict
    active: bool
    created_at: str


@dataclass(frozen=True)
class TrainingRun:
    id: int
    config: dict
    status: str
    metrics: dict
    model_version_id: int | None
    created_at: str
    updated_at: str


def _model(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        id=row["id"],
        path=row["path"],
        metrics=json.loads(row["metrics"]),
        parent_id=row["parent_id"],
        provenance=json.loads(row["provenance"]),
        active=bool(row["active"]),
        created_at=row["created_at"],
    )


def add_model_version(
    conn: sqlite3.Connection,
    path: str,
    metrics: dict | None = None,
    parent: int | None = None,
    provenance: dict | None = None,
) -> int:
    """Register a model checkpoint (``path`` as the scorer names it); return its id. Not made active."""
    if not path:
        raise ValueError("model version path is empty")
    with transaction(conn):
        if parent is not None and get_model_version(conn, parent) is None:
            raise ValueError(f"parent model version {parent} does not exist")
        cursor = conn.execute(
            "INSERT INTO model_versions(path, metrics, parent_id, provenance, created_at) VALUES (?,?,?,?,?)",
            (path, json.dumps(metrics or {}), parent, json.dumps(provenance or {}), now_iso()),
        )
        return cursor.lastrowid


def get_model_version(conn: sqlite3.Connection, model_id: int) -> ModelVersion | None:
    row = conn.execute("SELECT * FROM model_versions WHERE id = ?", (model_id,)).fetchone()
    return _model(row) if row else None


def set_active_model(conn: sqlite3.Connection, model_id: int) -> None:
    """Make ``model_id`` the one active model version (its score margins now order the queue)."""
    with transaction(conn):
        if get_model_version(conn, model_id) is None:
            raise ValueError(f"model version {model_id} does not exist")
        conn.execute("UPDATE model_versions SET active = 0 WHERE active = 1")
        conn.execute("UPDATE model_versions SET active = 1 WHERE id = ?", (model_id,))
        refresh_queue_order(conn)


def active_model(conn: sqlite3.Connection) -> ModelVersion | None:
    row = conn.execute("SELECT * FROM model_versions WHERE active = 1").fetchone()
    return _model(row) if row else None


def list_model_versions(conn: sqlite3.Connection) -> list[ModelVersion]:
    return [_model(row) for row in conn.execute("SELECT * FROM model_versions ORDER BY id")]


def _run(row: sqlite3.Row) -> TrainingRun:
    return TrainingRun(
        id=row["id"],
        config=json.loads(row["config"]),
        status=row["status"],
        metrics=json.loads(row["metrics"]),
        model_version_id=row["model_version_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def add_training_run(conn: sqlite3.Connection, config: dict) -> int:
    """Record a training run (status ``queued``); return its id."""
    stamp = now_iso()
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO training_runs(config, status, created_at, updated_at) VALUES (?, 'queued', ?, ?)",
            (json.dumps(config), stamp, stamp),
        )
        return cursor.lastrowid


def update_training_run(
    conn: sqlite3.Connection,
    run_id: int,
    status: str,
    metrics: dict | None = None,
    model_version: int | None = None,
) -> None:
    """Set a run's status (one of :data:`RUN_STATUSES`); ``metrics`` are merged into the stored ones."""
    if status not in RUN_STATUSES:
        raise ValueError(f"training run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
    with transaction(conn):
        row = conn.execute(
            "SELECT metrics, model_version_id FROM training_runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise ValueError(f"training run {run_id} does not exist")
        merged = {**json.loads(row[0]), **(metrics or {})}
        conn.execute(
            "UPDATE training_runs SET status = ?, metrics = ?, model_version_id = ?, updated_at = ?"
            " WHERE id = ?",
            (
                status,
                json.dumps(merged),
                model_version if model_version is not None else row[1],
                now_iso(),
                run_id,
            ),
        )


def get_training_run(conn: sqlite3.Connection, run_id: int) -> TrainingRun:
    row = conn.execute("SELECT * FROM training_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise ValueError(f"training run {run_id} does not exist")
    return _run(row)


def list_training_runs(conn: sqlite3.Connection) -> list[TrainingRun]:
    return [_run(row) for row in conn.execute("SELECT * FROM training_runs ORDER BY id")]
