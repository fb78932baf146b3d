"""RSICap (RSGPT, Hu et al. 2023) ``captions.json``: 2,585 images with one human caption each.

The published file is read leniently, since its layout differs between releases and LAVIS-style
loaders: the top level may be a list of entries, an object holding such a list under
``annotations`` / ``images`` / ``data``, or an object mapping file name → caption(s). An entry names
its image by ``filename`` / ``image`` / ``file_name`` / ``image_name`` / ``image_id`` and its text by
``caption`` / ``text_output`` / ``text`` / ``captions`` / ``sentences`` (a string, a list of strings,
or Karpathy-style ``[{"raw": ...}]``). Image names are relative to the image root. Source ``rsicap``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_rows,
    load_json,
    text_field,
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
    raise ValueError(f"{path}: expected a list of entries or an object, got {type(data).__name__}")


def _texts(value: object) -> list[object]:
    values = value if isinstance(value, list) else [value]
    return [v.get("raw") if isinstance(v, dict) else v for v in values]


def import_rsicap(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    path = Path(path)
    entries = _entries(path, load_json(path, opts))
    check_rows(path, len(entries), opts)

    def records() -> Iterator[Record | Skipped]:
        for row, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                yield Skipped(row, f"entry is {type(entry).__name__}, not an object")
                continue
            image, text = text_field(entry, IMAGE_KEYS), text_field(entry, TEXT_KEYS)
            if not isinstance(image, str):
                yield Skipped(row, f"entry names no image (one of {', '.join(IMAGE_KEYS)})")
            elif text is None:
                yield Skipped(row, f"entry has no caption (one of {', '.join(TEXT_KEYS)})")
            else:
                yield Record(row=row, image=image, captions=[(t, "rsicap", None) for t in _texts(text)])

    return write_records(conn, records(), ImportReport("rsicap", str(path)), opts, len(entries), on_progress)
