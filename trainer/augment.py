"""Caption-aware geometric augmentation: a random flip / 90° turn of the image, and the captions' direction
words rewritten to match.

A horizontal flip makes "the pool on the left" wrong; the hard negatives of UC Merced triplets often swap
exactly such a word (left↔right, top↔bottom), so flipping the image alone teaches the model that the
direction does not matter. :func:`rewrite_directions` moves every direction word the way the image moved:
``turns`` counter-clockwise quarter turns (Pillow's ``ROTATE_90``), then a left–right mirror if ``flip``.

Only whole words in a direction context change: "left" in "spaces left empty", "right angles", "on top of"
or "lower density" stay. Compass words (north, south-east, western) follow the image as if north were up.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace

from PIL import Image

from trainer.records import TripletRecord

DIRECTIONS = ("top", "bottom", "left", "right")
AUGMENT_DIRECTIONS = ("swap", "skip", "ignore")
_TURN = {"top": "left", "left": "bottom", "bottom": "right", "right": "top"}  # 90° counter-clockwise
_MIRROR = {"top": "top", "bottom": "bottom", "left": "right", "right": "left"}
# the forms of each direction, in DIRECTIONS order
_FORMS = (("top", "bottom", "left", "right"), ("upper", "lower", "left", "right"),
          ("topmost", "bottommost", "leftmost", "rightmost"), ("uppermost", "lowermost", "leftmost", "rightmost"),
          ("north", "south", "west", "east"), ("northern", "southern", "western", "eastern"))
_WORD = {word: (form, DIRECTIONS[i]) for form, words in enumerate(_FORMS) for i, word in enumerate(words)
         if word not in ("left", "right", "leftmost", "rightmost") or form in (0, 2)}
_ORIENTATION = {"horizontal": "vertical", "vertical": "horizontal",
                "horizontally": "vertically", "vertically": "horizontally"}
_BEFORE = {"the", "its", "their", "his", "her", "to", "at", "from", "facing", "toward", "towards", "and", "or",
           "far", "extreme", "center", "centre", "middle", "s"}
_AFTER = {"side", "sides", "edge", "edges", "half", "part", "portion", "section", "corner", "corners", "end",
          "lane", "lanes", "bank", "banks", "of", "area", "region", "border", "boundary", "hand", "quadrant"}
_VERTICAL = r"top|bottom|upper|lower|north|south"
_HORIZONTAL = r"left|right|west|east"
_PATTERN = re.compile(
    rf"\b(?P<pair>(?:{_VERTICAL})(?P<sep>[\s-]*)(?:{_HORIZONTAL})(?P<tail>ern)?)\b"
    rf"|\b(?P<word>{'|'.join(sorted({*_WORD, *_ORIENTATION}, key=len, reverse=True))})\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class Transform:
    """An element of the square's symmetry group: ``turns`` quarter turns counter-clockwise, then a mirror."""

    turns: int = 0
    flip: bool = False

    def move(self, direction: str) -> str:
        for _ in range(self.turns % 4):
            direction = _TURN[direction]
        return _MIRROR[direction] if self.flip else direction

    def apply(self, image: Image.Image) -> Image.Image:
        turn = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[self.turns % 4]
        if turn is not None:
            image = image.transpose(turn)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flip else image


def draw_transform(rng: random.Random) -> Transform:
    """A uniformly random element of the group (the same draws the image-only augmentation always made)."""
    turns = rng.choice([0, 1, 2, 3])
    return Transform(turns, rng.random() < 0.5)


def random_resized_crop(image: Image.Image, min_scale: float, rng: random.Random) -> Image.Image:
    """A crop of ``min_scale`` to all of the image's area (aspect 3/4 to 4/3), resized back to the image's
    size: torchvision's ``RandomResizedCrop``, its parameters drawn from ``rng`` (torchvision draws from
    torch's global generator) so that a resumed run sees the same crops. ``min_scale`` 1: the image as is.

    A crop moves no direction word: what is left of the tile keeps its sides.
    """
    if min_scale >= 1.0:
        return image
    from torchvision.transforms.functional import resized_crop

    width, height = image.size
    for _ in range(10):  # torchvision's rejection draws; then the whole image, as its fallback does
        area = width * height * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w, crop_h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top, left = rng.randint(0, height - crop_h), rng.randint(0, width - crop_w)
            return resized_crop(image, top, left, crop_h, crop_w, [height, width], antialias=True)
    return image


def match_case(word: str, template: str) -> str:
    """``word`` written in ``template``'s case: all capitals, a capital first, or as is."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if template[:1].isupper() else word


def _is_direction(text: str, match: re.Match, lower: str) -> bool:
    """Whether a lone direction word is used as a direction here (a compass word always is)."""
    form, _ = _WORD[lower]
    if form >= 4:
        return True
    before = re.findall(r"[a-z]+", text[max(0, match.start() - 20): match.start()].lower())
    after = re.findall(r"[a-z]+", text[match.end(): match.end() + 20].lower())
    prev, nxt = (before[-1] if before else ""), (after[0] if after else "")
    if nxt in ("angle", "angles", "angled") or (lower == "top" and prev == "on"):
        return False
    if lower in ("upper", "lower"):
        return nxt in _AFTER - {"of"}
    return prev in _BEFORE or nxt in _AFTER


def _pair(text: str, transform: Transform) -> str:
    """"top left" / "upper-right" / "south-east" / "northwestern", moved; the vertical word stays first."""
    match = re.fullmatch(rf"({_VERTICAL})([\s-]*)({_HORIZONTAL})(ern)?", text, re.IGNORECASE)
    first, sep, second, tail = match.groups()
    form = _WORD[first.lower()][0]
    moved = {transform.move(_WORD[first.lower()][1]), transform.move(_WORD[second.lower()][1])}
    vertical = next(d for d in moved if d in ("top", "bottom"))
    horizontal = next(d for d in moved if d in ("left", "right"))
    words = (_FORMS[form][DIRECTIONS.index(vertical)],
             _FORMS[0 if form < 4 else 4][DIRECTIONS.index(horizontal)] + (tail or ""))
    return match_case(words[0], first) + sep + match_case(words[1], second)


def rewrite_directions(text: str, transform: Transform) -> str:
    """``text`` with its direction words moved as ``transform`` moves the image (identity: unchanged)."""
    if transform == Transform():
        return text

    def substitute(match: re.Match) -> str:
        if match.group("pair"):
            return _pair(match.group("pair"), transform)
        word = match.group("word")
        lower = word.lower()
        if lower in _ORIENTATION:
            return match_case(_ORIENTATION[lower], word) if transform.turns % 2 else word
        if not _is_direction(text, match, lower):
            return word
        form, direction = _WORD[lower]
        return match_case(_FORMS[form][DIRECTIONS.index(transform.move(direction))], word)

    return _PATTERN.sub(substitute, text)


def mentions_directions(record: TripletRecord) -> bool:
    """Whether a turn or a mirror would change any caption of the record."""
    probes = (Transform(1), Transform(0, True))
    return any(rewrite_directions(text, probe) != text
               for text in (record.positive, *record.negatives) for probe in probes)


def rewrite_record(record: TripletRecord, transform: Transform) -> TripletRecord:
    """The record's positive and every negative, rewritten consistently."""
    def move(text: str | None) -> str | None:
        return None if text is None else rewrite_directions(text, transform)

    return replace(record, positive=move(record.positive), hard=move(record.hard), short=move(record.short),
                   long_others=tuple(move(t) for t in record.long_others))
