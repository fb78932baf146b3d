"""What every importer shares: options, the report, parsed records, the file checks and the writer.

An importer parses its whole file (through :mod:`common.formats`, whose rules it shares with the
trainer) into :class:`Record` objects or :class:`Skipped` rows and hands them to :func:`write_records`.

Transaction rule: **all or nothing.** The file is parsed and every row checked first (fields, paths,
image files); a file that cannot be read raises before anything is written. Then every record is
written in ONE transaction: either the whole import is in the store, or (on any failure, a full disk
or a killed process) none of it is. Writes are idempotent (images by path, captions by (image, text),
triplets by their ends and provenance), so running the import again is always safe.

Image checks (``ImportOptions.check_files``, on by default): the image must exist under the image
root and its header must decode (PIL ``Image.open`` and its size, no full decode); its sha256, size,
width and height are recorded. A row whose image is missing or unreadable is skipped with the reason.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from common.formats import FieldError
from common.paths import PathOutsideRootError, resolve_inside
from curation.store import file_sha256, now_iso, transaction
from curation.triplets import add_imported_triplets

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


MAX_LISTED_SKIPS = 20  # a command prints this many skipped rows, then a count of the rest


def print_report(report, label: str = "", strict: bool = False) -> int:
    """Print an import's summary and its first skipped rows (each prefixed with ``label``) → the command's
    exit status: 1 under ``strict`` when anything was skipped, else 0."""
    print(report.summary())
    for skipped in report.skipped[:MAX_LISTED_SKIPS]:
        print(f"  {label}skipped {skipped}")
    if len(report.skipped) > MAX_LISTED_SKIPS:
        print(f"  ... and {len(report.skipped) - MAX_LISTED_SKIPS} more skipped rows")
    return 1 if strict and report.skipped else 0


@dataclass(frozen=True)
class ImportOptions:
    """``image_root``: folder the image paths are relative to (default: the current folder);
    ``source`` overrides the caption source the importer would set; ``check_files``: each image
    must exist and its header decode (rows failing it are skipped), False for stores built before
    the files arrive; ``image_template``: how ``ucm`` / ``karpathy`` entries name their files
    (None: detected, see :mod:`curation.importers.karpathy`); ``batch_size``: records between
    progress reports (the import is one transaction whatever its size)."""

    image_root: Path | None = None
    source: str | None = None
    check_files: bool = True
    image_template: str | None = None
    max_file_bytes: int = 4 << 30
    max_rows: int = 10_000_000
    batch_size: int = 2000


@dataclass(frozen=True)
class Skipped:
    """A row left out: its number in the file (record, or line for JSON Lines and CSV), why, and the field."""

    row: int
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        return f"row {self.row}" + (f" ({self.field})" if self.field else "") + f": {self.reason}"


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
    notes: list[str] = field(default_factory=list)  # choices the importer made (e.g. the image template)

    def summary(self) -> str:
        notes = "".join(f"; {note}" for note in self.notes)
        return (
            f"{self.kind} {self.file}: {self.rows} rows;"
            f" images +{self.images_added} ({self.images_existing} present);"
            f" captions +{self.captions_added} ({self.captions_existing} present);"
            f" triplets +{self.triplets_added} ({self.triplets_existing} present);"
            f" {len(self.skipped)} skipped{notes}"
        )


@dataclass
class Record:
    """One image and what a file says about it. ``triplets`` are (positive, negative, provenance,
    position) texts, each of which is also in ``captions`` as (text, source, author)."""

    row: int
    image: str
    cls: str | None = None
    split: str | None = None
    captions: list[tuple[str, str, str | None]] = field(default_factory=list)
    triplets: list[tuple[str, str, str, int | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ImageFile:
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None


def skip(row: int, error: Exception) -> Skipped:
    """A :class:`Skipped` from a rule's error, keeping the field it names."""
    if isinstance(error, FieldError):
        return Skipped(row, error.message, error.field)
    return Skipped(row, str(error))


def check_input(path: Path, opts: ImportOptions) -> None:
    """``FileNotFoundError`` / ``ValueError`` naming the file if it is missing or over the size limit."""
    if not path.is_file():
        raise FileNotFoundError(f"import file {path} does not exist")
    size = path.stat().st_size
    if size > opts.max_file_bytes:
        raise ValueError(f"import file {path} has {size} bytes, more than the limit {opts.max_file_bytes}")
    if opts.image_root is not None and not Path(opts.image_root).is_dir():
        raise FileNotFoundError(f"image root {opts.image_root} is not a folder")


