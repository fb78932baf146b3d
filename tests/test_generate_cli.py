"""``python -m scorer.generation --model tiny``: JSON Lines the store imports, resumable with --append."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
