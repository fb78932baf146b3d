"""The cross-validation folds of bench/learning_check.py, on the demo triplets (24 images, 3 classes)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest
from project_paths import ROOT


@pytest.fixture(scope="module")
def learning_check():
    spec = importlib.util.spec_from_file_location("learning_check", ROOT / "bench" / "learning_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_records() -> list[dict]:
    return json.loads((ROOT / "assets" / "demo" / "triplets.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_disjoint_cover_every_image_and_are_balanced(learning_check, demo_records, k):
    folds = learning_check.fold_split(demo_records, k, seed=0)
    images = [image for fold in folds for image in fold]
    assert len(folds) == k
    assert len(images) == len(set(images))  # disjoint
    assert set(images) == {record["image"] for record in demo_records}  # every image once
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    classes = {record["image"]: record["class"] for record in demo_records}
    for label in set(classes.values()):
        counts = [sum(classes[image] == label for image in fold) for fold in folds]
        assert max(counts) - min(counts) <= 1, (label, counts)


def test_folds_hold_equal_class_counts_when_they_divide(learning_check, demo_records):
    """24 images, 3 classes of 8: 4 folds of 2 images of every class."""
    folds = learning_check.fold_split(demo_records, 4, seed=3)
    classes = {record["image"]: record["class"] for record in demo_records}
    for fold in folds:
        assert sorted(Counter(classes[image] for image in fold).values()) == [2, 2, 2]


def test_folds_are_deterministic_and_seeded(learning_check, demo_records):
    first = learning_check.fold_split(demo_records, 3, seed=0)
    assert learning_check.fold_split(list(reversed(demo_records)), 3, seed=0) == first  # not the file's order
    assert learning_check.fold_split(demo_records, 3, seed=1) != first


def test_records_of_one_image_stay_in_one_fold(learning_check, demo_records):
    doubled = demo_records + [dict(record, pos=record["pos"] + " Again.") for record in demo_records]
    folds = learning_check.fold_split(doubled, 3, seed=0)
    assert sorted(image for fold in folds for image in fold) == sorted({r["image"] for r in demo_records})


def test_bad_fold_requests_name_the_problem(learning_check, demo_records):
    with pytest.raises(ValueError, match="at least 2"):
        learning_check.fold_split(demo_records, 1, seed=0)
    with pytest.raises(ValueError, match="25 folds"):
        learning_check.fold_split(demo_records, 25, seed=0)
    clash = demo_records + [dict(demo_records[0], **{"class": "airport"})]
    with pytest.raises(ValueError, match=f"record {len(demo_records)} \\(class\\)"):
        learning_check.fold_split(clash, 3, seed=0)
