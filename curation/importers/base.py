"""What every importer shares: options, the report, parsed records, and the batched writer.

An importer parses its file into :class:`Record` objects (one image, its captions, maybe triplets)
or :class:`Skipped` rows, and hands them to :func:`write_records`. The writer commits every
``batch_size`` records in one transaction: a record is written whole or not at all, so a process
killed mid-import leaves a consistent database, and since every write is idempotent (images by path,
captions by (image, text), triplets by their ends and provenance) re-running completes the import.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.paths import resolve_inside
from curation.store import (
    MAX_CAPTION_CHARS,
    check_caption_text,
    file_sha256,
    normalize_image_path,
    now_iso,
    transaction,
)
from curation.triplets import add_imported_triplets

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportOptions:
    """``image_root``: folder the image paths are relative to (checked with ``resolve_inside``);
    ``source`` overrides the caption source the importer would set; ``check_files`` requires each
    image file to exist and records its sha256 and size."""

    image_root: Path | None = None
    source: str | None = None
    check_files: bool = False
    max_file_bytes: int = 4 << 30
    max_rows: int = 10_000_000
    max_caption_chars: int = MAX_CAPTION_CHARS
    batch_size: int = 2000


@dataclass(frozen=True)
class Skipped:
    row: int
    reason: str


@dataclass
class ImportReport:
    kind: str
    file: str
    rows: int = 0
    images_added: int = 0
    images_existing: int = 0
    captions_added: int = 0
    captions_existing: int = 0
    triplets_added: int = 0
    triplets_existing: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.kind} {self.file}: {self.rows} rows;"
            f" images +{self.images_added} ({self.images_existing} present);"
            f" captions +{self.captions_added} ({self.captions_existing} present);"
            f" triplets +{self.triplets_added} ({self.triplets_existing} present);"
            f" {len(self.skipped)} skipped"
        )


@dataclass
class Record:
    """One image and what a file says about it. ``triplets`` are (positive, negative, provenance,
    position) texts, each of which must also be in ``captions`` as (text, source, author)."""

    row: int
    image: str
    cls: str | None = None
    split: str | None = None
    captions: list[tuple[str, str, str | None]] = field(default_factory=list)
    triplets: list[tuple[str, str, str, int | None]] = field(default_factory=list)


def check_input(path: Path, opts: ImportOptions) -> None:
    """``FileNotFoundError`` / ``ValueError`` naming the file if it is missing or over the size limit."""
    if not path.is_file():
        raise FileNotFoundError(f"import file {path} does not exist")
    size = path.stat().st_size
    if size > opts.max_file_bytes:
        raise ValueError(f"import file {path} has {size} bytes, more than the limit {opts.max_file_bytes}")
    if opts.image_root is not None and not Path(opts.image_root).is_dir():
        raise FileNotFoundError(f"image root {opts.image_root} is not a folder")


def load_json(path: Path, opts: ImportOptions) -> object:
    check_input(path, opts)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def check_rows(path: Path, count: int, opts: ImportOptions) -> None:
    if count > opts.max_rows:
        raise ValueError(f"{path}: {count} rows, more than the limit {opts.max_rows}")


def write_records(
    conn: sqlite3.Connection,
    items: Iterable[Record | Skipped],
    report: ImportReport,
    opts: ImportOptions,
    total: int,
    on_progress: ProgressFn | None = None,
) -> ImportReport:
    """Write records in transactions of ``opts.batch_size``; skipped rows go into the report."""
    batch: list[Record] = []
    done = 0
    seen: dict[str, int] = {}  # image path as written → id, so rows of one image resolve it once
    for item in items:
        report.rows += 1
        if isinstance(item, Skipped):
            report.skipped.append(item)
            continue
        batch.append(item)
        if len(batch) >= opts.batch_size:
            done = _flush(conn, batch, report, opts, seen, done, total, on_progress)
    _flush(conn, batch, report, opts, seen, done, total, on_progress)
    report.skipped.sort(key=lambda skip: skip.row)
    if report.skipped:
        log.warning("%s: %d rows skipped", report.file, len(report.skipped))
    return report


def _flush(
    conn: sqlite3.Connection,
    batch: list[Record],
    report: ImportReport,
    opts: ImportOptions,
    seen: dict[str, int],
    done: int,
    total: int,
    on_progress: ProgressFn | None,
) -> int:
    with transaction(conn):
        stamp = now_iso()
        for record in batch:
            image_id = seen.get(record.image)
            if image_id is None:
                image_id = _image_id(conn, record, report, opts, stamp)
            if image_id is not None:
                seen[record.image] = image_id
                _write_record(conn, image_id, record, report, opts, stamp)
    done += len(batch)
    batch.clear()
    if on_progress is not None:
        on_progress(done, total)
    return done


def _image_id(
    conn: sqlite3.Connection, record: Record, report: ImportReport, opts: ImportOptions, stamp: str
) -> int | None:
    try:
        path = normalize_image_path(record.image, opts.image_root)
    except (TypeError, ValueError) as error:
        report.skipped.append(Skipped(record.row, str(error)))
        return None
    sha256 = size = None
    if opts.check_files:
        file = resolve_inside(opts.image_root or Path.cwd(), path)
        if not file.is_file():
            report.skipped.append(Skipped(record.row, f"image file {path} not found under {opts.image_root}"))
            return None
        sha256, size = file_sha256(file), file.stat().st_size
    row = conn.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
    if row is not None:
        report.images_existing += 1
        conn.execute(
            "UPDATE images SET class = coalesce(class, ?), split = coalesce(split, ?),"
            " sha256 = coalesce(sha256, ?),"
            " bytes = coalesce(bytes, ?) WHERE id = ?",
            (record.cls, record.split, sha256, size, row[0]),
        )
        return row[0]
    report.images_added += 1
    root = str(Path(opts.image_root).resolve()) if opts.image_root is not None else None
    return conn.execute(
        "INSERT INTO images(path, root, class, split, sha256, bytes, created_at) VALUES (?,?,?,?,?,?,?)",
        (path, root, record.cls, record.split, sha256, size, stamp),
    ).lastrowid


def _write_record(
    conn: sqlite3.Connection,
    image_id: int,
    record: Record,
    report: ImportReport,
    opts: ImportOptions,
    stamp: str,
) -> None:
    ids: dict[str, int] = {}
    for text, source, author in record.captions:
        reason = check_caption_text(text, opts.max_caption_chars)
        if reason:
            report.skipped.append(Skipped(record.row, f"{reason}: {str(text)[:60]!r}"))
            continue
        cursor = conn.execute(
            "INSERT OR IGNORE INTO captions(image_id, text, source, author, created_at) VALUES (?,?,?,?,?)",
            (image_id, text, opts.source or source, author, stamp),
        )
        if cursor.rowcount == 1:
            report.captions_added += 1
            ids[text] = cursor.lastrowid
        else:
            report.captions_existing += 1
            ids[text] = conn.execute(
                "SELECT id FROM captions WHERE image_id = ? AND text = ?", (image_id, text)
            ).fetchone()[0]
    rows = [
        (image_id, ids[pos], ids[neg], provenance, position, stamp)
        for pos, neg, provenance, position in record.triplets
        if pos in ids and neg in ids
    ]
    added = add_imported_triplets(conn, rows)
    report.triplets_added += added
    report.triplets_existing += len(rows) - added


def text_field(item: dict, keys: tuple[str, ...]) -> object:
    """The first of ``keys`` present in ``item``, or ``None``."""
    return next((item[k] for k in keys if k in item), None)


def json_lines(path: Path, opts: ImportOptions) -> tuple[int, Iterator[tuple[int, object]]]:
    """(line count, (line number, parsed object or Skipped)) for a JSON Lines file; blank lines ignored."""
    check_input(path, opts)
    with open(path, "rb") as handle:
        total = sum(1 for line in handle if line.strip())
    check_rows(path, total, opts)

    def lines() -> Iterator[tuple[int, object]]:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    yield number, json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    yield number, Skipped(number, "line is not UTF-8 text")
                except json.JSONDecodeError as error:
                    yield number, Skipped(number, f"line is not valid JSON ({error.msg})")

    return total, lines()
