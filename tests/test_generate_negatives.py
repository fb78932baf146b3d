"""Hard negatives: the rule editor and the validation of LLM proposals (no model needed)."""

from __future__ import annotations

import logging

import pytest

from scorer.generation import EDIT_KINDS, check_edit, find_sites, generate_hard_negatives, validate_proposals
from scorer.generation.prompts import parse_negative_proposals
from scorer.generation.rules import zh_number, zh_numeral

# Every editable word of this caption is one word, and so is every replacement: a negative's
# changed words can be read off position by position.
CAPTION = "Two red cars are parked left of three white trees"
KIND_OF = {"Two": "count", "three": "count", "red": "colour", "white": "colour", "left": "position",
           "cars": "object", "trees": "object"}


def test_english_negatives_change_two_or_three_recorded_details():
    negatives = generate_hard_negatives(CAPTION, 6, seed=1)
    assert len(negatives) == 6
    assert len({n.text for n in negatives}) == 6 and CAPTION not in {n.text for n in negatives}
    source = CAPTION.split()
    for negative in negatives:
        words = negative.text.split()
        assert len(words) == len(source)
        changed = [old for old, new in zip(source, words) if old != new]
        assert 2 <= len(changed) <= 3 and negative.n_changes == len(changed)
        assert set(negative.edit_kinds) == {KIND_OF[word] for word in changed}
        assert negative.method == "rule"


def test_same_seed_same_negatives_other_seed_others():
    assert generate_hard_negatives(CAPTION, 3, seed=5) == generate_hard_negatives(CAPTION, 3, seed=5)
    assert generate_hard_negatives(CAPTION, 3, seed=5) != generate_hard_negatives(CAPTION, 3, seed=6)


def test_each_english_kind_is_edited_sensibly():
    assert {s.kind for s in find_sites("12 gray buses north of a tennis court")} == set(EDIT_KINDS)
    text = "Left of 12 grey buses stands a tennis court"
    sites = {text[s.start:s.end]: s for s in find_sites(text)}
    assert sites["Left"].options == ("Right",)  # case kept
    assert "gray" not in sites["grey"].options and "grey" not in sites["grey"].options
    assert "trucks" in sites["buses"].options and all(o.endswith("s") for o in sites["buses"].options)
    assert "basketball court" in sites["tennis court"].options
    assert "12" not in sites["12"].options and "1" not in sites["12"].options
    for negative in generate_hard_negatives("an orange roof", 8):  # single site: one change each
        assert negative.n_changes == 1
        article = negative.text.split()[0]
        assert article == ("an" if negative.text.split()[1][0] in "aeiou" else "a")


def test_chinese_negatives_numbers_sides_and_colours():
    caption = "左侧有两栋红色屋顶的房屋，右侧停着十二辆白色汽车，东北方向有一条河流。"
    kinds = {caption[s.start:s.end]: s.kind for s in find_sites(caption)}
    assert kinds["左"] == kinds["右"] == kinds["东北"] == "position"
    assert kinds["两"] == kinds["十二"] == "count" and kinds["红"] == kinds["白"] == "colour"
    negatives = generate_hard_negatives(caption, 5)
    assert len({n.text for n in negatives} - {caption}) == 5
    assert all(2 <= n.n_changes <= 3 and len(n.text) >= len(caption) - 2 for n in negatives)
    (site,) = [s for s in find_sites("东北角有一个网球场") if s.kind == "position"]
    assert site.options == ("西南",)


def test_chinese_words_that_only_look_like_details_are_left_alone():
    assert find_sites("十字路口附近有三角形的绿地，东西走向，人数左右") == []
    for value in range(2, 100):
        assert zh_number(zh_numeral(value)) == value


def test_a_caption_without_details_gets_fewer_negatives_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert generate_hard_negatives("a nice view", 3) == []
    assert "too few details" in caplog.text
    with pytest.raises(ValueError, match="non-empty"):
        generate_hard_negatives("  ", 3)


def test_llm_proposals_are_validated():
    source = "Two red cars are parked left of a white house."
    proposals = [
        ("two red cars are parked  left of a white house.", ["count"]),  # the source again
        ("Three blue cars are parked left of a white house.", []),  # count + colour
        ("Three blue cars are parked left of a white house.", ["count"]),  # duplicate
        ("A river flows through green farmland with many trees.", ["object"]),  # a rewrite
        ("Two red cars are parked left of a white house at night.", []),  # no known kind
        ("Two red cars are parked right of a white warehouse.", ["position", "object"]),
    ]
    accepted = validate_proposals(source, proposals, "llm:test")
    assert [n.text for n in accepted] == [proposals[1][0], proposals[5][0]]
    assert accepted[0].edit_kinds == ("count", "colour") and accepted[0].n_changes == 2
    assert accepted[1].edit_kinds == ("position", "object") and accepted[1].method == "llm:test"
    assert check_edit(source, "Two red cars are parked left of a white house at night.", ["object"], "x")


def test_proposals_are_parsed_from_fenced_json_or_not_at_all():
    answer = 'Sure:\n```json\n[{"caption": "a", "edits": ["Count"]}, "b", 3]\n```'
    assert parse_negative_proposals(answer) == [("a", ["count"]), ("b", [])]
    assert parse_negative_proposals("dog cat [not json]") == []
    assert parse_negative_proposals('{"caption": "a"}') == []
