"""Imports check what they import (issue 9, item 1): the repros as written, library and CLI alike."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from project_paths import write_pngs

from curation.cli import main
from curation.importers import ImportOptions, import_file
from curation.stats import stats
from curation.store import add_image, open_store, transaction

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucm"
UCM_CAPTIONS = UCM / "captions" / "ucm_captions_dataset.json"
needs_ucm = pytest.mark.skipif(not UCM_CAPTIONS.is_file(), reason=f"real UC Merced data not found at {UCM}")


def _count(conn, table: str) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _karpathy(path: Path, names: list[str], sentences=None) -> None:
    images = [{"filename": n, "split": "train", "sentences": sentences or [{"raw": f"scene {n} ."}]} for n in names]
    path.write_text(json.dumps({"dataset": "UCM", "images": images}))


# -- image files: checked by default, found through a template -------------------------------------


@needs_ucm
@pytest.mark.parametrize("kind", ["karpathy", "ucm"])
def test_real_ucm_captions_store_only_images_that_exist(conn, kind):
    """Today: 2,100 images that do not exist and "0 skipped". Now: the 600 that are there."""
    report = import_file(conn, kind, UCM_CAPTIONS, ImportOptions(image_root=UCM))
    assert (report.images_added, len(report.skipped)) == (600, 1500)
    assert all(s.field == "image" and "not found" in s.reason for s in report.skipped)
    assert "'imgs/{stem}.png' (detected: 600 of 2100" in report.summary()
    paths = [row[0] for row in conn.execute("SELECT path FROM images")]
    assert all((UCM / path).is_file() for path in paths)
    assert conn.execute("SELECT class FROM images WHERE path = 'imgs/1.png'").fetchone()[0] == (
        "agricultural" if kind == "ucm" else None)


@needs_ucm
def test_real_ucm_cli_from_the_files_folder_finds_nothing_and_says_why(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "import", "karpathy", str(UCM_CAPTIONS)]) == 0  # root: captions/
    out = capsys.readouterr().out
    assert "images +0" in out and "2100 skipped" in out and "no candidate found an image" in out


def test_template_detection_given_template_and_header_check(conn, tmp_path):
    write_pngs(tmp_path, "imgs/1.png", "imgs/2.png")
    (tmp_path / "imgs" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n but not a picture")
    _karpathy(tmp_path / "k.json", ["1.tif", "2.tif", "3.tif", "4.tif"])
    report = import_file(conn, "ucm", tmp_path / "k.json", ImportOptions(image_root=tmp_path))
    assert report.images_added == 2
    assert [(s.row, s.field) for s in report.skipped] == [(3, "image"), (4, "image")]
    assert "not a readable image" in report.skipped[0].reason and "not found" in report.skipped[1].reason
    assert "imgs/{stem}.png' (detected: 3 of 4" in report.summary()
    assert tuple(conn.execute("SELECT width, height FROM images WHERE path = 'imgs/1.png'").fetchone()) == (8, 6)
    # --no-check-files: stores built before the files arrive; the template given is said to be given
    other = open_store(tmp_path / "other.db")
    opts = ImportOptions(image_root=tmp_path, check_files=False, image_template="Images/{class}/{class}{index:02d}.tif")
    report = import_file(other, "ucm", tmp_path / "k.json", opts)
    assert (report.images_added, report.skipped) == (4, []) and "(given)" in report.summary()
    assert other.execute("SELECT path FROM images ORDER BY id LIMIT 1").fetchone()[0] == (
        "Images/agricultural/agricultural00.tif")
    with pytest.raises(ValueError, match=r"uses \['filepath', 'x.y'\]"):
        import_file(other, "karpathy", tmp_path / "k.json", ImportOptions(image_root=tmp_path,
                                                                          image_template="{filepath}/{x.y}"))


def test_cli_no_check_files_and_image_template(tmp_path, capsys):
    _karpathy(tmp_path / "k.json", ["1.tif", "2.tif"])
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "import", "karpathy", str(tmp_path / "k.json")]) == 0
    assert "images +0" in capsys.readouterr().out
    assert main(["--db", db, "import", "karpathy", str(tmp_path / "k.json"), "--no-check-files",
                 "--image-template", "imgs/{stem}.png"]) == 0
    assert "images +2" in capsys.readouterr().out
    assert main(["--db", db, "import", "ucm", str(tmp_path / "k.json"), "--image-template", "{nope}"]) == 2
    assert "'{nope}' uses ['nope']" in capsys.readouterr().err


# -- every row's fields type-checked ------------------------------------------------------------------


def test_sentences_that_are_not_a_list_are_a_skipped_row(conn, tmp_path):
    """Today "sentences": "notalist" became seven one-letter captions."""
    write_pngs(tmp_path, "a.png", "b.png")
    data = {"images": [{"filename": "a.png", "sentences": "notalist"},
                       {"filename": "b.png", "sentences": [{"raw": "fine ."}, {"tokens": ["a", 1]}]}]}
    (tmp_path / "k.json").write_text(json.dumps(data))
    report = import_file(conn, "karpathy", tmp_path / "k.json", ImportOptions(image_root=tmp_path))
    assert [(s.row, s.field) for s in report.skipped] == [(1, "sentences"), (2, "sentences[1].tokens[1]")]
    assert "expected a list, got str" in report.skipped[0].reason
    assert _count(conn, "captions") == 0 and _count(conn, "images") == 0


def test_negs_of_the_wrong_types_are_a_skipped_row_not_a_traceback(conn, tmp_path):
    write_pngs(tmp_path, "a.png", "b.png")
    seed = [{"image": "a.png", "pos": "p", "negs": [1, None, {"x": 1}]},
            {"image": "b.png", "pos": "p", "negs": ["n"], "class": 7}]
    (tmp_path / "s.json").write_text(json.dumps(seed))
    report = import_file(conn, "seed-triplets", tmp_path / "s.json", ImportOptions(image_root=tmp_path))
    assert [(s.row, s.field) for s in report.skipped] == [(1, "negs[0]"), (2, "class")]
    assert "caption is int, not text" in report.skipped[0].reason


@pytest.mark.parametrize(("caption", "reason"), [
    ("   ", "caption is empty"),
    ("a\x00b", "control character U+0000"),
    ("bell\x07", "control character U+0007"),
    ("c1\x85", "control character U+0085"),
    ("x" * 2001, "2001 characters, more than the limit 2000"),
])
def test_caption_rules_skip_the_row_naming_file_row_and_field(tmp_path, capsys, caption, reason):
    write_pngs(tmp_path, "a.png")
    lines = [{"image": "a.png", "caption": "good one"}, {"image": "a.png", "caption": caption}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "import", "jsonl", str(tmp_path / "c.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "captions +1" in out and "c.jsonl: skipped row 2 (caption): " in out and reason in out


def test_tab_and_newline_are_kept_in_captions(conn, tmp_path):
    write_pngs(tmp_path, "a.png")
    (tmp_path / "c.csv").write_text('image,caption,source\na.png,"two\tparts\nand lines",\n')
    report = import_file(conn, "csv", tmp_path / "c.csv", ImportOptions(image_root=tmp_path))
    assert report.skipped == [] and tuple(conn.execute("SELECT text, source FROM captions").fetchone()) == (
        "two\tparts\nand lines", "import")


# -- paths --------------------------------------------------------------------------------------------


def test_paths_are_normalised_before_the_uniqueness_check(conn, tmp_path):
    write_pngs(tmp_path, "imgs/1.png")
    seed = [{"image": "./imgs/1.png", "pos": "p", "negs": ["n"]},
            {"image": "imgs//1.png", "pos": "q", "negs": ["m"]},
            {"image": ".", "pos": "p", "negs": ["n"]},
            {"image": "", "pos": "p", "negs": ["n"]}]
    (tmp_path / "s.json").write_text(json.dumps(seed))
    report = import_file(conn, "seed-triplets", tmp_path / "s.json", ImportOptions(image_root=tmp_path))
    assert [row[0] for row in conn.execute("SELECT path FROM images")] == ["imgs/1.png"]
    assert [(s.row, s.field) for s in report.skipped] == [(2, "record"), (3, "image"), (4, "image")]
    assert "duplicate of record 1" in report.skipped[0].reason and "empty" in report.skipped[1].reason
    (tmp_path / "c.csv").write_text("image,caption\n./imgs/1.png,another\n")
    report = import_file(conn, "csv", tmp_path / "c.csv", ImportOptions(image_root=tmp_path))
    assert (report.images_added, report.images_existing, _count(conn, "images")) == (0, 1, 1)
    with pytest.raises(ValueError, match="empty"):
        add_image(conn, "./")


# -- malformed files: exit 2, one line, file and position, nothing written -----------------------------


def _deep(path: Path) -> None:
    path.write_text("[" * 100_000)


def _digits(path: Path) -> None:
    path.write_text('[{"image": "a.png", "pos": "p",\n "negs": [' + "7" * 5000 + "]}]")


def _surrogate(path: Path) -> None:
    path.write_text('[{"image": "a.png", "pos": "p \\ud800 q", "negs": ["n"]}]')


@pytest.mark.parametrize(("write", "where"), [
    (_deep, "line 1 column 501: JSON nested deeper than 500 levels"),
    (_digits, "line 2 column 11: a number with more than 4300 digits"),
    (_surrogate, r"line 1 column 31: lone UTF-16 surrogate escape \ud800 (not Unicode text)"),
])
def test_malformed_json_exits_2_with_one_line(tmp_path, capsys, write, where):
    write(tmp_path / "bad.json")
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "import", "seed-triplets", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'bad.json'}: {where}\n"


def test_a_paired_surrogate_escape_is_fine(conn, tmp_path):
    write_pngs(tmp_path, "a.png")
    (tmp_path / "s.json").write_text('[{"image": "a.png", "pos": "rocket \\ud83d\\ude80 \\\\ud800", "negs": ["n"]}]')
    report = import_file(conn, "seed-triplets", tmp_path / "s.json", ImportOptions(image_root=tmp_path))
    assert report.skipped == [] and conn.execute(
        "SELECT text FROM captions WHERE text LIKE 'rocket%'").fetchone()[0] == "rocket \U0001f680 \\ud800"


def test_invalid_utf8_at_row_4501_of_a_csv_commits_nothing(tmp_path, capsys):
    """Today no file or row was named and 4,000 rows were already committed."""
    write_pngs(tmp_path, "a.png")
    rows = b"".join(b"a.png,caption %d\n" % n for n in range(1, 4501))
    (tmp_path / "c.csv").write_bytes(b"image,caption\n" + rows + b"a.png,bad \xff byte\n" + b"a.png,after\n")
    db = tmp_path / "s.db"
    assert main(["--db", str(db), "import", "csv", str(tmp_path / "c.csv")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'c.csv'}: line 4502 column 11: not UTF-8 text (byte 0xff)\n"
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 0


def test_cli_never_shows_a_traceback(tmp_path):
    _deep(tmp_path / "bad.json")
    done = subprocess.run([sys.executable, "-m", "curation", "--db", str(tmp_path / "s.db"), "import",
                           "triplets", str(tmp_path / "bad.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'bad.json'}: line 1 column 501")


# -- the real cause is shown --------------------------------------------------------------------------


def test_an_error_after_sqlite_rolled_back_is_not_replaced_by_the_rollback_error(conn):
    """A full disk makes SQLite roll back by itself; the failed ROLLBACK used to hide the cause."""
    with pytest.raises(OSError, match="No space left on device"):
        with transaction(conn):
            conn.execute("INSERT INTO images(path, created_at) VALUES ('x.png', 'now')")
            conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
            raise OSError(28, "No space left on device")
    assert not conn.in_transaction and _count(conn, "images") == 0


def test_a_full_store_during_import_reports_the_cause_and_keeps_the_store(tmp_path, capsys, monkeypatch):
    write_pngs(tmp_path, "a.png")
    seed = [{"image": "a.png", "pos": "p" * 1500, "negs": [f"{n}" * 1500 for n in range(1, 9)]}]
    (tmp_path / "s.json").write_text(json.dumps(seed))
    db = tmp_path / "s.db"
    open_store(db).close()
    import curation.cli as cli

    def full_store(path, read_only=False):
        connection = open_store(path, read_only)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 1}")  # the disk fills on the next pages
        return connection

    monkeypatch.setattr(cli, "open_store", full_store)
    assert main(["--db", str(db), "import", "seed-triplets", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "database or disk is full" in err and "nothing of this import is in the store" in err
    assert "cannot rollback" not in err and err.count("\n") == 1
    monkeypatch.undo()
    with open_store(db) as check:
        assert _count(check, "images") == 0 and check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- stats on a read-only store -----------------------------------------------------------------------


def _store_with_one_caption(db: Path, root: Path) -> None:
    write_pngs(root, "a.png")
    (root / "c.csv").write_text("image,caption\na.png,one\n")
    connection = open_store(db)
    import_file(connection, "csv", root / "c.csv", ImportOptions(image_root=root))
    connection.close()


def test_a_store_opened_read_only_gives_stats_and_refuses_writes(tmp_path):
    _store_with_one_caption(tmp_path / "s.db", tmp_path)
    connection = open_store(tmp_path / "s.db", read_only=True)  # SQLite's mode=ro: binds root too
    assert stats(connection)["captions"] == 1
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        add_image(connection, "b.png")
    with pytest.raises(FileNotFoundError, match="never created"):
        open_store(tmp_path / "none.db", read_only=True)


def _read_only_command(folder: Path, command: list[str]) -> list[str] | None:
    """``command`` run where ``folder`` cannot be written, or ``None`` when this machine cannot do it.

    Tests run as root, whom file modes do not bind (and nobody may not run this Python), so as root the
    folder is bind-mounted read-only in a private mount namespace (``unshare -m``): the kernel then
    refuses every write with EROFS, root included. As another user, ``chmod`` does it.
    """
    if os.getuid() != 0:
        folder.chmod(0o555)
        return command
    if shutil.which("unshare") is None:
        return None
    quoted = " ".join(f"'{part}'" for part in command)
    script = f"mount --bind '{folder}' '{folder}' && mount -o remount,ro,bind '{folder}' '{folder}' && exec {quoted}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script.replace(quoted, "true")], capture_output=True)
    return ["unshare", "-m", "sh", "-c", script] if probe.returncode == 0 else None


def test_cli_stats_on_a_store_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    _store_with_one_caption(folder / "s.db", folder)
    before = sorted(p.name for p in folder.iterdir())
    stats_cmd = [sys.executable, "-m", "curation", "--db", str(folder / "s.db"), "stats"]
    write_cmd = [sys.executable, "-m", "curation", "--db", str(folder / "s.db"), "import", "csv", str(folder / "c.csv")]
    commands = [_read_only_command(folder, cmd) for cmd in (stats_cmd, write_cmd)]
    if None in commands:
        pytest.skip("cannot make a folder read-only for root here (no unshare / mount namespace)")
    try:
        done = subprocess.run(commands[0], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "captions: 1" in done.stdout
        refused = subprocess.run(commands[1], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr  # the check is real: writes fail
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing created beside the store
    finally:
        folder.chmod(0o755)
