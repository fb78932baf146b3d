"""Candidate captions as CSV (header ``image,caption[,source]``) or JSON Lines
(``{"image", "caption", "source"?, "generator"?}``), as in ``docs/formats.md``.

One row is one caption, parsed by :func:`common.formats.parse_candidate`. Missing ``source`` becomes
``import``; a JSONL ``generator`` is kept as the caption's author. Extra CSV columns are ignored, so
this store's own ``csv`` export reads back in. Row numbers are file line numbers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.formats import FieldError, FormatError, csv_rows, json_lines, parse_candidate
from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_input,
    check_rows,
    skip,
    write_records,
)

DEFAULT_SOURCE = "import"


def _caption_record(row: int, item: object) -> Record | Skipped:
    if isinstance(item, FormatError):
        return Skipped(row, item.reason if item.column is None else f"column {item.column}: {item.reason}")
    try:
        candidate = parse_candidate(item)
    except FieldError as error:
        return skip(row, error)
    return Record(row=row, image=candidate.image,
                  captions=[(candidate.caption, candidate.source or DEFAULT_SOURCE, candidate.generator)])


def _import_rows(conn, kind, path, rows, opts, on_progress) -> ImportReport:
    check_rows(path, len(rows), opts)
    records = [_caption_record(row, item) for row, item in rows]
    return write_records(conn, records, ImportReport(kind, str(path)), opts, on_progress)


def import_jsonl(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    check_input(path, opts)
    return _import_rows(conn, "jsonl", path, json_lines(path), opts, on_progress)


def import_csv(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    check_input(path, opts)
    return _import_rows(conn, "csv", path, csv_rows(path, ("image", "caption")), opts, on_progress)
