"""Triplet files: the original project's ``seed-triplets`` and the README ``triplets`` format.

Both are specified in ``docs/formats.md``. Their captions get source ``import``; their triplets are
stored as imported triplets (origin ``import``, never rebuilt from decisions, left out by
``TripletFilter(human_only=True)``). A seed record's ``negs`` keep their positions so that exporting
``seed-triplets`` gives the file back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_rows,
    json_lines,
    load_json,
    write_records,
)

SOURCE = "import"


def _seed_record(row: int, item: object, seen: dict[str, int]) -> Record | Skipped:
    if not isinstance(item, dict):
        return Skipped(row, f"record is {type(item).__name__}, not an object")
    image, pos, negs = item.get("image"), item.get("pos"), item.get("negs")
    if not isinstance(image, str):
        return Skipped(row, "record has no 'image' text")
    if not isinstance(pos, str):
        return Skipped(row, "record has no 'pos' text")
    if not isinstance(negs, list) or not negs:
        return Skipped(row, "record has no non-empty 'negs' list")
    if image in seen:
        return Skipped(row, f"image {image!r} already given in row {seen[image]} (one record per image)")
    seen[image] = row
    cls = item.get("class") if isinstance(item.get("class"), str) else None
    record = Record(row=row, image=image, cls=cls, captions=[(pos, SOURCE, None)])
    for position, neg in enumerate(negs):
        if neg != pos:
            record.captions.append((neg, SOURCE, None))
            record.triplets.append((pos, neg, "import", position))
    return record


def import_seed_triplets(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """``[{"image", "pos", "negs": [...], "class"?}]``: one record per image."""
    path = Path(path)
    data = load_json(path, opts)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a seed-triplets file is a JSON array of records")
    check_rows(path, len(data), opts)
    seen: dict[str, int] = {}
    records = (_seed_record(row, item, seen) for row, item in enumerate(data, 1))
    return write_records(
        conn, records, ImportReport("seed-triplets", str(path)), opts, len(data), on_progress
    )


def _triplet_record(row: int, item: object) -> Record | Skipped:
    if not isinstance(item, dict):
        return Skipped(row, f"record is {type(item).__name__}, not an object")
    image, pos, neg = item.get("image_name"), item.get("positive"), item.get("negative")
    if not isinstance(image, str):
        return Skipped(row, "record has no 'image_name' text")
    if not isinstance(pos, str) or not isinstance(neg, str):
        return Skipped(row, "record needs 'positive' and 'negative' texts")
    if pos == neg:
        return Skipped(row, "positive and negative are the same text")
    provenance = item.get("provenance") if isinstance(item.get("provenance"), str) else "import"
    return Record(
        row=row,
        image=image,
        captions=[(pos, SOURCE, None), (neg, SOURCE, None)],
        triplets=[(pos, neg, provenance or "import", None)],
    )


def import_triplets(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """README triplets: a JSON array, or JSON Lines when the name ends in ``.jsonl``.

    ``provenance`` is kept as written (default ``import``); row numbers are records (array) or lines.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        total, items = json_lines(path, opts)
    else:
        data = load_json(path, opts)
        if not isinstance(data, list):
            raise ValueError(f"{path}: a triplets file is a JSON array (or JSON Lines named .jsonl)")
        check_rows(path, len(data), opts)
        total, items = len(data), enumerate(data, 1)
    records = (item if isinstance(item, Skipped) else _triplet_record(row, item) for row, item in items)
    return write_records(conn, records, ImportReport("triplets", str(path)), opts, total, on_progress)
