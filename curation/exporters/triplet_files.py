"""Triplet exports: README ``triplets`` (one record per triplet) and ``seed-triplets`` (one per image).

``seed-triplets``: for each image with triplets (in image order), ``pos`` is the image's chosen caption
(:func:`curation.exporters.best.best_captions`) when it is a positive of one of its triplets, else the
positive with the most negatives; ``negs`` are that positive's negatives, imported ones in their
original positions first, then the rest in the order they were made. ``class`` is written when known.
Exporting an imported seed file thus gives it back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

from common.formats import SeedTriplet
from curation.exporters.base import ExportReport, write_json_records
from curation.exporters.best import best_captions
from curation.triplets import Triplet, TripletFilter, iter_records, iter_triplets


def export_triplets(
    conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None
) -> ExportReport:
    """README format (docs/formats.md): a JSON array, or JSON Lines when ``out`` ends in ``.jsonl``."""
    records = iter_records(conn, flt or TripletFilter())
    return ExportReport("triplets", str(out), write_json_records(Path(out), records))


def seed_records(conn: sqlite3.Connection, flt: TripletFilter | None = None) -> Iterator[dict]:
    """Seed-format records (see the module docstring)."""
    flt = flt or TripletFilter()
    chosen = {b.image_id: b.caption_id for b in best_captions(conn, flt)}
    for image_id, group in groupby(iter_triplets(conn, flt, order="t.image_id"), key=lambda t: t.image_id):
        triplets = sorted(group, key=lambda t: (t.position is None, t.position or 0, t.id))
        by_positive: dict[int, list[Triplet]] = {}
        for t in triplets:
            by_positive.setdefault(t.positive_id, []).append(t)
        pos_id = chosen.get(image_id)
        if pos_id not in by_positive:
            pos_id = max(by_positive, key=lambda p: len(by_positive[p]))
        negs: list[str] = []
        for t in by_positive[pos_id]:
            if t.negative not in negs:
                negs.append(t.negative)
        first = by_positive[pos_id][0]
        yield SeedTriplet(first.image, first.positive, tuple(negs), first.cls).to_json()


def export_seed_triplets(
    conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None
) -> ExportReport:
    """The original project's format (docs/formats.md): a JSON array, one record per image."""
    return ExportReport("seed-triplets", str(out), write_json_records(Path(out), seed_records(conn, flt)))
