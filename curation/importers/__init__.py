"""Importers: each reads one kind of file into the store, idempotently, and returns an ImportReport.

``import_file(conn, kind, path, options, on_progress)`` dispatches on ``kind`` (see :data:`IMPORTERS`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from curation.importers.base import ImportOptions, ImportReport, ProgressFn, Skipped
from curation.importers.karpathy import UCM_CLASSES, import_karpathy, import_ucm, ucm_image
from curation.importers.rsicap import import_rsicap
from curation.importers.tables import import_csv, import_jsonl
from curation.importers.triplet_files import import_seed_triplets, import_triplets

Importer = Callable[[sqlite3.Connection, Path, ImportOptions, "ProgressFn | None"], ImportReport]

IMPORTERS: dict[str, Importer] = {
    "ucm": import_ucm,
    "karpathy": import_karpathy,
    "rsicap": import_rsicap,
    "seed-triplets": import_seed_triplets,
    "triplets": import_triplets,
    "csv": import_csv,
    "jsonl": import_jsonl,
}


def import_file(
    conn: sqlite3.Connection,
    kind: str,
    path: str | Path,
    options: ImportOptions | None = None,
    on_progress: ProgressFn | None = None,
) -> ImportReport:
    """Import ``path`` as ``kind``; ``ValueError`` for an unknown kind or a malformed file."""
    if kind not in IMPORTERS:
        raise ValueError(f"unknown import kind {kind!r}; choose one of {', '.join(IMPORTERS)}")
    return IMPORTERS[kind](conn, Path(path), options or ImportOptions(), on_progress)


__all__ = [
    "IMPORTERS",
    "UCM_CLASSES",
    "ImportOptions",
    "ImportReport",
    "Skipped",
    "import_csv",
    "import_file",
    "import_jsonl",
    "import_karpathy",
    "import_rsicap",
    "import_seed_triplets",
    "import_triplets",
    "import_ucm",
    "ucm_image",
]
