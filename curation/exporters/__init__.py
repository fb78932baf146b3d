"""Exporters: write the store's content in the formats of docs/formats.md, filtered by a TripletFilter.

:data:`EXPORTS` names every export kind with a one-line description and the suffix of what it writes
(empty for a folder), for a CLI or a UI to list; ``export_file(conn, kind, out, flt)`` runs one. Hidden
images and captions are left out of every kind.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from curation.exporters.base import ExportReport
from curation.exporters.best import BestCaption, best_captions, export_best_captions
from curation.exporters.hf_dataset import build_dataset, export_hf_dataset, export_hf_parquet
from curation.exporters.tables import caption_table, export_table
from curation.exporters.triplet_files import export_seed_triplets, export_triplets, seed_records
from curation.triplets import TripletFilter

Exporter = Callable[..., ExportReport]  # (conn, out, flt) plus image_root= where uses_images


@dataclass(frozen=True)
class ExportKind:
    description: str  # one line, for a UI or --help
    suffix: str  # of the file written; "" for a folder
    fn: Exporter
    uses_images: bool = False  # reads the image files (takes image_root)

    @property
    def folder(self) -> bool:
        return not self.suffix


EXPORTS: dict[str, ExportKind] = {
    "triplets": ExportKind(
        "Triplets (image, positive, negative), one per record, README format: what train.py reads", ".json",
        export_triplets),
    "seed-triplets": ExportKind(
        "One record per image: the best caption and its negatives (the original project's format)", ".json",
        export_seed_triplets),
    "best-captions": ExportKind(
        "The best caption of each image, JSON (CSV / Parquet for a .csv / .parquet file)", ".json",
        export_best_captions),
    "best-captions-csv": ExportKind(
        "The best caption of each image, CSV", ".csv", partial(export_best_captions, fmt="csv")),
    "best-captions-parquet": ExportKind(
        "The best caption of each image, Parquet", ".parquet", partial(export_best_captions, fmt="parquet")),
    "decisions-csv": ExportKind(
        "Every caption with each annotator's latest verdict, CSV (imports back as csv)", ".csv",
        partial(export_table, kind="csv")),
    "decisions-parquet": ExportKind(
        "Every caption with each annotator's latest verdict, Parquet", ".parquet",
        partial(export_table, kind="parquet")),
    "hf-dataset": ExportKind(
        "Hugging Face dataset folder (datasets.load_from_disk): image, best, accepted and rejected captions", "",
        export_hf_dataset, uses_images=True),
    "hf-parquet": ExportKind(
        "The Hugging Face dataset as one Parquet file (datasets.load_dataset('parquet', ...))", ".parquet",
        export_hf_parquet, uses_images=True),
}


def export_file(
    conn: sqlite3.Connection,
    kind: str,
    out: str | Path,
    flt: TripletFilter | None = None,
    image_root: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Write ``kind`` to ``out``; ``ValueError`` for an unknown kind, or an image root given to a kind that
    reads no images (default for those that do: the root each image was imported from), or a file whose
    suffix is not the CSV / Parquet kind's."""
    if kind not in EXPORTS:
        raise ValueError(f"unknown export kind {kind!r}; choose one of {', '.join(EXPORTS)}")
    spec = EXPORTS[kind]
    if spec.suffix in (".csv", ".parquet") and Path(out).suffix != spec.suffix:
        raise ValueError(f"export kind {kind!r} writes a {spec.suffix} file; {out} has another suffix")
    if spec.uses_images:
        return spec.fn(conn, Path(out), flt, image_root=image_root)
    if image_root is not None:
        raise ValueError(f"export kind {kind!r} reads no image files; an image root applies to hf-dataset, hf-parquet")
    return spec.fn(conn, Path(out), flt)


__all__ = [
    "EXPORTS",
    "BestCaption",
    "ExportKind",
    "ExportReport",
    "best_captions",
    "build_dataset",
    "caption_table",
    "export_best_captions",
    "export_file",
    "export_hf_dataset",
    "export_hf_parquet",
    "export_seed_triplets",
    "export_table",
    "export_triplets",
    "seed_records",
]
