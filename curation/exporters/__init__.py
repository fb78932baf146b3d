"""Exporters: write the store's content in the formats of docs/formats.md, filtered by a TripletFilter.

``export_file(conn, kind, out, flt)`` dispatches on ``kind`` (see :data:`EXPORTERS`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path

from curation.exporters.base import ExportReport
from curation.exporters.best import BestCaption, best_captions, export_best_captions
from curation.exporters.tables import caption_table, export_table
from curation.exporters.triplet_files import export_seed_triplets, export_triplets, seed_records
from curation.triplets import TripletFilter

Exporter = Callable[[sqlite3.Connection, Path, "TripletFilter | None"], ExportReport]

EXPORTERS: dict[str, Exporter] = {
    "seed-triplets": export_seed_triplets,
    "triplets": export_triplets,
    "best-captions": export_best_captions,
    "csv": partial(export_table, kind="csv"),
    "parquet": partial(export_table, kind="parquet"),
}


def export_file(
    conn: sqlite3.Connection, kind: str, out: str | Path, flt: TripletFilter | None = None
) -> ExportReport:
    """Write ``kind`` to ``out``; ``ValueError`` for an unknown kind."""
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export kind {kind!r}; choose one of {', '.join(EXPORTERS)}")
    return EXPORTERS[kind](conn, Path(out), flt)


__all__ = [
    "EXPORTERS",
    "BestCaption",
    "ExportReport",
    "best_captions",
    "caption_table",
    "export_best_captions",
    "export_file",
    "export_seed_triplets",
    "export_table",
    "export_triplets",
    "seed_records",
]
