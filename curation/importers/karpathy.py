"""Karpathy-format caption files (RSICD, RSITMD, Sydney, UCM-Captions) and the UC Merced folder.

Karpathy format: ``{"images": [{"filename": "...", "filepath"?: "...", "split": "train",
"sentences": [{"raw": "...", "tokens": [...]}]}], "dataset"?: "..."}``. Each sentence becomes a
caption; ``raw`` is kept verbatim (tokens joined by spaces when ``raw`` is missing).

UC Merced: UCM-Captions numbers images ``1.tif`` … ``2100.tif``; image ``N`` is class
``UCM_CLASSES[(N-1)//100]``, file ``Images/<class>/<class>NN.tif`` with NN = ``(N-1) % 100``
(see ``../shared/data/ucm/README.md``), relative to the ``UCMerced_LandUse`` folder given as image root.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from curation.importers.base import (
    ImportOptions,
    ImportReport,
    ProgressFn,
    Record,
    Skipped,
    check_rows,
    load_json,
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

# filename → (image path, class) or a reason the file name cannot be mapped
PathMapper = Callable[[dict], "tuple[str, str | None] | str"]


def ucm_image(number: int, prefix: str = "Images/") -> tuple[str, str]:
    """UCM-Captions image number (1-based) → (``Images/<class>/<class>NN.tif``, class)."""
    if not 1 <= number <= len(UCM_CLASSES) * UCM_PER_CLASS:
        raise ValueError(
            f"UCM-Captions image number {number} is outside 1..{len(UCM_CLASSES) * UCM_PER_CLASS}"
        )
    cls = UCM_CLASSES[(number - 1) // UCM_PER_CLASS]
    return f"{prefix}{cls}/{cls}{(number - 1) % UCM_PER_CLASS:02d}.tif", cls


def _sentences(item: dict) -> list[str]:
    out = []
    for sentence in item.get("sentences") or []:
        if isinstance(sentence, dict):
            raw = sentence.get("raw")
            if raw is None and isinstance(sentence.get("tokens"), list):
                raw = " ".join(str(t) for t in sentence["tokens"])
            out.append(raw)
        else:
            out.append(sentence)
    return out


def karpathy_records(
    path: Path, opts: ImportOptions, source: str | None, mapper: PathMapper
) -> tuple[int, Iterator[Record | Skipped]]:
    """(number of images, records); ``source`` ``None`` takes the file's ``dataset`` name."""
    data = load_json(path, opts)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: not a Karpathy file (expected an object with an 'images' list)")
    check_rows(path, len(images), opts)
    if source is None:
        name = data.get("dataset")
        source = name.lower() if isinstance(name, str) and name else "karpathy"

    def records() -> Iterator[Record | Skipped]:
        for row, item in enumerate(images, 1):
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                yield Skipped(row, "image entry has no 'filename' text")
                continue
            mapped = mapper(item)
            if isinstance(mapped, str):
                yield Skipped(row, mapped)
                continue
            image, cls = mapped
            captions = [(text, source, None) for text in _sentences(item)]
            yield Record(row=row, image=image, cls=cls, split=item.get("split"), captions=captions)

    return len(images), records()


def import_karpathy(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """Any Karpathy file; image paths are ``filepath/filename`` (or ``filename``) under the image root.

    Caption source: ``opts.source``, else the file's ``dataset`` name lower-cased, else ``karpathy``.
    """
    path = Path(path)

    def mapper(item: dict) -> tuple[str, str | None]:
        folder = item.get("filepath")
        return (
            f"{folder}/{item['filename']}" if isinstance(folder, str) and folder else item["filename"]
        ), None

    total, records = karpathy_records(path, opts, None, mapper)
    return write_records(conn, records, ImportReport("karpathy", str(path)), opts, total, on_progress)


def import_ucm(
    conn: sqlite3.Connection, path: str | Path, opts: ImportOptions, on_progress: ProgressFn | None = None
) -> ImportReport:
    """UCM-Captions ``dataset.json`` with a UC Merced folder as image root (source ``ucm-captions``).

    The root may be the ``UCMerced_LandUse`` folder (holding ``Images/``) or the ``Images`` folder itself.
    """
    path = Path(path)
    root = Path(opts.image_root) if opts.image_root is not None else None
    prefix = (
        ""
        if root is not None and not (root / "Images").is_dir() and (root / UCM_CLASSES[0]).is_dir()
        else "Images/"
    )

    def mapper(item: dict) -> tuple[str, str] | str:
        stem = Path(item["filename"]).stem
        if not stem.isdigit():
            return f"file name {item['filename']!r} is not a UCM-Captions number N.tif"
        try:
            return ucm_image(int(stem), prefix)
        except ValueError as error:
            return str(error)

    total, records = karpathy_records(path, opts, "ucm-captions", mapper)
    return write_records(conn, records, ImportReport("ucm", str(path)), opts, total, on_progress)
