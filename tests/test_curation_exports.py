"""Export kinds: the registry, best captions in three formats, the Hugging Face dataset (opened with datasets)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from curation.cleanup import hide_caption
from curation.cli import main
from curation.decisions import record_decision
from curation.exporters import EXPORTS, export_file
from curation.review import resolve
from curation.store import add_caption, add_image, open_store
from curation.triplets import add_imported_triplets


def _images(root, names=("a.png", "b.png", "c.png")):
    for k, name in enumerate(names):
        Image.new("RGB", (8 + k, 6), (40 * k, 80, 120)).save(root / name)


def _store(conn, root):
    """a.png: best 'sea', accepted 'shore', rejected 'desert', 'gibberish' hidden;
    b.png: annotators disagree on 'two' (unresolved); c.png: one imported triplet; d.png: nothing judged."""
    _images(root)
    a = add_image(conn, "a.png", image_root=root)
    sea, shore, desert, junk = (add_caption(conn, a, t, "import") for t in ("sea", "shore", "desert", "gibberish"))
    record_decision(conn, a, sea, "best", "ann")
    record_decision(conn, a, shore, "accept", "ann")
    record_decision(conn, a, desert, "reject", "ann")
    record_decision(conn, a, junk, "accept", "ann")
    hide_caption(conn, junk, "lead")
    b = add_image(conn, "b.png", image_root=root)
    one, two = (add_caption(conn, b, t, "import") for t in ("one", "two"))
    record_decision(conn, b, one, "accept", "ann")
    record_decision(conn, b, two, "reject", "ann")
    record_decision(conn, b, two, "accept", "bob")
    c = add_image(conn, "c.png", image_root=root)
    pos, neg = (add_caption(conn, c, t, "import") for t in ("roofs", "no roofs"))
    add_imported_triplets(conn, [(c, pos, neg, "import", 0, "2025-01-01T00:00:00")])
    add_image(conn, "d.png", image_root=root)
    return {"b": b, "two": two}


def test_every_kind_has_a_distinct_name_a_description_and_a_suffix():
    assert len(EXPORTS) == len(set(EXPORTS)) >= 9
    for name, kind in EXPORTS.items():
        assert kind.description and "\n" not in kind.description, name
        assert kind.suffix in ("", ".json", ".csv", ".parquet"), name
    assert EXPORTS["hf-dataset"].folder and not EXPORTS["hf-parquet"].folder
    assert {EXPORTS[k].suffix for k in ("best-captions", "best-captions-csv", "best-captions-parquet")} == {
        ".json", ".csv", ".parquet"}


def test_best_captions_are_the_same_in_json_csv_and_parquet(conn, tmp_path):
    _store(conn, tmp_path)
    reports = [export_file(conn, kind, tmp_path / f"best{EXPORTS[kind].suffix}")
               for kind in ("best-captions", "best-captions-csv", "best-captions-parquet")]
    assert [r.kind for r in reports] == ["best-captions", "best-captions-csv", "best-captions-parquet"]
    from_json = pd.DataFrame(json.loads((tmp_path / "best.json").read_text()))
    from_csv = pd.read_csv(tmp_path / "best.csv", keep_default_na=False, na_values=[""])
    from_parquet = pd.read_parquet(tmp_path / "best.parquet")
    # b.png: the most recently accepted caption (docs/formats.md), although annotators disagree on it
    assert from_json[["image", "caption"]].values.tolist() == [["a.png", "sea"], ["b.png", "two"], ["c.png", "roofs"]]
    columns = ["image", "caption", "annotator", "source"]
    for other in (from_csv, from_parquet):
        assert other[columns].fillna("").values.tolist() == from_json[columns].fillna("").values.tolist()
    with pytest.raises(ValueError, match="writes a .csv file"):
        export_file(conn, "best-captions-csv", tmp_path / "best.json")
    with pytest.raises(ValueError, match="reads no image files"):
        export_file(conn, "triplets", tmp_path / "t.json", image_root=tmp_path)


def _check_rows(rows, root):
    by_path = {row["image_path"]: row for row in rows}
    assert list(by_path) == ["a.png", "b.png", "c.png"]  # d.png has nothing to say
    a, b, c = by_path["a.png"], by_path["b.png"], by_path["c.png"]
    assert (a["best_caption"], a["accepted"], a["rejected"], a["disputed"]) == ("sea", ["sea", "shore"], ["desert"], [])
    assert (b["accepted"], b["rejected"], b["disputed"]) == (["one"], [], ["two"])
    assert (c["best_caption"], c["accepted"], c["rejected"]) == ("roofs", ["roofs"], ["no roofs"])
    picture = a["image"]
    assert picture.size == Image.open(root / "a.png").size == (8, 6)
    assert picture.convert("RGB").getpixel((0, 0)) == (0, 80, 120)


def test_hf_dataset_opens_with_load_from_disk_and_follows_resolutions(conn, tmp_path):
    import datasets

    ids = _store(conn, tmp_path)
    report = export_file(conn, "hf-dataset", tmp_path / "ds")
    assert (report.kind, report.records) == ("hf-dataset", 3)
    dataset = datasets.load_from_disk(str(tmp_path / "ds"))
    assert isinstance(dataset.features["image"], datasets.Image)
    _check_rows(list(dataset), tmp_path)
    resolve(conn, ids["b"], ids["two"], "reject", "rev")
    export_file(conn, "hf-dataset", tmp_path / "ds2")
    b = datasets.load_from_disk(str(tmp_path / "ds2"))[1]
    assert (b["image_path"], b["rejected"], b["disputed"]) == ("b.png", ["two"], [])
    with pytest.raises(FileExistsError, match="ds"):
        export_file(conn, "hf-dataset", tmp_path / "ds")


def test_hf_parquet_opens_with_load_dataset(conn, tmp_path):
    import datasets

    _store(conn, tmp_path)
    export_file(conn, "hf-parquet", tmp_path / "ds.parquet")
    dataset = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds.parquet"), split="train",
                                    cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(dataset.features["image"], datasets.Image)
    _check_rows(list(dataset), tmp_path)


def test_hf_export_names_a_missing_image_and_writes_nothing(conn, tmp_path):
    _store(conn, tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png"):
        export_file(conn, "hf-dataset", tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    _images(elsewhere)
    assert export_file(conn, "hf-parquet", tmp_path / "ds.parquet", image_root=elsewhere).records == 3


def test_cli_exports_every_kind(tmp_path, capsys):
    db = tmp_path / "store.db"
    conn = open_store(db)
    _store(conn, tmp_path)
    conn.close()
    for kind, spec in EXPORTS.items():
        out = tmp_path / "out" / f"{kind}{spec.suffix}"
        out.parent.mkdir(exist_ok=True)
        extra = ["--image-root", str(tmp_path)] if spec.uses_images else []
        assert main(["--db", str(db), "export", kind, str(out), *extra]) == 0, kind
        assert out.exists(), kind
    assert "wrote 3 hf-dataset records" in capsys.readouterr().out
