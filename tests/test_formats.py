"""common.formats: one set of rules for the triplet and caption files, shared by trainer and store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from common.formats import (
    FieldError,
    FormatError,
    ReadmeTriplet,
    SeedTriplet,
    caption_problem,
    check_triplets,
    json_lines,
    load_json,
    parse_candidate,
    parse_karpathy_image,
    parse_triplet,
)
from curation.importers import ImportOptions, import_file
from curation.store import open_store
from trainer.records import validate_records

ROOT = Path(__file__).resolve().parents[1]


def test_seed_negative_groups_follow_the_original_convention():
    seed = parse_triplet({"image": "./imgs/1.png", "pos": "p", "negs": ["hard", "short", "o1"], "class": "beach"})
    assert isinstance(seed, SeedTriplet) and seed.image == "imgs/1.png"
    assert (seed.hard, seed.others) == ("hard", ("short", "o1"))
    assert seed.to_json() == {"image": "imgs/1.png", "pos": "p", "negs": ["hard", "short", "o1"], "class": "beach"}
    readme = parse_triplet({"image_name": "a.png", "positive": "p", "negative": "n"})
    assert readme == ReadmeTriplet("a.png", "p", "n") and readme.to_json() == {
        "image_name": "a.png", "positive": "p", "negative": "n"}


@pytest.mark.parametrize(("raw", "field"), [
    ([], "record"),
    ({"caption": "x"}, "record"),
    ({"image": "a.png", "pos": "p", "negs": []}, "negs"),
    ({"image": "a.png", "pos": "p", "negs": "n"}, "negs"),
    ({"image": "a.png", "pos": "p", "negs": ["n", None]}, "negs[1]"),
    ({"image": "a.png", "pos": "p", "negs": ["p"]}, "negs[0]"),
    ({"image": "/etc/passwd", "pos": "p", "negs": ["n"]}, "image"),
    ({"image_name": "a.png", "positive": "p", "negative": 3}, "negative"),
    ({"image_name": "a.png", "positive": "p", "negative": "n", "provenance": ["x"]}, "provenance"),
])
def test_a_bad_field_is_named(raw, field):
    with pytest.raises(FieldError) as error:
        parse_triplet(raw)
    assert error.value.field == field


def test_candidates_and_karpathy_entries():
    assert parse_candidate({"image": "a.png", "caption": "c", "source": "", "generator": None}).source is None
    with pytest.raises(FieldError, match="'source'"):
        parse_candidate({"image": "a.png", "caption": "c", "source": 5})
    entry = parse_karpathy_image({"filename": "1.tif", "sentences": [{"raw": "a ."}, {"tokens": ["b", "c"]}, "d"]})
    assert entry.sentences == ("a .", "b c", "d")
    with pytest.raises(FieldError, match="'sentences'"):
        parse_karpathy_image({"filename": "1.tif", "sentences": "notalist"})


def test_caption_rules():
    assert caption_problem("tab\tand\nnewline\r") is None
    assert "U+001B" in caption_problem("escape \x1b[31m")
    assert "U+D800" in caption_problem("lone \ud800")
    assert caption_problem("x" * 2000) is None and "limit 2000" in caption_problem("x" * 2001)


def test_per_file_rules():
    parsed = [(1, parse_triplet({"image": "a.png", "pos": "p", "negs": ["n"]})),
              (2, parse_triplet({"image": "./a.png", "pos": "q", "negs": ["m"]})),
              (3, parse_triplet({"image_name": "a.png", "positive": "p", "negative": "n"})),
              (4, parse_triplet({"image_name": "a.png", "positive": "p", "negative": "n"})),
              (5, parse_triplet({"image_name": "a.png", "positive": "p", "negative": "n", "provenance": "edit"}))]
    kept, problems = check_triplets(parsed)
    assert [index for index, _ in kept] == [1, 3, 5]
    assert [(index, str(error)) for index, error in problems] == [
        (2, "field 'record': duplicate of record 1: image 'a.png' already has a seed record (one per image)"),
        (4, "field 'record': duplicate of record 3: the same triplet")]


def test_file_errors_name_file_line_and_column(tmp_path):
    (tmp_path / "a.json").write_text('[\n  {"x": 1,}\n]')
    with pytest.raises(FormatError, match=r"a\.json: line 2 column 11: not valid JSON"):
        load_json(tmp_path / "a.json")
    (tmp_path / "b.jsonl").write_bytes(b'{"a": 1}\n\n{"b": \n')
    rows = json_lines(tmp_path / "b.jsonl")
    assert rows[0] == (1, {"a": 1}) and rows[1][0] == 3 and isinstance(rows[1][1], FormatError)
    (tmp_path / "c.jsonl").write_bytes(b'{"a": 1}\n{"b": "\xc3"}\n')
    with pytest.raises(FormatError, match=r"c\.jsonl: line 2 column 8: not UTF-8 text \(byte 0xc3\)"):
        json_lines(tmp_path / "c.jsonl")


def test_trainer_and_store_accept_and_refuse_the_same_records(tmp_path):
    """One set of rules: the records the trainer refuses are the rows the store skips."""
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8), "blue").save(tmp_path / name)
    raw = [
        {"image": "a.png", "pos": "p", "negs": ["hard", "short", "other"]},
        {"image": "./a.png", "pos": "q", "negs": ["n"]},          # a second record for a.png
        {"image": "b.png", "pos": "p", "negs": [1, None, {"x": 1}]},
        {"image": "b.png", "pos": "p\x00", "negs": ["n"]},
        {"image": "c.png", "pos": "p", "negs": ["p"]},
        {"image": "missing.png", "pos": "p", "negs": ["n"]},
        {"image": "c.png", "pos": "x" * 2001, "negs": ["n"]},
        {"image": "c.png", "pos": "ok", "negs": ["fine"], "class": "x"},
    ]
    (tmp_path / "seed.json").write_text(json.dumps(raw))
    records, report = validate_records(tmp_path / "seed.json", tmp_path)
    conn = open_store(tmp_path / "s.db")
    imported = import_file(conn, "seed-triplets", tmp_path / "seed.json", ImportOptions(image_root=tmp_path))
    assert [r.index + 1 for r in records] == [1, 8]
    assert sorted(s.row for s in imported.skipped) == [i + 1 for i in report.bad_indices] == [2, 3, 4, 5, 6, 7]
    assert [p.field for p in report.problems] == [s.field for s in imported.skipped]


def test_the_format_module_needs_neither_torch_nor_sqlite():
    code = "import sys, common.formats; print(sorted({'torch', 'sqlite3', 'gradio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
