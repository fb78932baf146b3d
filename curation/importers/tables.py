"""Candidate captions as CSV (header ``image,caption[,source]``) or JSON Lines
(``{"image", "caption", "source"?, "generator"?}``), as in ``docs/formats.md``.

One row is one caption. Missing ``source`` becomes ``import``; a JSONL ``generator`` is kept as the
caption's author. Extra CSV columns are ignored, so this store's own ``csv`` export reads back in.
Row numbers are file line numbers.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_input,
    check_rows,
    json_lines,
    write_records,
)

DEFAULT_SOURCE = "import"


def _caption_record(row: int, item: object) -> Record | Skipped:
    if isinstance(item, Skipped):
        return item
    if not isinstance(item, dict):
        return Skipped(row, f"row is {type(item).__name__}, not an object")
    image, caption = item.get("image"), item.get("caption")
    if not isinstance(image, str) or not image:
        return Skipped(row, "row has no 'image'")
    if not isinstance(caption, str):
        return Skipped(row, "row has no 'caption' text")
    source = (
        item.get("source") if isinstance(item.get("source"), str) and item.get("source") else DEFAULT_SOURCE
    )
    generator = item.get("generator") if isinstance(item.get("generator"), str) else None
    return Record(row=row, image=image, captions=[(caption, source, generator)])


def import_jsonl(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    total, items = json_lines(path, opts)
    records = (_caption_record(row, item) for row, item in items)
    return write_records(conn, records, ImportReport("jsonl", str(path)), opts, total, on_progress)


def import_csv(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    check_input(path, opts)
    with open(path, "rb") as handle:
        total = max(sum(1 for _ in handle) - 1, 0)
    check_rows(path, total, opts)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: CSV header lacks column(s) {', '.join(sorted(missing))}")

        def records() -> Iterator[Record | Skipped]:
            for item in reader:
                yield _caption_record(reader.line_num, item)

        return write_records(conn, records(), ImportReport("csv", str(path)), opts, total, on_progress)
