"""Importers, exporters and the CLI: idempotence, round trips, skipped rows, limits, crash safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from project_paths import write_pngs

from curation.cli import main
from curation.decisions import edit_caption, record_decision
from curation.exporters import best_captions, export_file
from curation.importers import ImportOptions, import_file, ucm_image
from curation.store import open_store
from curation.triplets import TripletFilter, list_triplets

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucm"
needs_ucm = pytest.mark.skipif(not UCM.is_dir(), reason=f"real UC Merced data not found at {UCM}")


def _seed_file(path: Path, images: int, negs: int = 4, pngs: bool = True) -> list[dict]:
    records = [
        {
            "image": f"imgs/{i}.png",
            "pos": f"pos {i}",
            "negs": [f"neg {i}.{k}" for k in range(negs)],
            "class": "c",
        }
        for i in range(images)
    ]
    path.write_text(json.dumps(records))
    if pngs:
        write_pngs(path.parent, *(r["image"] for r in records))
    return records


def _count(conn, table):
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_seed_round_trip_and_idempotent_reimport(conn, tmp_path):
    records = _seed_file(tmp_path / "seed.json", 5)
    records[2]["negs"].insert(1, records[2]["negs"][0])  # a repeated negative is kept once
    del records[3]["class"]
    (tmp_path / "seed.json").write_text(json.dumps(records))
    opts = ImportOptions(image_root=tmp_path)
    first = import_file(conn, "seed-triplets", tmp_path / "seed.json", opts)
    assert (first.images_added, first.captions_added, first.triplets_added) == (5, 25, 20)
    again = import_file(conn, "seed-triplets", tmp_path / "seed.json", opts)
    assert (again.images_added, again.captions_added, again.triplets_added) == (0, 0, 0)
    assert (again.images_existing, again.triplets_existing) == (5, 21)  # 20 + the repeated one
    export_file(conn, "seed-triplets", tmp_path / "out.json")
    records[2]["negs"].pop(1)
    assert json.loads((tmp_path / "out.json").read_text()) == records
    other = open_store(tmp_path / "other.db")
    import_file(other, "seed-triplets", tmp_path / "out.json", opts)
    export_file(other, "seed-triplets", tmp_path / "out2.json")
    assert (tmp_path / "out2.json").read_bytes() == (tmp_path / "out.json").read_bytes()
    assert list_triplets(conn, TripletFilter(human_only=True)) == []


@needs_ucm
def test_real_seed_file_gives_600_images_and_all_distinct_captions(conn, tmp_path):
    path = UCM / "triplets_train.json"
    records = json.loads(path.read_text())
    report = import_file(conn, "seed-triplets", path, ImportOptions(image_root=UCM, check_files=True))
    assert report.skipped == []
    assert _count(conn, "images") == 600
    assert _count(conn, "captions") == sum(len({r["pos"], *r["negs"]}) for r in records)
    export_file(conn, "seed-triplets", tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == records


@needs_ucm
def test_real_ucm_captions_map_numbers_to_class_files(conn):
    """With a UC Merced folder's template and no file check, every number maps to its class file."""
    opts = ImportOptions(check_files=False, image_template="Images/{class}/{class}{index:02d}.tif")
    report = import_file(conn, "ucm", UCM / "captions" / "ucm_captions_dataset.json", opts)
    assert (report.images_added, report.skipped) == (2100, [])
    paths = dict(conn.execute("SELECT path, class FROM images").fetchall())
    assert paths["Images/agricultural/agricultural00.tif"] == "agricultural"
    assert "Images/airplane/airplane00.tif" in paths and "Images/tenniscourt/tenniscourt99.tif" in paths
    first = conn.execute(
        "SELECT c.text, c.source FROM captions c JOIN images i ON i.id = c.image_id"
        " WHERE i.path = 'Images/agricultural/agricultural00.tif' ORDER BY c.id LIMIT 1"
    ).fetchone()
    assert tuple(first) == ("There is a piece of farmland .", "ucm-captions")