def check_rows(path: Path, count: int, opts: ImportOptions) -> None:
    if count > opts.max_rows:
        raise ValueError(f"{path}: {count} rows, more than the limit {opts.max_rows}")


def image_root(opts: ImportOptions) -> Path:
    return Path(opts.image_root) if opts.image_root is not None else Path.cwd()


def probe_image(file: Path) -> ImageFile:
    """sha256, size and the pixel size read from the header; ``ValueError`` saying why not if the
    file is missing or its header does not decode (the caller names the file)."""
    if not file.is_file():
        raise ValueError("not found")
    try:
        with Image.open(file) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - PIL's plugins raise many kinds; the row is skipped, named
        raise ValueError(f"is not a readable image ({type(error).__name__}: {error})") from error
    return ImageFile(file_sha256(file), file.stat().st_size, width, height)


def write_records(
    conn: sqlite3.Connection,
    items: Iterable[Record | Skipped],
    report: ImportReport,
    opts: ImportOptions,
    on_progress: ProgressFn | None = None,
) -> ImportReport:
    """Check every record's image (path inside the root; file, if ``check_files``), then write all of
    them in one transaction. ``report`` is filled in; progress runs over both phases."""
    items = list(items)
    total, done = 2 * len(items), 0
    checked: list[tuple[Record, ImageFile]] = []
    files: dict[str, ImageFile | str] = {}  # image path → what the check found, or why it failed
    for item in items:
        report.rows += 1
        done += 1
        if isinstance(item, Skipped):
            report.skipped.append(item)
        else:
            found = files.get(item.image) or files.setdefault(item.image, _check_image(item.image, opts))
            if isinstance(found, str):
                report.skipped.append(Skipped(item.row, found, "image"))
            else:
                checked.append((item, found))
        if on_progress is not None and done % opts.batch_size == 0:
            on_progress(done, total)
    done = total - len(checked)
    _write(conn, checked, report, opts, done, total, on_progress)
    report.skipped.sort(key=lambda skipped: skipped.row)
    if report.skipped:
        log.warning("%s: %d rows skipped", report.file, len(report.skipped))
    return report


def _check_image(path: str, opts: ImportOptions) -> ImageFile | str:
    try:
        file = resolve_inside(image_root(opts), path)
    except PathOutsideRootError as error:
        return str(error)
    if not opts.check_files:
        return ImageFile()
    try:
        return probe_image(file)
    except ValueError as error:
        return f"image file {path} {error} (under the image root {image_root(opts)})"


def _write(
    conn: sqlite3.Connection,
    checked: list[tuple[Record, ImageFile]],
    report: ImportReport,
    opts: ImportOptions,
    done: int,
    total: int,
    on_progress: ProgressFn | None,
) -> None:
    seen: dict[str, int] = {}  # image path → id, so rows of one image resolve it once
    root = str(image_root(opts).resolve())
    stamp = now_iso()
    with transaction(conn):
        for record, file in checked:
            image_id = seen.get(record.image)
            if image_id is None:
                image_id = seen[record.image] = _image_id(conn, record, file, report, root, stamp)
            _write_record(conn, image_id, record, report, opts, stamp)
            done += 1
            if on_progress is not None and done % opts.batch_size == 0:
                on_progress(done, total)
    if on_progress is not None:
        on_progress(total, total)


def _image_id(
    conn: sqlite3.Connection, record: Record, file: ImageFile, report: ImportReport, root: str, stamp: str
) -> int:
    row = conn.execute("SELECT id FROM images WHERE path = ?", (record.image,)).fetchone()
    if row is not None:
        report.images_existing += 1
        conn.execute(
            "UPDATE images SET class = coalesce(class, ?), split = coalesce(split, ?),"
            " sha256 = coalesce(sha256, ?), bytes = coalesce(bytes, ?), width = coalesce(width, ?),"
            " height = coalesce(height, ?) WHERE id = ?",
            (record.cls, record.split, file.sha256, file.bytes, file.width, file.height, row[0]),
        )
        return row[0]
    report.images_added += 1
    return conn.execute(
        "INSERT INTO images(path, root, class, split, sha256, bytes, width, height, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (record.image, root, record.cls, record.split, file.sha256, file.bytes, file.width, file.height, stamp),
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
        if text in ids:  # the same text twice in one record: stored once
            report.captions_existing += 1
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
    ]
    added = add_imported_triplets(conn, rows)
    report.triplets_added += added
    report.triplets_existing += len(rows) - added
