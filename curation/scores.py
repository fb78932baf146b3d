"""Import a corpus rank job's scores into the store.

    python -m curation.scores --db data/curation.db shards/ --model-version 3 [--strict]

``shards/`` is the output folder of ``inference_script.py --rank --input ... --output_dir shards/``
(``shard-00000.parquet`` ...: columns ``record``, ``image``, ``captions`` = list of {text, score}). Each
row's ``image`` is matched to the store's image of that path (relative to the image root, as the
importers record it) and each caption to that image's caption of the same text; the scores go through
:func:`curation.queue.record_scores` under the given model version (margins and queue order follow).
Rows whose image or caption the store lacks are reported (file, record, reason) and skipped; the shard
files are only read. Shards are read batch by batch, so memory does not grow with the corpus.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
from tqdm import tqdm

from curation.importers.base import print_report
from curation.queue import record_scores
from curation.store import open_store


@dataclass
class ScoresReport:
    rows: int = 0
    scores: int = 0
    skipped: list[str] = field(default_factory=list)  # "<file> record <n>: <reason>"

    def summary(self) -> str:
        return f"{self.rows} rows read, {self.scores} scores recorded, {len(self.skipped)} skipped"


def _row_scores(conn: sqlite3.Connection, row: dict, where: str, report: ScoresReport) -> list[tuple[int, int, float]]:
    path = PurePosixPath(row["image"]).as_posix()
    found = conn.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
    if found is None:
        report.skipped.append(f"{where}: image {path!r} is not in the store")
        return []
    captions = dict(conn.execute("SELECT text, id FROM captions WHERE image_id = ?", (found[0],)).fetchall())
    out = []
    for caption in row["captions"]:
        if caption["text"] in captions:
            out.append((found[0], captions[caption["text"]], caption["score"]))
        else:
            report.skipped.append(f"{where}: caption {caption['text'][:60]!r} is not on image {path!r}")
    return out


def import_scores(conn: sqlite3.Connection, folder: Path, model_version: int, batch_rows: int = 5000) -> ScoresReport:
    """Record every score of a rank job's shards under ``model_version``; see the module docstring."""
    shards = sorted(Path(folder).glob("shard-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no shard-*.parquet files in {folder}")
    report = ScoresReport()
    for path in tqdm(shards, desc="import scores", unit="shard"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["record", "image", "captions"]):
            triples = []
            for row in batch.to_pylist():
                report.rows += 1
                triples.extend(_row_scores(conn, row, f"{path.name} record {row['record']}", report))
            report.scores += record_scores(conn, model_version, triples) if triples else 0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curation.scores", description="Import a rank job's scores")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database")
    parser.add_argument("folder", type=Path, help="output folder of a corpus rank job")
    parser.add_argument("--model-version", required=True, type=int, help="the store's model version id")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any row or caption was skipped")
    args = parser.parse_args(argv)
    try:
        if not args.db.is_file():
            raise FileNotFoundError(f"database not found: {args.db}")
        conn = open_store(args.db)
        try:
            report = import_scores(conn, args.folder, args.model_version)
        finally:
            conn.close()
    except (ValueError, FileNotFoundError, KeyError, sqlite3.DatabaseError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return print_report(report, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
