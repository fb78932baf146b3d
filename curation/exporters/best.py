"""The best caption per image: one chosen caption for downstream work (e.g. SAR-to-optical translation).

Choice for an image, among the captions matching the filter:

1. a caption whose latest effective verdict by some annotator is ``best`` — the most recent such
   decision wins when annotators disagree (the disagreement stays visible in ``stats``);
2. else the most recently accepted caption;
3. else (unless ``human_only``) the positive of the image's first imported triplet — a seed file's
   ``pos``, which that format defines as the best caption (annotator empty, time of the import).

A reviewer's resolution (:mod:`curation.resolutions`) comes before all of these: a caption resolved
``best`` is chosen (the reviewer stands as its annotator), and a resolved caption's verdict replaces the
annotators' in steps 1 and 2. Hidden images and captions (:mod:`curation.cleanup`) are never chosen.

Written as a JSON array, CSV or Parquet with columns ``image, caption, annotator, decided_at, source``
(docs/formats.md): kind ``best-captions`` picks the format by the file's suffix (JSON unless ``.csv`` /
``.parquet``), ``best-captions-csv`` / ``best-captions-parquet`` name it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from curation.exporters.base import ExportReport, write_frame, write_json_records
from curation.resolutions import resolutions_in_force, resolved_verdict
from curation.triplets import TripletFilter, filter_sql

RANK = {"best": 2, "accept": 1}
COLUMNS = ["image", "caption", "annotator", "decided_at", "source"]


@dataclass(frozen=True)
class BestCaption:
    image_id: int
    caption_id: int
    image: str
    caption: str
    annotator: str | None
    decided_at: str
    source: str

    def record(self) -> dict:
        return {k: asdict(self)[k] for k in COLUMNS}


def _source(flt: TripletFilter) -> tuple[str, list]:
    if not flt.source:
        return "1", []
    return f"c.source IN ({','.join('?' * len(flt.source))})", list(flt.source)


def _human_choices(conn: sqlite3.Connection, flt: TripletFilter) -> dict[int, tuple]:
    where, params = filter_sql(flt, "d.created_at", "d.annotator")
    source_where, source_params = _source(flt)
    latest: dict[tuple[int, int, str], tuple] = {}
    for row in conn.execute(
        "SELECT d.id, d.image_id, d.caption_id, d.annotator, d.verdict, d.created_at, i.path, c.text,"
        " c.source"
        " FROM effective_decisions d JOIN images i ON i.id = d.image_id JOIN captions c ON c.id = d.caption_id"
        " WHERE d.verdict IN ('accept', 'reject', 'best') AND i.hidden = 0 AND c.hidden = 0"
        f" AND {where} AND {source_where} ORDER BY d.id",
        params + source_params,
    ):
        latest[(row[1], row[2], row[3])] = row
    resolved = resolutions_in_force(conn)
    chosen: dict[int, tuple] = {}
    for row in latest.values():
        verdict = resolved_verdict(row[2], row[4], row[1], resolved)
        if verdict not in RANK:
            continue
        current = chosen.get(row[1])
        if current is None or (RANK[verdict], row[0]) > (current[0], current[1][0]):
            chosen[row[1]] = (RANK[verdict], row)
    return {img: row for img, (_, row) in chosen.items()}


def _resolved_best(conn: sqlite3.Connection, flt: TripletFilter) -> dict[int, BestCaption]:
    """image id → its caption a reviewer resolved as ``best`` (the reviewer stands as annotator)."""
    where, params = filter_sql(replace(flt, annotator=None), "r.created_at", None)
    source_where, source_params = _source(flt)
    best = {r.id for r in resolutions_in_force(conn).values() if r.verdict == "best"}
    rows = conn.execute(
        "SELECT r.id, r.image_id, r.caption_id, i.path, c.text, r.reviewer, r.created_at, c.source"
        " FROM resolutions r JOIN images i ON i.id = r.image_id JOIN captions c ON c.id = r.caption_id"
        f" WHERE i.hidden = 0 AND c.hidden = 0 AND {where} AND {source_where} ORDER BY r.id",
        params + source_params,
    )
    return {row[1]: BestCaption(*row[1:]) for row in rows if row[0] in best}


def _imported_choices(conn: sqlite3.Connection, flt: TripletFilter) -> dict[int, tuple]:
    where, params = filter_sql(
        TripletFilter(since=flt.since, until=flt.until, split=flt.split), "t.created_at", None
    )
    source_where, source_params = _source(flt)
    rows = conn.execute(
        "SELECT t.image_id, t.positive_id, i.path, c.text, t.created_at, c.source FROM triplets t"
        " JOIN images i ON i.id = t.image_id JOIN captions c ON c.id = t.positive_id"
        " WHERE t.id IN (SELECT min(u.id) FROM triplets u JOIN captions q ON q.id = u.positive_id"
        " WHERE u.origin = 'import' AND q.hidden = 0 GROUP BY u.image_id)"
        f" AND i.hidden = 0 AND {where} AND {source_where}",
        params + source_params,
    )
    return {row[0]: row for row in rows}


def best_captions(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> list[BestCaption]:
    """The chosen caption of every image that has one under ``flt``, by image id."""
    flt = flt or TripletFilter()
    out = {
        img: BestCaption(img, r[2], r[6], r[7], r[3], r[5], r[8])
        for img, r in _human_choices(conn, flt).items()
    }
    out.update(_resolved_best(conn, flt))
    if not flt.human_only and flt.annotator is None:
        for img, r in _imported_choices(conn, flt).items():
            out.setdefault(img, BestCaption(img, r[1], r[2], r[3], None, r[4], r[5]))
    return [out[img] for img in sorted(out)]


FORMATS = {"json": "best-captions", "csv": "best-captions-csv", "parquet": "best-captions-parquet"}


def export_best_captions(
    conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None, fmt: str | None = None
) -> ExportReport:
    """``fmt`` json (an array; JSON Lines when ``out`` ends in ``.jsonl``), csv or parquet (through pandas);
    ``None``: csv / parquet for a ``.csv`` / ``.parquet`` file, else json."""
    path = Path(out)
    if fmt is None:
        fmt = path.suffix[1:] if path.suffix in (".csv", ".parquet") else "json"
    if fmt not in FORMATS:
        raise ValueError(f"best-captions format {fmt!r} is not one of {', '.join(FORMATS)}")
    rows = best_captions(conn, flt)
    if fmt == "json":
        write_json_records(path, (r.record() for r in rows))
    else:
        frame = pd.DataFrame([r.record() for r in rows], columns=COLUMNS)
        write_frame(frame, path, parquet=fmt == "parquet")
    return ExportReport(FORMATS[fmt], str(path), len(rows))
