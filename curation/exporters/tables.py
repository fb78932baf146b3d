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
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.files import atomic_output
from curation.exporters.base import ExportReport
from curation.triplets import TripletFilter, filter_sql

COLUMNS = ["image", "caption", "source", "author", "created_at", "annotator", "verdict", "decided_at"]


CHUNK_ROWS = 50_000  # rows read and written at a time: memory stays flat however large the store
SCHEMA = pa.schema([(name, pa.large_string()) for name in COLUMNS])  # pandas' string columns in Parquet


def _table_query(flt: TripletFilter | None, streamed: bool = False) -> tuple[str, list]:
    """The table's query; ``streamed``: with the caption id first and ordered by it alone (the scan's
    order: no sort of every row in SQLite's temporary B-tree), the annotators ordered per caption by
    :func:`iter_chunks`."""
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
        f" SELECT {'c.id, ' if streamed else ''}i.path AS image, c.text AS caption, c.source, c.author,"
        " c.created_at, e.annotator, e.verdict,"
        " e.created_at AS decided_at FROM captions c JOIN images i ON i.id = c.image_id"
        " LEFT JOIN eff e ON e.caption_id = c.id AND e.rn = 1"
        f" WHERE i.hidden = 0 AND c.hidden = 0 AND {where} ORDER BY c.id{'' if streamed else ', e.annotator'}"
    )
    return sql, params


def caption_table(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> pd.DataFrame:
    """The whole table in memory (small stores; :func:`export_table` streams it)."""
    sql, params = _table_query(flt)
    return pd.read_sql_query(sql, conn, params=params)


def iter_chunks(conn: sqlite3.Connection, flt: TripletFilter | None = None,
                rows: int | None = None) -> Iterator[list[tuple]]:
    """The table's rows (tuples in :data:`COLUMNS` order, as :func:`caption_table`), about ``rows``
    (default CHUNK_ROWS) at a time; a caption's rows are never split between chunks."""
    sql, params = _table_query(flt, streamed=True)
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute(sql, params)
    held: list[tuple] = []  # the rows of the chunk's last caption, which may go on in the next chunk
    while chunk := cursor.fetchmany(rows or CHUNK_ROWS):
        chunk = held + chunk
        cut = len(chunk)
        while cut and chunk[cut - 1][0] == chunk[-1][0]:
            cut -= 1
        held = chunk[cut:]
        if cut:
            yield _by_annotator(chunk[:cut])
    if held:
        yield _by_annotator(held)


def _by_annotator(rows: list[tuple]) -> list[tuple]:
    """Rows in caption id order → in (caption id, annotator) order, no annotator first as in SQLite;
    the caption id dropped."""
    rows.sort(key=lambda r: (r[0], r[6] is not None, r[6] or ""))
    return [row[1:] for row in rows]


def _write_csv(chunks: Iterable[list[tuple]], path: Path) -> int:
    count = 0
    with atomic_output(path, "w") as handle:
        handle.write(",".join(COLUMNS) + "\n")
        for chunk in chunks:
            pd.DataFrame(chunk, columns=COLUMNS, dtype=object).to_csv(handle, index=False, header=False)
            count += len(chunk)
    return count


def _write_parquet(chunks: Iterable[list[tuple]], path: Path) -> int:
    count = 0
    with atomic_output(path, "wb") as handle, pq.ParquetWriter(handle, SCHEMA) as writer:
        for chunk in chunks:
            columns = list(zip(*chunk))
            writer.write_table(pa.Table.from_arrays([pa.array(col, pa.large_string()) for col in columns],
                                                    schema=SCHEMA))
            count += len(chunk)
    return count


def export_table(
    conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None, kind: str = "csv"
) -> ExportReport:
    """``kind`` csv or parquet, streamed ``CHUNK_ROWS`` rows at a time into a temporary file that replaces
    ``out`` when complete: the file is written whole or not at all."""
    if kind not in ("csv", "parquet"):
        raise ValueError(f"table export kind {kind!r} is not csv or parquet")
    path = Path(out)
    write = _write_parquet if kind == "parquet" else _write_csv
    count = write(iter_chunks(conn, flt), path)
    return ExportReport(f"decisions-{kind}", str(path), count)
