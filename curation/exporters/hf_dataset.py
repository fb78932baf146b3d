"""A Hugging Face dataset of the curated store: each image (the file's bytes) with its captions sorted out.

One row per visible image that has a best caption or a judged caption under the filter, by image id:

| column | type | meaning |
|---|---|---|
| ``image`` | ``datasets.Image`` | the image file, embedded (bytes and its relative path) |
| ``image_path`` | string | path relative to the image root |
| ``class`` / ``split`` | string or null | as stored |
| ``best_caption`` | string or null | :func:`curation.exporters.best.best_captions` |
| ``accepted`` / ``rejected`` | list of strings | captions whose every label is positive / negative |
| ``disputed`` | list of strings | captions labelled both ways (annotators disagree, unresolved) |

A caption's labels are its annotators' latest verdicts and (unless ``human_only`` or an annotator filter)
its roles in imported triplets (positive / negative); where a reviewer's resolution is in force, it is the
caption's only label. Hidden images and captions are left out.

``hf-dataset`` writes a folder for ``datasets.load_from_disk``; ``hf-parquet`` one Parquet file for
``datasets.load_dataset("parquet", data_files=...)`` (the features travel in its schema). Image files are
read from ``image_root``, else from the root each image was imported from; a missing file stops the
export with ``FileNotFoundError`` naming it. ``datasets`` is imported only when one of these runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

from common.files import atomic_output
from common.paths import resolve_inside
from curation.exporters.base import ExportReport
from curation.exporters.best import best_captions
from curation.resolutions import resolutions_in_force
from curation.triplets import TripletFilter, filter_sql

COLUMNS = ["image", "image_path", "class", "split", "best_caption", "accepted", "rejected", "disputed"]


def _polarity(verdict: str) -> str:
    return "negative" if verdict == "reject" else "positive"


def caption_labels(conn: sqlite3.Connection, flt: TripletFilter) -> dict[int, dict[int, set[str]]]:
    """image id → caption id → the polarities its labels give it (see the module docstring)."""
    labels: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    where, params = filter_sql(flt, "d.created_at", "d.annotator")
    source = f" AND c.source IN ({','.join('?' * len(flt.source))})" if flt.source else ""
    visible = "i.hidden = 0 AND c.hidden = 0"
    latest: dict[tuple[int, int, str], str] = {}
    for img, cap, who, verdict in conn.execute(
        "SELECT d.image_id, d.caption_id, d.annotator, d.verdict FROM effective_decisions d"
        " JOIN images i ON i.id = d.image_id JOIN captions c ON c.id = d.caption_id"
        f" WHERE d.verdict IN ('accept', 'reject', 'best') AND {visible} AND {where}{source} ORDER BY d.id",
        params + list(flt.source or ()),
    ):
        latest[(img, cap, who)] = verdict
    for (img, cap, _), verdict in latest.items():
        labels[img][cap].add(_polarity(verdict))
    if not flt.human_only and flt.annotator is None:
        imported = TripletFilter(since=flt.since, until=flt.until, split=flt.split)
        where, params = filter_sql(imported, "t.created_at", None)
        for img, cap, role in conn.execute(
            "SELECT t.image_id, c.id, CASE WHEN c.id = t.positive_id THEN 'positive' ELSE 'negative' END"
            " FROM triplets t JOIN images i ON i.id = t.image_id"
            " JOIN captions c ON c.id IN (t.positive_id, t.negative_id)"
            f" WHERE t.origin = 'import' AND {visible} AND {where}{source}",
            params + list(flt.source or ()),
        ):
            labels[img][cap].add(role)
    _apply_resolutions(conn, flt, labels)
    return labels


def _apply_resolutions(conn: sqlite3.Connection, flt: TripletFilter, labels: dict) -> None:
    """A resolution in force is a caption's only label (also on a caption no annotator judged)."""
    where, params = filter_sql(TripletFilter(split=flt.split), "r.created_at", None)
    source = f" AND c.source IN ({','.join('?' * len(flt.source))})" if flt.source else ""
    in_force = {r.id for r in resolutions_in_force(conn).values()}
    for rid, img, cap, verdict in conn.execute(
        "SELECT r.id, r.image_id, r.caption_id, r.verdict FROM resolutions r JOIN images i ON i.id = r.image_id"
        f" JOIN captions c ON c.id = r.caption_id WHERE i.hidden = 0 AND c.hidden = 0 AND {where}{source}",
        params + list(flt.source or ()),
    ):
        if rid in in_force and (flt.annotator is None or cap in labels.get(img, {})):
            labels[img][cap] = {_polarity(verdict)}


