"""``python -m curation --db PATH <command>``: import, export, stats.

Exit status: 0 on success; 1 when ``--strict`` and rows were skipped; 2 on bad input (missing or
malformed file, unknown kind, path outside the image root, a store that cannot be written, ...), with
one line on stderr naming the file and the position. An import is one transaction: when it fails,
nothing of it is in the store. ``stats`` and ``export`` open a store they cannot write read-only.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from tqdm import tqdm

from curation.exporters import EXPORTERS, export_file
from curation.importers import IMPORTERS, ImportOptions, import_file
from curation.stats import stats
from curation.store import open_store
from curation.triplets import TripletFilter

MAX_LISTED_SKIPS = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m curation", description="Caption curation store")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database (created, with its folder, if missing)")
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="import a file (idempotent)")
    imp.add_argument("kind", choices=sorted(IMPORTERS))
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--image-root", type=Path, help="folder image paths are relative to (default: the file's)"
    )
    imp.add_argument("--source", help="caption source to record instead of the importer's default")
    imp.add_argument(
        "--check-files",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each image must exist and its header decode; rows failing it are skipped (default: on;"
        " --no-check-files for a store built before the files arrive)",
    )
    imp.add_argument(
        "--image-template",
        help="ucm/karpathy: image path under the root, e.g. 'imgs/{stem}.png' or"
        " 'Images/{class}/{class}{index:02d}.tif' (default: detected; docs/formats.md)",
    )
    imp.add_argument("--batch-size", type=int, default=ImportOptions.batch_size)
    imp.add_argument("--strict", action="store_true", help="exit 1 if any row was skipped")

    exp = sub.add_parser("export", help="export the store")
    exp.add_argument("kind", choices=sorted(EXPORTERS))
    exp.add_argument("out", type=Path)
    exp.add_argument("--annotator")
    exp.add_argument("--source", action="append", help="caption source to keep (repeatable)")
    exp.add_argument("--since", help="ISO date/time, inclusive")
    exp.add_argument("--until", help="ISO date/time, inclusive")
    exp.add_argument("--split")
    exp.add_argument("--human-only", action="store_true", help="only what people decided in this store")

    st = sub.add_parser("stats", help="print statistics")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _import(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    root = args.image_root if args.image_root is not None else args.file.resolve().parent
    opts = ImportOptions(
        image_root=root,
        source=args.source,
        check_files=args.check_files,
        image_template=args.image_template,
        batch_size=args.batch_size,
    )
    bars: list[tqdm] = []  # made at the first progress report: a file refused while parsing shows no bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=f"import {args.kind}", unit="row", total=total))
        bars[0].update(done - bars[0].n)

    try:
        report = import_file(conn, args.kind, args.file, opts, on_progress=progress)
    except (sqlite3.Error, OSError) as error:  # while writing: the transaction was rolled back
        raise ImportWriteError(f"{args.file}: {error} (nothing of this import is in the store)") from error
    finally:
        for bar in bars:
            bar.close()
    print(report.summary())
    for skip in report.skipped[:MAX_LISTED_SKIPS]:
        print(f"  {args.file.name}: skipped {skip}")
    if len(report.skipped) > MAX_LISTED_SKIPS:
        print(f"  ... and {len(report.skipped) - MAX_LISTED_SKIPS} more skipped rows")
    return 1 if args.strict and report.skipped else 0


def _export(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    flt = TripletFilter(
        human_only=args.human_only,
        annotator=args.annotator,
        source=tuple(args.source) if args.source else None,
        since=args.since,
        until=args.until,
        split=args.split,
    )
    report = export_file(conn, args.kind, args.out, flt)
    print(f"wrote {report.records} {report.kind} records to {report.file}")
    return 0


def _stats(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    result = stats(conn)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    for key in (
        "images",
        "images_labelled",
        "captions",
        "decisions",
        "edits",
        "undone",
        "triplets",
        "annotators",
    ):
        print(f"{key:>16}: {result[key]}")
    print(f"{'by source':>16}: {result['captions_by_source']}")
    for who, counts in sorted(result["per_annotator"].items()):
        print(f"{who:>16}: {counts}")
    agreement = result["agreement"]
    print(f"{'disagreements':>16}: {result['disagreements']['count']}")
    print(f"{'agreement':>16}: kappa={agreement['kappa']} on {agreement['items']} items")
    return 0


COMMANDS = {"import": _import, "export": _export, "stats": _stats}
READ_ONLY_WHEN_NEEDED = ("export", "stats")


class ImportWriteError(Exception):
    """An import failed while writing; the message names the file and the cause."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        read_only = None if args.command in READ_ONLY_WHEN_NEEDED else False
        if not args.db.parent.exists():
            args.db.parent.mkdir(parents=True)  # e.g. data/ on a fresh clone
        try:
            conn = open_store(args.db, read_only=read_only)
        except sqlite3.Error as error:
            raise sqlite3.OperationalError(f"database {args.db}: {error}") from error
        try:
            return COMMANDS[args.command](conn, args)
        finally:
            conn.close()
    except (ValueError, ImportWriteError, sqlite3.Error, OSError, RecursionError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split()) if "\n" in text else text
