"""``python -m curation --db PATH <command>``: import, export, stats, hide / unhide / hidden, review / resolve.

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
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from curation.cleanup import hidden_items, hide_caption, hide_image, unhide_caption, unhide_image
from curation.exporters import EXPORTS, export_file
from curation.importers import IMPORTERS, ImportOptions, import_file
from curation.importers.base import print_report
from curation.resolutions import RESOLUTION_VERDICTS
from curation.review import KINDS, ReviewOptions, resolve, review_items
from curation.stats import stats
from curation.store import find_image, open_store
from curation.triplets import TripletFilter


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
    exp.add_argument("kind", choices=list(EXPORTS), help="; ".join(f"{k}: {e.description}" for k, e in EXPORTS.items()))
    exp.add_argument("out", type=Path)
    exp.add_argument("--annotator")
    exp.add_argument("--source", action="append", help="caption source to keep (repeatable)")
    exp.add_argument("--since", help="ISO date/time, inclusive")
    exp.add_argument("--until", help="ISO date/time, inclusive")
    exp.add_argument("--split")
    exp.add_argument("--human-only", action="store_true", help="only what people decided in this store")
    exp.add_argument("--image-root", type=Path, help="hf-dataset / hf-parquet: where the image files are")

    st = sub.add_parser("stats", help="print statistics")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    _cleanup_parsers(sub)
    _review_parsers(sub)
    return parser


def _cleanup_parsers(sub: argparse._SubParsersAction) -> None:
    for command, what in (("hide", "hide an image or a caption (soft, logged)"), ("unhide", "show it again")):
        p = sub.add_parser(command, help=what)
        p.add_argument("item", choices=("image", "caption"))
        p.add_argument("target", nargs="?", help="image path (relative to the image root) or caption id")
        p.add_argument("--id", type=int, help="image id instead of its path")
        p.add_argument("--who", required=True, help="who hides / unhides (recorded)")
        p.add_argument("--reason", help="why (recorded)")
    hid = sub.add_parser("hidden", help="list what is hidden, with who, when and why")
    hid.add_argument("--json", action="store_true", help="print one JSON array")


def _review_parsers(sub: argparse._SubParsersAction) -> None:
    rev = sub.add_parser("review", help="list disagreements and decisions the model contradicts")
    rev.add_argument("--kind", action="append", choices=KINDS, help="kinds to list (repeatable; default all)")
    rev.add_argument("--accepted-gap", type=float, default=ReviewOptions.accepted_gap)
    rev.add_argument("--rejected-margin", type=float, default=ReviewOptions.rejected_margin)
    rev.add_argument("--include-resolved", action="store_true")
    rev.add_argument("--json", action="store_true", help="print one JSON array")
    res = sub.add_parser("resolve", help="record a reviewer's verdict on a caption (overrides annotators)")
    res.add_argument("image_id", type=int)
    res.add_argument("caption_id", type=int)
    res.add_argument("verdict", choices=RESOLUTION_VERDICTS)
    res.add_argument("--who", required=True, help="the reviewer")
    res.add_argument("--note")


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
    return print_report(report, f"{args.file.name}: ", args.strict)


def _export(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    flt = TripletFilter(
        human_only=args.human_only,
        annotator=args.annotator,
        source=tuple(args.source) if args.source else None,
        since=args.since,
        until=args.until,
        split=args.split,
    )
    report = export_file(conn, args.kind, args.out, flt, image_root=args.image_root)
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


def _target(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    if args.item == "caption":
        if args.id is not None or args.target is None or not args.target.isdigit():
            raise ValueError(f"{args.command} caption: give the caption id (a number), not {args.target!r}")
        return int(args.target)
    if (args.id is None) == (args.target is None):
        raise ValueError(f"{args.command} image: give an image path or --id, one of them")
    if args.id is not None:
        return args.id
    image_id = find_image(conn, args.target)
    if image_id is None:
        raise ValueError(f"image {args.target!r} is not in the store")
    return image_id


def _hide(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    functions = {("hide", "image"): hide_image, ("hide", "caption"): hide_caption,
                 ("unhide", "image"): unhide_image, ("unhide", "caption"): unhide_caption}
    action = functions[(args.command, args.item)](conn, _target(conn, args), args.who, args.reason)
    print(f"{action.action} {action.item} {action.item_id} by {action.who} at {action.created_at}")
    return 0


def _hidden(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    items = hidden_items(conn)
    if args.json:
        print(json.dumps([asdict(item) for item in items], ensure_ascii=False))
        return 0
    for h in items:
        what = h.image if h.item == "image" else f"{h.image}: {h.text!r}"
        print(f"{h.item} {h.item_id}  {what}  hidden by {h.who} at {h.hidden_at}  {h.reason or ''}".rstrip())
    print(f"{len(items)} hidden")
    return 0


def _review(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    opts = ReviewOptions(accepted_gap=args.accepted_gap, rejected_margin=args.rejected_margin,
                         include_resolved=args.include_resolved, kinds=tuple(args.kind or KINDS))
    items = review_items(conn, opts)
    if args.json:
        print(json.dumps([asdict(item) for item in items], ensure_ascii=False))
        return 0
    for item in items:
        print(f"[{item.kind}] image {item.image_id} {item.image}: {item.reason}")
        for c in item.captions:
            score = "—" if c.score is None else f"{c.score:.3f} (#{c.rank})"
            print(f"    caption {c.caption_id} {score} {c.verdicts} {c.text!r}")
    print(f"{len(items)} items to review")
    return 0


def _resolve(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    r = resolve(conn, args.image_id, args.caption_id, args.verdict, args.who, args.note)
    print(f"resolution {r.id}: caption {r.caption_id} of image {r.image_id} → {r.verdict} by {r.reviewer}")
    return 0


COMMANDS = {"import": _import, "export": _export, "stats": _stats, "hide": _hide, "unhide": _hide,
            "hidden": _hidden, "review": _review, "resolve": _resolve}
READ_ONLY_WHEN_NEEDED = ("export", "stats", "hidden", "review")


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
