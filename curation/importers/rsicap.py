"""RSICap (RSGPT, Hu et al. 2023) ``captions.json``: 2,585 images with one human caption each.

The published file is read leniently, since its layout differs between releases and LAVIS-style
loaders: the top level may be a list of entries, an object holding such a list under
``annotations`` / ``images`` / ``data``, or an object mapping file name → caption(s). An entry names
its image by ``filename`` / ``image`` / ``file_name`` / ``image_name`` / ``image_id`` and its text by
``caption`` / ``text_output`` / ``text`` / ``captions`` / ``sentences`` (a string, a list of strings,
or Karpathy-style ``[{"raw": ...}]``). Image names are relative to the image root. Source ``rsicap``.
Each text must pass the caption rules of :mod:`common.formats`; a row with one that does not is skipped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.formats import FieldError, FormatError, caption, image_path, load_json
from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_input,
    check_rows,
    skip,
    write_records,
)

IMAGE_KEYS = ("filename", "image", "file_name", "image_name", "image_id")
TEXT_KEYS = ("caption", "text_output", "text", "captions", "sentences")
LIST_KEYS = ("annotations", "images", "data")


def _entries(path: Path, data: object) -> list[object]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in LIST_KEYS:
            if isinstance(data.get(key), list):
                return data[key]
        return [{"filename": name, "caption": text} for name, text in data.items()]
    raise FormatError(path, None, None, f"expected a list of entries or an object, got {type(data).__name__}")


def _first(item: dict, keys: tuple[str, ...]) -> tuple[str, object]:
    """(key, value) of the first of ``keys`` present in ``item``, or ('', None)."""
    return next(((k, item[k]) for k in keys if k in item), ("", None))


def _record(row: int, entry: object) -> Record:
    if not isinstance(entry, dict):
        raise FieldError("record", f"entry is {type(entry).__name__}, not an object")
    image_key, image = _first(entry, IMAGE_KEYS)
    if not image_key:
        raise FieldError("image", f"entry names no image (one of {', '.join(IMAGE_KEYS)})")
    text_key, text = _first(entry, TEXT_KEYS)
    if not text_key:
        raise FieldError("caption", f"entry has no caption (one of {', '.join(TEXT_KEYS)})")
    values = text if isinstance(text, list) else [text]
    texts = []
    for n, value in enumerate(values):
        field = f"{text_key}[{n}]" if isinstance(text, list) else text_key
        if isinstance(value, dict):
            value, field = value.get("raw"), f"{field}.raw"
        texts.append(caption(value, field))
    return Record(row=row, image=image_path(image, image_key), captions=[(t, "rsicap", None) for t in texts])


def import_rsicap(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    check_input(path, opts)
    entries = _entries(path, load_json(path))
    check_rows(path, len(entries), opts)
    items: list[Record | Skipped] = []
    for row, entry in enumerate(entries, 1):
        try:
            items.append(_record(row, entry))
        except FieldError as error:
            items.append(skip(row, error))
    return write_records(conn, items, ImportReport("rsicap", str(path)), opts, on_progress)
