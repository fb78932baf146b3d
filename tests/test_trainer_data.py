"""Triplet sources, the bad-data report, and batches of distinct images and captions."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from trainer.data import TripletCollator, TripletDataset, epoch_batches
from trainer.records import DataValidationError, load_records, validate_records


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    (root / "imgs").mkdir(parents=True)
    for n, colour in enumerate(["red", "green", "blue", "white"]):
        Image.new("RGB", (56, 56), colour).save(root / "imgs" / f"{n}.png")
    (root / "imgs" / "broken.png").write_bytes(b"not a png")
    return root


def seed_record(image: str, pos: str = "a caption", negs: list | None = None) -> dict:
    return {"image": image, "pos": pos, "negs": negs if negs is not None else ["hard one", "short", "other"]}


def test_the_report_lists_every_bad_record_by_index(image_root, tmp_path):
    raw = [
        seed_record("imgs/0.png"),                       # 0 ok
        seed_record("imgs/missing.png"),                 # 1 missing image
        seed_record("imgs/1.png", pos="  "),             # 2 empty positive
        seed_record("imgs/0.png"),                       # 3 duplicate of 0
        seed_record("../outside.png"),                   # 4 outside the root
        seed_record("imgs/2.png", negs=["ok", ""]),      # 5 empty negative
        {"image_name": "imgs/3.png", "positive": "p"},   # 6 README record without negative
        {"caption": "what is this"},                     # 7 unknown format
        seed_record("imgs/2.png", pos="same", negs=["same"]),  # 8 negative equals the positive
        {"image_name": "imgs/3.png", "positive": "p", "negative": "n"},  # 9 ok
    ]
    path = tmp_path / "triplets.json"
    path.write_text(json.dumps(raw))
    records, report = validate_records(path, image_root)
    assert report.bad_indices == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r.index for r in records] == [0, 9]
    text = str(report)
    for index in report.bad_indices:
        assert f"record {index} " in text
    assert "duplicate of record 0" in text and "image file not found" in text and "negs[1]" in text
    with pytest.raises(DataValidationError) as err:
        load_records(path, image_root)
    assert err.value.report.bad_indices == report.bad_indices
    assert len(load_records(path, image_root, on_invalid="skip")) == 2


def test_a_file_that_is_not_json_is_named_in_the_error(image_root, tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"image": "imgs/0.png", "pos": "a')  # cut short
    with pytest.raises(ValueError, match=r"cut\.json: not valid JSON: ") as err:
        load_records(path, image_root)
    assert isinstance(err.value.__cause__, json.JSONDecodeError)


def test_three_sources_give_the_same_records(image_root, tmp_path):
    readme = [{"image_name": "imgs/0.png", "positive": "a red square", "negative": "a blue square",
               "provenance": "decision"}]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in readme) + "\n")

    class Store:  # what curation hands over: no SQLite in the trainer
        def triplet_records(self) -> list[dict]:
            return readme

    from_file, from_store, from_list = (load_records(s, image_root) for s in (jsonl, Store(), readme))
    assert from_file == from_store == from_list
    assert from_file[0].hard == "a blue square" and from_file[0].other_negatives == ()
    seed = load_records([seed_record("imgs/1.png", negs=["hard", "short", "o1", "o2"])], image_root)[0]
    assert (seed.hard, seed.short, seed.long_others, seed.other_negatives) == ("hard", "short", ("o1", "o2"),
                                                                           ("short", "o1", "o2"))


def test_batch_encodes_each_caption_and_image_once_and_skips_a_broken_image(image_root, tiny_scorer):
    records = load_records([
        seed_record("imgs/0.png", "red square", ["hard red", "There is a square.", "other red"]),
        seed_record("imgs/1.png", "green square", ["hard green", "There is a square."]),
        {"image_name": "imgs/1.png", "positive": "green square", "negative": "blue square"},
        seed_record("imgs/broken.png", "broken", ["x"]),
    ], image_root)
    dataset = TripletDataset(records, image_root, tiny_scorer.processor, seed=0)
    batch = TripletCollator(tiny_scorer.processor)([dataset[(0, i)] for i in range(4)])
    assert batch.skipped == 1 and len(batch) == 3
    assert batch.texts.count("There is a square.") == 1 and batch.texts.count("green square") == 1
    assert len(batch.texts) == len(set(batch.texts)) == batch.input_ids.shape[0]
    assert batch.image_grid_thw.shape[0] == 2  # imgs/1.png appears twice, encoded once
    assert batch.image_index.tolist() == [0, 1, 1]
    assert batch.images == ["imgs/0.png", "imgs/1.png"]  # row order: the keys the DDP gather dedupes by
    mask = batch.positive_mask(2, len(batch.texts))
    assert mask.sum() == 2 and mask[1, batch.texts.index("green square")]
    hard_texts = [batch.texts[i] for i in batch.negatives["hard"][0]]
    assert hard_texts == ["hard red", "hard green", "blue square"]
    other = [(batch.texts[i], owner) for i, owner in zip(*(t.tolist() for t in batch.negatives["other"]))]
    # the "other" group is negs[1:]: the short caption and the rest (the README record has none)
    assert other == [("There is a square.", 0), ("other red", 0), ("There is a square.", 1)]
    random_negatives = [batch.texts[i] for i in batch.negatives["random"][0]]
    for text, owner in zip(random_negatives, batch.negatives["random"][1].tolist()):
        source = next(r for r in records if r.positive == text)  # another image's positive
        assert source.image != records[owner].image and text != records[owner].positive


def test_epoch_plan_is_seeded_and_splits_processes_evenly():
    one = epoch_batches(10, 2, epoch=3, seed=7, num_processes=2, process_index=0)
    two = epoch_batches(10, 2, epoch=3, seed=7, num_processes=2, process_index=1)
    assert one == epoch_batches(10, 2, epoch=3, seed=7, num_processes=2, process_index=0)
    assert len(one) == len(two) == 2  # 10 // (2 × 2), the incomplete global batch dropped
    flat = [i for batch in one + two for _, i in batch]
    assert len(flat) == len(set(flat)) == 8
    assert epoch_batches(10, 2, epoch=4, seed=7) != epoch_batches(10, 2, epoch=3, seed=7)
    assert len(epoch_batches(3, 8, epoch=0, seed=0)[0]) == 8  # smaller than a batch: cycled


def test_the_random_negative_is_another_images_positive_even_when_few_qualify():
    import random

    from trainer.negatives import negative_groups, random_other_caption
    from trainer.records import TripletRecord

    # 200 records of one image and one of another: rejection draws alone would usually miss it
    pool = [TripletRecord("a.png", f"caption {n}") for n in range(200)] + [TripletRecord("b.png", "the other")]
    picks = {random_other_caption(pool, pool[0], random.Random(seed)) for seed in range(5)}
    assert picks == {"the other"}
    assert random_other_caption(pool[:3], pool[0], random.Random(0)) is None
    record = TripletRecord("a.png", "pos", "hard", "short", ("o1", "o2"))
    assert negative_groups(record, "the other") == {"random": ["the other"], "hard": ["hard"],
                                                    "other": ["short", "o1", "o2"]}


# -- caption-aware augmentation -----------------------------------------------------------------------

EIGHT = [(turns, flip) for turns in range(4) for flip in (False, True)]


def red_corner(image, colour=(255, 0, 0)) -> str:
    """Which corner of the image is red: "upper left" | "upper right" | "lower left" | "lower right"."""
    w, h = image.size
    for vertical, y in (("upper", h // 4), ("lower", 3 * h // 4)):
        for horizontal, x in (("left", w // 4), ("right", 3 * w // 4)):
            if image.getpixel((x, y)) == colour:
                return f"{vertical} {horizontal}"
    raise AssertionError(f"no corner of colour {colour}")


def corner_and_plain_images(tmp_path):
    """A folder with corner.png (:func:`corner_image`) and plain.png (all green)."""
    root = tmp_path / "images"
    root.mkdir()
    corner_image().save(root / "corner.png")
    Image.new("RGB", (40, 40), "green").save(root / "plain.png")
    return root


def corner_image():
    image = Image.new("RGB", (40, 40), "white")
    image.paste((255, 0, 0), (0, 0, 20, 20))  # the upper left quarter
    image.paste((0, 0, 255), (20, 0, 40, 20))  # the upper right quarter: no symmetry keeps both in place
    return image


@pytest.mark.parametrize("turns,flip", EIGHT)
def test_rewritten_directions_name_where_the_pixels_went(turns, flip):
    from trainer.augment import Transform, rewrite_directions

    transform = Transform(turns, flip)
    moved = transform.apply(corner_image())
    expected = f"A red roof in the {red_corner(moved)} corner."
    assert rewrite_directions("A red roof in the upper left corner.", transform) == expected
    side = red_corner(moved).split()
    # the red quarter touches the image's upper and left edges; after the move it touches these two
    text = rewrite_directions("The red part is at the top and on the left side.", transform)
    assert text == f"The red part is at the {'top' if side[0] == 'upper' else 'bottom'} and on the {side[1]} side." \
        or text == f"The red part is at the {side[1]} and on the {'top' if side[0] == 'upper' else 'bottom'} side."


@pytest.mark.parametrize("text,turns,flip,expected", [
    ("the left side, the right lane", 0, True, "the right side, the left lane"),
    ("The top-left corner and bottom right", 0, True, "The top-right corner and bottom left"),
    ("Left of the road, RIGHT?", 0, False, "Left of the road, RIGHT?"),  # identity
    ("the lower part; the upper edge", 2, False, "the upper part; the lower edge"),
    ("a road runs horizontally, a vertical canal", 1, False, "a road runs vertically, a horizontal canal"),
    ("a road runs horizontally", 0, True, "a road runs horizontally"),
    ("north of the river, the northwestern block, South-East", 1, False,
     "west of the river, the southwestern block, North-East"),
    ("the leftmost tree, the topmost roof", 1, False, "the bottommost tree, the leftmost roof"),
    # not directions: whole words only, verbs, angles, "on top of", comparatives
    ("Spaces left empty at right angles, on top of the roof, lower density, leftover, bright", 1, True,
     "Spaces left empty at right angles, on top of the roof, lower density, leftover, bright"),
])
def test_direction_words_closed_cases(text, turns, flip, expected):
    from trainer.augment import Transform, rewrite_directions

    assert rewrite_directions(text, Transform(turns, flip)) == expected


def test_a_turned_records_positive_and_negatives_move_with_its_image(tmp_path):
    from trainer.augment import mentions_directions

    root = corner_and_plain_images(tmp_path)
    records = load_records([
        seed_record("corner.png", "red in the upper left corner", ["red in the upper right corner",
                                                                   "There is a red square.", "red on the left side"]),
        seed_record("plain.png", "a green field", ["a brown field", "green."]),
    ], root)
    assert [mentions_directions(r) for r in records] == [True, False]

    class Pixels:  # the dataset only needs the processor to load images
        @staticmethod
        def load_images(paths):
            return [Image.open(p).convert("RGB") for p in paths]

    seen = set()
    for epoch in range(12):
        item = TripletDataset(records, root, Pixels(), augment_images=True)[(epoch, 0)]
        corner, record = red_corner(item["image"]), item["record"]
        seen.add(corner)
        vertical, horizontal = corner.split()
        assert record.positive == f"red in the {corner} corner"
        # the hard negative names where the upper right quarter went: still the wrong corner
        assert record.hard == f"red in the {red_corner(item['image'], (0, 0, 255))} corner" != record.positive
        assert record.short == "There is a red square."
        edges = (horizontal, "top" if vertical == "upper" else "bottom")  # the red quarter's two edges
        assert record.long_others[0] in {f"red on the {edge} side" for edge in edges}
        ignored = TripletDataset(records, root, Pixels(), augment_images=True, augment_directions="ignore")[(epoch, 0)]
        assert red_corner(ignored["image"]) == corner and ignored["record"] == records[0]  # same draw
        skipped = TripletDataset(records, root, Pixels(), augment_images=True, augment_directions="skip")
        assert red_corner(skipped[(epoch, 0)]["image"]) == "upper left" and skipped[(epoch, 0)]["record"] == records[0]
    assert len(seen) == 4  # the turns happened
    with pytest.raises(ValueError, match="augment_directions"):
        TripletDataset(records, root, Pixels(), augment_images=True, augment_directions="swop")[(0, 0)]


def test_the_recipe_knob_is_checked_and_the_tiny_recipe_swaps():
    from trainer.config import TrainConfig, load_yaml

    with pytest.raises(ValueError, match="augment_directions must be swap, skip or ignore, got 'swop'"):
        TrainConfig(augment_directions="swop")
    recipe = TrainConfig.from_dict(load_yaml("configs/tiny_ucm.yaml"))
    assert recipe.augment and recipe.augment_directions == "swap"


def test_an_attribute_swap_replaces_one_whole_word_within_its_group():
    import random
    import re

    from trainer.attribute_negatives import ATTRIBUTE_GROUPS, attribute_negatives, swap_attribute

    text = "Two red buildings with flat roofs stand beside a Green, light-colored redwood lot."
    words = re.findall(r"[\w-]+", text)
    group_of = {w: g for g, ws in ATTRIBUTE_GROUPS.items() for w in ws}
    changed_words = set()
    for seed in range(200):
        swapped = swap_attribute(text, random.Random(seed))
        new = re.findall(r"[\w-]+", swapped)
        diff = [(a, b) for a, b in zip(words, new) if a != b]
        assert len(new) == len(words) and len(diff) == 1, swapped
        old, replacement = diff[0]
        assert group_of[old.lower()] == group_of[replacement.lower()] and old.lower() != replacement.lower()
        assert old[0].isupper() == replacement[0].isupper()  # "Two" → "Four", "Green" → "Brown"
        changed_words.add(old)
    # every attribute word gets swapped; "redwood" is not "red", the hyphenated word is one word
    assert changed_words == {"Two", "red", "flat", "Green", "light-colored"}
    assert swap_attribute("A harbour with boats.", random.Random(0)) is None
    assert {swap_attribute("a grey roof", random.Random(s)) for s in range(100)}.isdisjoint({"a gray roof"})
    several = attribute_negatives(text, 3, random.Random(1))
    assert len(several) == len(set(several)) == 3 and text not in several
    assert attribute_negatives("a roof", 3, random.Random(1)) == []


def test_attribute_negatives_are_seeded_follow_the_turn_and_form_their_own_group(tmp_path, tiny_scorer):
    from trainer.config import TrainConfig
    from trainer.loop import _objective

    root = corner_and_plain_images(tmp_path)
    records = load_records([
        seed_record("corner.png", "a red roof in the upper left corner", ["a blue roof in the upper left corner",
                                                                         "There is a roof."]),
        seed_record("plain.png", "a harbour", ["a beach", "water."]),
    ], root)
    dataset = TripletDataset(records, root, tiny_scorer.processor, augment_images=True, attribute_negatives=2)
    for epoch in range(6):
        item = dataset[(epoch, 0)]
        assert item["swapped"] == dataset[(epoch, 0)]["swapped"]  # drawn from (seed, epoch, record)
        assert len(item["swapped"]) == 2 and item["record"].positive not in item["swapped"]
        corner = red_corner(item["image"])
        # built from the turned positive: the corner named is where the red quarter went
        assert all(f"in the {corner} corner" in text for text in item["swapped"])
    assert dataset[(0, 1)]["swapped"] == []  # nothing to swap in "a harbour"
    batch = TripletCollator(tiny_scorer.processor)([dataset[(0, 0)], dataset[(0, 1)]])
    captions, owners = batch.negatives["swapped"]
    assert [batch.texts[i] for i in captions] == dataset[(0, 0)]["swapped"] and owners.tolist() == [0, 0]
    plain_item = TripletDataset(records, root, tiny_scorer.processor)[(0, 0)]
    assert "swapped" not in plain_item
    assert "swapped" not in TripletCollator(tiny_scorer.processor)([plain_item]).negatives
    # the focal "swapped" term weighs as the hard one unless the recipe says otherwise
    assert _objective(TrainConfig(), 1).focal.weights["swapped"] == 2.0
    assert _objective(TrainConfig(focal_term_weights={"random": 0.5, "hard": 3.0, "other": 0.5}), 1
                      ).focal.weights["swapped"] == 3.0
    assert _objective(TrainConfig(focal_term_weights={"hard": 2.0, "swapped": 0.5}), 1).focal.weights["swapped"] == 0.5
    with pytest.raises(ValueError, match="attribute_negatives must be 0 or more, got -1"):
        TrainConfig(attribute_negatives=-1)


def test_random_resized_crops_are_seeded_keep_the_size_and_cover_at_least_the_minimum_area():
    import random

    import numpy as np

    from trainer.augment import random_resized_crop

    xs, ys = np.meshgrid(np.arange(200), np.arange(160))  # red = column, green = row: a pixel tells its place
    image = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8))
    assert random_resized_crop(image, 1.0, random.Random(0)) is image
    boxes = set()
    for seed in range(40):
        crop = random_resized_crop(image, 0.5, random.Random(seed))
        assert crop.size == image.size
        assert np.array_equal(np.asarray(crop), np.asarray(random_resized_crop(image, 0.5, random.Random(seed))))
        pixels = np.asarray(crop).astype(int)
        width = pixels[..., 0].max() - pixels[..., 0].min() + 1
        height = pixels[..., 1].max() - pixels[..., 1].min() + 1
        assert width * height >= 0.5 * 200 * 160 * 0.97  # resampling may shave a pixel off an edge
        assert 0.75 * 0.97 <= width / height <= 4 / 3 * 1.03
        boxes.add((width, height, pixels[0, 0, 0], pixels[0, 0, 1]))
    assert len(boxes) > 30


def test_crops_draw_from_their_own_stream_so_the_turns_stay_the_same(tmp_path):
    from trainer.config import TrainConfig

    root = tmp_path / "images"
    root.mkdir()
    corner_image().resize((200, 200), Image.NEAREST).save(root / "corner.png")
    records = load_records([seed_record("corner.png", "red in the upper left corner",
                                        ["red in the upper right corner"])], root)

    class Pixels:
        @staticmethod
        def load_images(paths):
            return [Image.open(p).convert("RGB") for p in paths]

    for epoch in range(8):
        plain = TripletDataset(records, root, Pixels(), augment_images=True)[(epoch, 0)]
        cropped = TripletDataset(records, root, Pixels(), augment_images=True, crop_scale=0.9)[(epoch, 0)]
        assert cropped["record"] == plain["record"]  # the same turn, the same rewritten captions
        assert cropped["image"].size == plain["image"].size
        assert red_corner(cropped["image"]) == red_corner(plain["image"])  # 90 % of the area keeps the corners
    with pytest.raises(ValueError, match=r"augment_crop_scale must be in \(0, 1\], got 0"):
        TrainConfig(augment_crop_scale=0)
