"""Triplet files: the original project's ``seed-triplets`` and the README ``triplets`` format.

Both are specified in ``docs/formats.md`` and parsed by :mod:`common.formats` under the rules the
trainer applies too (one seed record per image, no duplicate record). Their captions get source
``import``; their triplets are stored as imported triplets (origin ``import``, never rebuilt from
decisions, left out by ``TripletFilter(human_only=True)``). A seed record's ``negs`` keep their
positions so that exporting ``seed-triplets`` gives the file back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.formats import (
    FieldError,
    FormatError,
    ReadmeTriplet,
    SeedTriplet,
    check_triplets,
    json_array,
    json_lines,
    parse_readme,
    parse_seed,
)
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

SOURCE = "import"


def _record(row: int, triplet: SeedTriplet | ReadmeTriplet) -> Record:
    if isinstance(triplet, ReadmeTriplet):
        return Record(
            row=row,
            image=triplet.image,
            captions=[(triplet.positive, SOURCE, None), (triplet.negative, SOURCE, None)],
            triplets=[(triplet.positive, triplet.negative, triplet.provenance or "import", None)],
        )
    record = Record(row=row, image=triplet.image, cls=triplet.cls, captions=[(triplet.pos, SOURCE, None)])
    for position, neg in enumerate(triplet.negs):
        record.captions.append((neg, SOURCE, None))
        record.triplets.append((triplet.pos, neg, "import", position))
    return record


def _import(conn, kind, path, rows, parse, opts, on_progress) -> ImportReport:
    check_rows(path, len(rows), opts)
    items: list[Record | Skipped] = []
    parsed = []
    for row, raw in rows:
        if isinstance(raw, FormatError):
            items.append(Skipped(row, raw.reason if raw.column is None else f"column {raw.column}: {raw.reason}"))
            continue
        try:
            parsed.append((row, parse(raw)))
        except FieldError as error:
            items.append(skip(row, error))
    kept, duplicates = check_triplets(parsed)
    items += [skip(row, error) for row, error in duplicates]
    items += [_record(row, triplet) for row, triplet in kept]
    return write_records(conn, items, ImportReport(kind, str(path)), opts, on_progress)


def import_seed_triplets(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """``[{"image", "pos", "negs": [...], "class"?}]``: one record per image."""
    path = Path(path)
    check_input(path, opts)
    return _import(conn, "seed-triplets", path, json_array(path, "seed-triplets"), parse_seed, opts, on_progress)


def import_triplets(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """README triplets: a JSON array, or JSON Lines when the name ends in ``.jsonl``.

    ``provenance`` is kept as written (default ``import``); row numbers are records (array) or lines.
    """
    path = Path(path)
    check_input(path, opts)
    rows = json_lines(path) if path.suffix == ".jsonl" else json_array(path, "triplets")
    return _import(conn, "triplets", path, rows, parse_readme, opts, on_progress)