def _image_file(path: str, stored_root: str | None, image_root: str | os.PathLike[str] | None) -> Path:
    root = image_root if image_root is not None else stored_root
    if root is None:
        raise ValueError(f"image {path}: no image root recorded for it; pass the image root to export it")
    file = resolve_inside(root, path)
    if not file.is_file():
        raise FileNotFoundError(f"image {path}: file {file} not found under the image root {root}")
    return file


def dataset_rows(
    conn: sqlite3.Connection, flt: TripletFilter | None = None, image_root: str | os.PathLike[str] | None = None
) -> list[dict]:
    """The dataset's rows as plain dicts (``image`` as ``{"bytes", "path"}``), by image id."""
    flt = flt or TripletFilter()
    labels = caption_labels(conn, flt)
    best = {b.image_id: b.caption for b in best_captions(conn, flt)}
    texts = dict(conn.execute("SELECT id, text FROM captions").fetchall())
    rows = []
    for image_id in sorted(set(labels) | set(best)):
        path, stored_root, cls, split = conn.execute(
            "SELECT path, root, class, split FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        by_caption = sorted(labels.get(image_id, {}).items())
        rows.append({
            "image": {"bytes": _image_file(path, stored_root, image_root).read_bytes(), "path": path},
            "image_path": path,
            "class": cls,
            "split": split,
            "best_caption": best.get(image_id),
            "accepted": [texts[c] for c, p in by_caption if p == {"positive"}],
            "rejected": [texts[c] for c, p in by_caption if p == {"negative"}],
            "disputed": [texts[c] for c, p in by_caption if len(p) > 1],
        })
    return rows


def build_dataset(conn: sqlite3.Connection, flt: TripletFilter | None = None,
                  image_root: str | os.PathLike[str] | None = None):
    """The store as a ``datasets.Dataset`` (columns in the module docstring)."""
    import datasets

    strings = datasets.List(datasets.Value("string"))
    features = datasets.Features({
        "image": datasets.Image(), "image_path": datasets.Value("string"), "class": datasets.Value("string"),
        "split": datasets.Value("string"), "best_caption": datasets.Value("string"),
        "accepted": strings, "rejected": strings, "disputed": strings,
    })
    rows = dataset_rows(conn, flt, image_root)
    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in COLUMNS}, features=features)


def export_hf_dataset(conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None,
                      image_root: str | os.PathLike[str] | None = None) -> ExportReport:
    """A ``save_to_disk`` folder, written beside ``out`` and moved into place whole.

    ``FileExistsError`` if ``out`` exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists; choose a new folder for the dataset")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder of the output {out} does not exist")
    dataset = build_dataset(conn, flt, image_root)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        dataset.save_to_disk(str(tmp))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport("hf-dataset", str(out), len(dataset))


def export_hf_parquet(conn: sqlite3.Connection, out: str | Path, flt: TripletFilter | None = None,
                      image_root: str | os.PathLike[str] | None = None) -> ExportReport:
    """One Parquet file with the dataset's features in its schema (``load_dataset("parquet", ...)``)."""
    dataset = build_dataset(conn, flt, image_root)
    with atomic_output(Path(out), "wb") as handle:
        dataset.to_parquet(handle)
    return ExportReport("hf-parquet", str(out), len(dataset))
