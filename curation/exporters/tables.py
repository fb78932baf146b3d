"""Decision tables (``decisions-csv``, ``decisions-parquet``): every caption with each annotator's latest verdict.

Columns ``image, caption, source, author, created_at, annotator, verdict, decided_at``; a caption no
one judged has one row with empty verdict columns, a caption judged by two annotators has two rows.
The first three columns are the candidate-captions CSV of docs/formats.md, so the ``csv`` importer
reads this file back. Hidden images and captions are left out. Filters: ``annotator`` and
``human_only`` keep judged rows only; ``since`` / ``until`` apply to the decision time (caption time
for unjudged rows). The verdicts are the annotators' own; reviewers' resolutions are not applied here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from curation.exporters.base import ExportReport, write_frame
from curation.triplets import TripletFilter, filter_sql

COLUMNS = ["image", "caption", "source", "author", "created_at", "annotator", "verdict", "decided_at"]


def caption_table(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> pd.DataFrame:
    flt = flt or TripletFilter()
    where, params = filter_sql(flt, "coalesce(e.created_at, c.created_at)", "e.annotator")
    if flt.source:
        where += f" AND c.source IN ({','.join('?' * len(flt.source))})"
        params += list(flt.source)
    if flt.human_only:
        where += " AND e.verdict IS NOT NULL"
    sql = (
        "WITH eff AS (SELECT d.caption_id, d.annotator, d.verdict, d.created_at,"
        " row_number() OVER (PARTITION BY d.caption_id, d.annotator ORDER BY d.id DESC) AS rn"
        " FROM effective_decisions d WHERE d.verdict IN ('accept', 'reject', 'best'))"
        " SELECT i.path AS image, c.text AS caption, c.source, c.author, c.created_at, e.annotator,"
        " e.verdict,"
        " e.created_at AS decided_at FROM captions c JOIN images i ON i.id = c.image_id"
        " LEFT JOIN eff e ON e.caption_id = c.id AND e.rn = 1"
        f" WHERE i.hidden = 0 AND c.hidden = 0 AND {where} ORDER BY c.id, e.annotator"
    )
    return pd.read_sql_query(sql, conn, params=params)


def export_table(
    conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None, kind: str = "csv"
) -> ExportReport:
    """``kind`` csv or parquet; the file is written whole or not at all."""
    if kind not in ("csv", "parquet"):
        raise ValueError(f"table export kind {kind!r} is not csv or parquet")
    path = Path(out)
    frame = caption_table(conn, flt)
    write_frame(frame, path, parquet=kind == "parquet")
    return ExportReport(f"decisions-{kind}", str(path), len(frame))
