"""Karpathy-format caption files (RSICD, RSITMD, Sydney, UCM-Captions) and the UC Merced folder.

Karpathy format: ``{"images": [{"filename": "...", "filepath"?: "...", "split": "train",
"sentences": [{"raw": "...", "tokens": [...]}]}], "dataset"?: "..."}``, parsed entry by entry by
:func:`common.formats.parse_karpathy_image`. Each sentence becomes a caption; ``raw`` is kept verbatim
(tokens joined by spaces when ``raw`` is missing).

Image files are found through an **image template** (``ImportOptions.image_template``, CLI
``--image-template``): a path under the image root with the fields ``{filename}`` (as in the file),
``{stem}`` (without its suffix), ``{suffix}``, ``{folder}`` (the entry's ``filepath`` and a ``/``, or
empty) and, for ``ucm`` only, ``{number}`` (UCM-Captions number N), ``{class}`` and ``{index}`` (0-99
within the class; ``{index:02d}`` pads it). Without a template the importer tries the candidates below
on every entry and takes the one that finds the most files under the root (the first on a tie, the
first when none finds any), and says which in the report.

UC Merced: UCM-Captions numbers images ``1.tif`` … ``2100.tif``; image ``N`` is class
``UCM_CLASSES[(N-1)//100]``, file ``Images/<class>/<class>NN.tif`` with NN = ``(N-1) % 100``
(see ``../shared/data/ucm/README.md``); the shared copy holds ``imgs/N.png``.
"""

from __future__ import annotations

import sqlite3
import string
from pathlib import Path

from common.formats import FieldError, FormatError, KarpathyImage, image_path, load_json, parse_karpathy_image
from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_input,
    check_rows,
    image_root,
    skip,
    write_records,
)

UCM_CLASSES = (
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
)
UCM_PER_CLASS = 100

KARPATHY_FIELDS = ("filename", "stem", "suffix", "folder")
UCM_FIELDS = KARPATHY_FIELDS + ("number", "class", "index")
KARPATHY_TEMPLATES = ("{folder}{filename}", "{filename}", "images/{filename}", "imgs/{filename}", "imgs/{stem}.png")
UCM_TEMPLATES = (
    "Images/{class}/{class}{index:02d}.tif",
    "{class}/{class}{index:02d}.tif",
    "imgs/{stem}.png",
    "imgs_tif/{stem}.tif",
    "{filename}",
)


def ucm_image(number: int, prefix: str = "Images/") -> tuple[str, str]:
    """UCM-Captions image number (1-based) → (``Images/<class>/<class>NN.tif``, class)."""
    if not 1 <= number <= len(UCM_CLASSES) * UCM_PER_CLASS:
        raise ValueError(
            f"UCM-Captions image number {number} is outside 1..{len(UCM_CLASSES) * UCM_PER_CLASS}"
        )
    cls = UCM_CLASSES[(number - 1) // UCM_PER_CLASS]
    return f"{prefix}{cls}/{cls}{(number - 1) % UCM_PER_CLASS:02d}.tif", cls


def check_template(template: str, allowed: tuple[str, ...]) -> str:
    """``template`` if it only uses ``allowed`` fields (no attribute or index access), else ValueError."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ValueError(f"image template {template!r}: {error}") from error
    bad = [name for name in names if name not in allowed]
    if bad or not names:
        raise ValueError(
            f"image template {template!r} uses {bad or 'no field'}; its fields are {', '.join(allowed)}"
        )
    return template


def _fields(entry: KarpathyImage, ucm: bool) -> dict:
    name = Path(entry.filename)
    fields = {"filename": entry.filename, "stem": name.stem, "suffix": name.suffix,
              "folder": f"{entry.filepath}/" if entry.filepath else ""}
    if ucm:
        if not name.stem.isdigit() or len(name.stem) > 6:
            raise FieldError("filename", f"{entry.filename!r} is not a UCM-Captions number N.tif")
        number = int(name.stem)
        try:
            _, cls = ucm_image(number)
        except ValueError as error:
            raise FieldError("filename", str(error)) from error
        fields |= {"number": number, "class": cls, "index": (number - 1) % UCM_PER_CLASS}
    return fields


def _render(template: str, fields: dict) -> str:
    try:
        return image_path(template.format_map(fields), "filename")
    except (ValueError, TypeError) as error:
        raise FieldError("filename", f"image template {template!r} gives no valid path: {error}") from error


def _choose_template(entries: list, opts: ImportOptions, ucm: bool, report: ImportReport) -> str:
    candidates = UCM_TEMPLATES if ucm else KARPATHY_TEMPLATES
    if opts.image_template is not None:
        report.notes.append(f"image template {opts.image_template!r} (given)")
        return check_template(opts.image_template, UCM_FIELDS if ucm else KARPATHY_FIELDS)
    root = image_root(opts)
    fields = [f for _, f in entries if isinstance(f, dict)]
    found = []
    for template in candidates:
        count = 0
        for item in fields:
            try:
                count += (root / _render(template, item)).is_file()
            except FieldError:
                continue
        found.append(count)
    best = max(range(len(candidates)), key=lambda n: (found[n], -n))
    chosen = candidates[best]
    if found[best]:
        report.notes.append(f"image template {chosen!r} (detected: {found[best]} of {len(fields)} images under {root})")
    else:
        report.notes.append(f"image template {chosen!r} (default: no candidate found an image under {root};"
                            " give --image-root or --image-template)")
    return chosen


def _karpathy_import(conn, kind: str, path: Path, opts: ImportOptions, source: str | None,
                     on_progress: ProgressFn | None) -> ImportReport:
    check_input(path, opts)
    data = load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise FormatError(path, None, None, "not a Karpathy file (expected an object with an 'images' list)")
    check_rows(path, len(images), opts)
    if source is None:
        name = data.get("dataset")
        source = name.lower() if isinstance(name, str) and name.strip() else "karpathy"
    report = ImportReport(kind, str(path))
    ucm = kind == "ucm"
    entries: list[tuple[KarpathyImage | None, dict | Skipped]] = []
    for row, raw in enumerate(images, 1):
        try:
            entry = parse_karpathy_image(raw)
            entries.append((entry, _fields(entry, ucm)))
        except FieldError as error:
            entries.append((None, skip(row, error)))
    template = _choose_template(entries, opts, ucm, report)
    items: list[Record | Skipped] = []
    for row, (entry, fields) in enumerate(entries, 1):
        if isinstance(fields, Skipped):
            items.append(fields)
            continue
        try:
            image = _render(template, fields)
        except FieldError as error:
            items.append(skip(row, error))
            continue
        items.append(Record(row=row, image=image, cls=fields.get("class"), split=entry.split,
                            captions=[(text, source, None) for text in entry.sentences]))
    return write_records(conn, items, report, opts, on_progress)


def import_karpathy(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """Any Karpathy file; image paths by the image template (default ``{folder}{filename}``).

    Caption source: ``opts.source``, else the file's ``dataset`` name lower-cased, else ``karpathy``.
    """
    return _karpathy_import(conn, "karpathy", Path(path), opts, None, on_progress)


def import_ucm(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """UCM-Captions ``dataset.json`` (source ``ucm-captions``); each entry's class from its number.

    Image paths by the image template (default ``Images/{class}/{class}{index:02d}.tif``, for a
    ``UCMerced_LandUse`` folder as image root; ``imgs/{stem}.png`` is the shared copy's layout).
    """
    return _karpathy_import(conn, "ucm", Path(path), opts, "ucm-captions", on_progress)
