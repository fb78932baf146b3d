"""``python -m scorer.generation --model tiny``: JSON Lines the store imports, resumable with --append."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from curation.importers import ImportOptions, import_jsonl
from curation.store import find_image, open_store
from curation.views import image_captions
from scorer.generation.cli import find_images, main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-new-tokens", "5", "--top-p", "1", "--top-k", "0", "--device", "cpu", "--seed", "0"]


def make_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (56, 56), (30 * i, 90, 160)).save(folder / name)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_tiny_cli_round_trips_through_the_store_and_resumes(tmp_path, capsys):
    images = tmp_path / "data" / "imgs"
    make_images(images, ["a.png", "b.png"])
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "candidates.jsonl"
    argv = ["--model", "tiny", "--images", str(images), "--image-root", str(tmp_path / "data"), "--n", "2",
            "--output", str(out), *FAST]
    assert main(argv) == 0
    lines = read_lines(out)
    assert [line["image"] for line in lines] == ["imgs/a.png"] * 2 + ["imgs/b.png"] * 2
    assert all(line["source"] == "model:tiny" and line["generator"] == "local:tiny" and line["caption"]
               for line in lines)

    conn = open_store(tmp_path / "store.db")
    report = import_jsonl(conn, out, ImportOptions(image_root=tmp_path / "data", check_files=True))
    assert report.images_added == 2 and report.captions_added == 4 and not report.skipped
    stored = image_captions(conn, find_image(conn, "imgs/a.png"))
    assert [(c.text, c.source, c.author) for c in stored] == [
        (line["caption"], "model:tiny", "local:tiny") for line in lines[:2]]

    assert main(argv) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err
    make_images(images, ["a.png", "b.png", "c.png"])
    assert main([*argv, "--append"]) == 0  # only the new image is generated
    assert [line["image"] for line in read_lines(out)[4:]] == ["imgs/c.png"] * 2

    # A run killed in the middle of writing b's lines: the half line is dropped and b is generated again.
    text = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(text[:2]) + text[2][:25], encoding="utf-8")
    assert main([*argv, "--append"]) == 0
    assert sorted(line["image"] for line in read_lines(out)) == sorted(["imgs/a.png"] * 2 + ["imgs/b.png"] * 2
                                                                       + ["imgs/c.png"] * 2)


def test_images_outside_the_root_or_missing_are_refused(tmp_path, capsys):
    make_images(tmp_path / "elsewhere", ["x.png"])
    (tmp_path / "root").mkdir()
    argv = ["--model", "tiny", "--images", str(tmp_path / "elsewhere"), "--image-root", str(tmp_path / "root"),
            "--output", str(tmp_path / "c.jsonl")]
    assert main(argv) == 1
    assert "outside the image root" in capsys.readouterr().err
    assert main(["--model", "tiny", "--images", str(tmp_path / "nope"), "--output", str(tmp_path / "c.jsonl")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert find_images(tmp_path / "elsewhere" / "x.png") == [tmp_path / "elsewhere" / "x.png"]


def test_module_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "scorer.generation", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--openai-model" in result.stdout and "--image-root" in result.stdout


def test_hard_negatives_from_a_best_captions_file_import_as_candidates(tmp_path, capsys):
    from scorer.generation import EDIT_KINDS

    make_images(tmp_path / "data" / "imgs", ["a.png", "b.png"])
    best = tmp_path / "best.json"  # as `python -m curation export best-captions best.json` writes it
    sources = {"imgs/a.png": "Two red cars parked left of a white house.",
               "imgs/b.png": "Three green fields beside one straight road and four trees."}
    best.write_text(json.dumps([{"image": image, "caption": caption, "annotator": "ann", "decided_at": "",
                                 "source": "import"} for image, caption in sources.items()]), encoding="utf-8")
    out = tmp_path / "negatives.jsonl"
    assert main(["--hard-negatives", "--captions", str(best), "--n", "3", "--output", str(out)]) == 0
    lines = read_lines(out)
    assert len(lines) == 6 and [line["image"] for line in lines] == ["imgs/a.png"] * 3 + ["imgs/b.png"] * 3
    for line in lines:
        assert line["negative_of"] == sources[line["image"]] and line["caption"] != line["negative_of"]
        kind, _, kinds = line["source"].partition(":")
        assert kind == "hard-negative" and kinds and set(kinds.split("+")) <= set(EDIT_KINDS)
        assert line["generator"] == "rule"  # no --model: the rule editor alone
    assert "wrote 6 hard negatives of 2 captions" in capsys.readouterr().out

    conn = open_store(tmp_path / "store.db")
    report = import_jsonl(conn, out, ImportOptions(image_root=tmp_path / "data", check_files=True))
    assert report.captions_added == 6 and not report.skipped
    stored = image_captions(conn, find_image(conn, "imgs/a.png"))
    assert {(c.source, c.author) for c in stored} == {(line["source"], "rule") for line in lines[:3]}

    assert main(["--hard-negatives", "--captions", str(best), "--output", str(out)]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_hard_negatives_read_csv_and_tab_separated_text_and_name_a_bad_record(tmp_path, capsys):
    from scorer.generation.cli import read_captions

    csv_file = tmp_path / "best.csv"
    csv_file.write_text("image,caption,source\nimgs/a.png,Two red cars.,import\nimgs/a.png,Two red cars.,import\n")
    assert read_captions(csv_file) == [("imgs/a.png", "Two red cars.")]  # a repeated pair once
    txt = tmp_path / "captions.txt"
    txt.write_text("imgs/a.png\tTwo red cars.\n\nimgs/b.png\tOne white house.\n")
    assert read_captions(txt) == [("imgs/a.png", "Two red cars."), ("imgs/b.png", "One white house.")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "imgs/a.png", "caption": "Two red cars."}) + "\n"
                   + json.dumps({"image": "imgs/b.png"}) + "\n")
    out = tmp_path / "neg.jsonl"
    assert main(["--hard-negatives", "--captions", str(bad), "--output", str(out)]) == 1
    assert "bad.jsonl record 2: no 'caption' text" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):  # --images belongs to caption generation
        main(["--hard-negatives", "--captions", str(txt), "--images", str(tmp_path), "--output", str(out)])