def test_ucm_folder_import_checks_files_and_reports_bad_numbers(conn, tmp_path):
    for number in (1, 101, 2100):
        file = tmp_path / "UCMerced_LandUse" / ucm_image(number)[0]
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(file)
    assert ucm_image(1) == ("Images/agricultural/agricultural00.tif", "agricultural")
    assert ucm_image(101)[0] == "Images/airplane/airplane00.tif"
    data = {
        "images": [
            {
                "filename": "1.tif",
                "split": "train",
                "sentences": [{"raw": "a field ."}, {"tokens": ["a", "farm"]}],
            },
            {"filename": "101.tif", "split": "val", "sentences": [{"raw": "planes ."}]},
            {"filename": "2100.tif", "split": "test", "sentences": [{"raw": ""}]},
            {"filename": "2101.tif", "sentences": [{"raw": "x"}]},
            {"filename": "7.tif", "sentences": [{"raw": "file missing"}]},
            {"filename": "abc.tif", "sentences": []},
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    opts = ImportOptions(image_root=tmp_path / "UCMerced_LandUse", check_files=True)
    report = import_file(conn, "ucm", tmp_path / "dataset.json", opts)
    assert report.images_added == 2 and report.captions_added == 3  # a row with a bad field is left out whole
    assert [(s.row, s.field) for s in report.skipped] == [
        (3, "sentences[0].raw"), (4, "filename"), (5, "image"), (6, "filename")]
    assert "empty" in report.skipped[0].reason and "2101" in report.skipped[1].reason
    assert "not found" in report.skipped[2].reason
    assert "Images/{class}/{class}{index:02d}.tif" in report.summary()  # the template it chose, said
    row = conn.execute("SELECT split, sha256, width FROM images WHERE path LIKE '%agricultural00.tif'").fetchone()
    assert row[0] == "train" and len(row[1]) == 64 and row[2] == 4
    texts = [r[0] for r in conn.execute("SELECT text FROM captions ORDER BY id")]
    assert texts == ["a field .", "a farm", "planes ."]


def test_karpathy_and_rsicap_importers(conn, tmp_path):
    karpathy = {
        "dataset": "RSICD",
        "images": [
            {"filename": "a.jpg", "filepath": "train", "sentences": [{"raw": "one"}, {"raw": "two"}]},
            {"filename": "../escape.jpg", "sentences": [{"raw": "x"}]},
        ],
    }
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    write_pngs(tmp_path, "train/a.jpg", "r1.png", "r2.png", "r3.png")
    report = import_file(conn, "karpathy", tmp_path / "k.json", ImportOptions(image_root=tmp_path))
    assert report.captions_added == 2 and report.skipped[0].row == 2 and "'..'" in report.skipped[0].reason
    assert conn.execute("SELECT DISTINCT source FROM captions").fetchall()[0][0] == "rsicd"
    assert _count(conn, "images") == 1
    variants = [
        [{"filename": "r1.png", "caption": "c1"}],
        {"annotations": [{"image_id": "r2.png", "text_output": "c2"}, {"image": 5, "caption": "x"}]},
        {"r3.png": ["c3", "c3b"]},
    ]
    for n, variant in enumerate(variants):
        (tmp_path / f"r{n}.json").write_text(json.dumps(variant))
        report = import_file(conn, "rsicap", tmp_path / f"r{n}.json", ImportOptions(image_root=tmp_path))
        assert report.images_added == 1
    assert report.rows == 1 and _count(conn, "captions") == 2 + 4
    assert conn.execute("SELECT COUNT(*) FROM captions WHERE source = 'rsicap'").fetchone()[0] == 4


def test_csv_and_jsonl_candidates_with_skipped_rows(conn, tmp_path):
    (tmp_path / "c.csv").write_text(
        'image,caption,source\na.png,a caption,model:qwen\n/abs.png,bad,\nb.png,,\nb.png,"multi\nline",\n'
    )
    write_pngs(tmp_path, "a.png", "b.png")
    report = import_file(conn, "csv", tmp_path / "c.csv", ImportOptions(image_root=tmp_path))
    assert report.captions_added == 2
    assert [(s.row, "absolute" in s.reason or "empty" in s.reason) for s in report.skipped] == [
        (3, True),
        (4, True),
    ]
    lines = [
        json.dumps({"image": "a.png", "caption": "gen", "source": "model:x", "generator": "qwen"}),
        "{not json",
        "",
        json.dumps({"image": "a.png", "caption": "x" * 5000}),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    report = import_file(conn, "jsonl", tmp_path / "c.jsonl", ImportOptions(image_root=tmp_path))
    assert report.captions_added == 1 and [s.row for s in report.skipped] == [2, 4]
    assert "limit" in report.skipped[1].reason
    author = conn.execute("SELECT author, source FROM captions WHERE text = 'gen'").fetchone()
    assert tuple(author) == ("qwen", "model:x")
    with pytest.raises(ValueError, match="lacks column"):
        (tmp_path / "bad.csv").write_text("img,text\n")
        import_file(conn, "csv", tmp_path / "bad.csv", ImportOptions(image_root=tmp_path))


def test_limits_and_malformed_files_name_the_file(conn, tmp_path):
    _seed_file(tmp_path / "seed.json", 3)
    with pytest.raises(ValueError, match="seed.json: 3 rows, more than the limit 2"):
        import_file(conn, "seed-triplets", tmp_path / "seed.json", ImportOptions(max_rows=2))
    with pytest.raises(ValueError, match="seed.json has .* bytes"):
        import_file(conn, "seed-triplets", tmp_path / "seed.json", ImportOptions(max_file_bytes=10))
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="broken.json: line 1 column 3: not valid JSON"):
        import_file(conn, "triplets", tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        import_file(conn, "karpathy", tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown import kind"):
        import_file(conn, "xml", tmp_path / "seed.json")
    assert _count(conn, "images") == 0


@pytest.mark.parametrize("name", ["t.json", "t.jsonl"])
def test_readme_triplets_round_trip(conn, tmp_path, name):
    records = [
        {"image_name": "a.png", "positive": "p", "negative": "n1", "provenance": "decision"},
        {"image_name": "a.png", "positive": "p", "negative": "n2", "provenance": "import"},
        {"image_name": "b.png", "positive": "q", "negative": "m", "provenance": "edit"},
    ]
    text = "\n".join(json.dumps(r) for r in records) if name.endswith("l") else json.dumps(records)
    (tmp_path / name).write_text(text)
    write_pngs(tmp_path, "a.png", "b.png")
    report = import_file(conn, "triplets", tmp_path / name, ImportOptions(image_root=tmp_path))
    assert report.triplets_added == 3
    export_file(conn, "triplets", tmp_path / f"out-{name}")
    out = (tmp_path / f"out-{name}").read_text()
    parsed = [json.loads(line) for line in out.splitlines()] if name.endswith("l") else json.loads(out)
    assert parsed == records
    assert export_file(conn, "triplets", tmp_path / "h.json", TripletFilter(human_only=True)).records == 0


def test_decisions_export_with_filters(conn, tmp_path):
    _seed_file(tmp_path / "seed.json", 3, negs=2)
    import_file(conn, "seed-triplets", tmp_path / "seed.json", ImportOptions(image_root=tmp_path))
    caption = dict(conn.execute("SELECT text, id FROM captions").fetchall())
    record_decision(conn, 1, caption["neg 0.0"], "best", "ann")
    record_decision(conn, 1, caption["pos 0"], "reject", "ann")
    edit_caption(conn, 2, caption["neg 1.1"], "neg 1.1 fixed", "bob")
    best = {b.image: (b.caption, b.annotator) for b in best_captions(conn)}
    assert best == {
        "imgs/0.png": ("neg 0.0", "ann"),
        "imgs/1.png": ("pos 1", None),
        "imgs/2.png": ("pos 2", None),
    }
    assert [b.image for b in best_captions(conn, TripletFilter(human_only=True))] == ["imgs/0.png"]
    assert best_captions(conn, TripletFilter(since="2999-01-01")) == []
    export_file(conn, "seed-triplets", tmp_path / "h.json", TripletFilter(human_only=True))
    assert json.loads((tmp_path / "h.json").read_text()) == [
        {"image": "imgs/0.png", "pos": "neg 0.0", "negs": ["pos 0"], "class": "c"},
        {"image": "imgs/1.png", "pos": "neg 1.1 fixed", "negs": ["neg 1.1"], "class": "c"},
    ]
    export_file(conn, "triplets", tmp_path / "bob.json", TripletFilter(annotator="bob"))
    assert [r["provenance"] for r in json.loads((tmp_path / "bob.json").read_text())] == ["edit"]
    export_file(conn, "best-captions", tmp_path / "best.parquet")
    frame = pd.read_parquet(tmp_path / "best.parquet")
    assert (
        list(frame.columns) == ["image", "caption", "annotator", "decided_at", "source"] and len(frame) == 3
    )


def test_caption_table_csv_round_trip(conn, tmp_path):
    (tmp_path / "in.csv").write_text(
        'image,caption,source\na.png,one,import\na.png,"two, with comma",human\n'
    )
    write_pngs(tmp_path, "a.png")
    import_file(conn, "csv", tmp_path / "in.csv", ImportOptions(image_root=tmp_path))
    record_decision(conn, 1, 1, "accept", "ann")
    record_decision(conn, 1, 1, "reject", "bob")
    assert export_file(conn, "decisions-csv", tmp_path / "out.csv").records == 3
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["caption"], r["annotator"], r["verdict"]) for r in rows] == [
        ("one", "ann", "accept"),
        ("one", "bob", "reject"),
        ("two, with comma", "", ""),
    ]
    other = open_store(tmp_path / "other.db")
    report = import_file(other, "csv", tmp_path / "out.csv", ImportOptions(image_root=tmp_path))
    assert (report.captions_added, report.captions_existing) == (2, 1)
    fields = (
        "SELECT i.path, c.text, c.source FROM captions c JOIN images i ON i.id = c.image_id ORDER BY c.id"
    )
    assert other.execute(fields).fetchall() == conn.execute(fields).fetchall()
    assert export_file(conn, "decisions-parquet", tmp_path / "o.parquet", TripletFilter(annotator="bob")).records == 1


_SLOW_IMPORT = """
import sys, time
from curation.importers import ImportOptions, import_file
from curation.store import open_store
conn = open_store(sys.argv[1])
def progress(done, total):
    print(done, total, flush=True)
    time.sleep(0.05)
opts = ImportOptions(batch_size=50, check_files=False)
import_file(conn, "seed-triplets", sys.argv[2], opts, on_progress=progress)
"""


def test_sigkill_mid_import_leaves_the_store_as_before_and_rerun_completes(tmp_path):
    """All or nothing: killed in the middle of its writes, an import leaves nothing of itself."""
    _seed_file(tmp_path / "earlier.json", 3)
    big = _seed_file(tmp_path / "seed.json", 2000, pngs=False)
    records = [dict(r, image=f"big/{n}.png") for n, r in enumerate(big)]
    (tmp_path / "seed.json").write_text(json.dumps(records))
    db = tmp_path / "store.db"
    with open_store(db) as conn:
        import_file(conn, "seed-triplets", tmp_path / "earlier.json", ImportOptions(image_root=tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_IMPORT, str(db), str(tmp_path / "seed.json")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    writes = 0
    while writes < 3:  # three progress reports of the write phase (the second half of the bar)
        line = child.stdout.readline()
        assert line, "importer exited early"
        done, total = map(int, line.split())
        writes += done > total // 2
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    conn = open_store(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert (_count(conn, "images"), _count(conn, "captions"), _count(conn, "triplets")) == (3, 15, 12)
    report = import_file(conn, "seed-triplets", tmp_path / "seed.json", ImportOptions(check_files=False))
    assert (report.images_existing, report.images_added) == (0, 2000)
    export_file(conn, "seed-triplets", tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())[3:] == records


def test_cli_import_export_stats_and_errors(tmp_path, capsys):
    _seed_file(tmp_path / "seed.json", 4)
    db = str(tmp_path / "cli.db")
    assert main(["--db", db, "import", "seed-triplets", str(tmp_path / "seed.json")]) == 0
    assert main(["--db", db, "export", "best-captions", str(tmp_path / "best.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "best.csv")) == 4
    capsys.readouterr()
    assert main(["--db", db, "stats", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["captions"], result["decisions"], result["triplets"]) == (4, 20, 0, 16)
    assert main(["--db", db, "import", "triplets", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("image,caption\n../x.png,c\n")
    assert main(["--db", db, "import", "csv", str(tmp_path / "bad.csv"), "--strict"]) == 1
    assert "skipped row 2" in capsys.readouterr().out
    process = subprocess.run(
        [sys.executable, "-m", "curation", "--db", db, "stats"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0 and "images: 4" in process.stdout


def test_cli_creates_the_folder_of_a_new_database(tmp_path, capsys):
    db = tmp_path / "data" / "store.sqlite"  # like --db data/store.sqlite on a fresh clone
    assert main(["--db", str(db), "stats"]) == 0, capsys.readouterr().err
    assert "images: 0" in capsys.readouterr().out and db.is_file()


def test_curation_never_imports_torch_or_gradio():
    code = (
        "import sys, curation.cli, curation.views, curation.queue, curation.models;"
        "print(any(m.split('.')[0] in ('torch', 'gradio') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
