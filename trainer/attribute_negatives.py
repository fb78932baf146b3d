"""Attribute-swapped negatives: the positive caption with one colour, count, shape or tone word replaced.

The hard negatives of remote-sensing triplets are edits of the positive ("red roofs" → "blue roofs",
"two roads" → "three roads", "flat" → "sloped"). One per image is little to learn from, and because each
edit goes one way, the captions alone give many away (a text-only model learns that "flat" is more often
true than "sloped"). Drawing more such edits from every positive, with the replacement chosen uniformly
within the word's group, shows the model both sides of every swap, so only the image can tell them apart
(the NegCLIP recipe: Yuksekgonul et al., "When and why vision-language models behave like bags-of-words,
and what to do about it", ICLR 2023).

:func:`swap_attribute` replaces one whole word (case kept) with another member of its group, or returns
None when the caption has no word of any group. Directions are not swapped here: the geometric
augmentation (``trainer.augment``) already moves them with the image.
"""

from __future__ import annotations

import random
import re

from trainer.augment import match_case

# Each group: words a caption may use for the same property, any one of which is a plausible wrong value.
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "brown", "yellow", "white", "gray", "grey", "black", "orange", "beige",
               "silver", "tan", "golden", "turquoise", "purple", "pink"),
    "count": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    "tone": ("light", "dark"),
    "tone_comparative": ("lighter", "darker"),
    "tone_colored": ("light-colored", "dark-colored"),
    "roof": ("flat", "sloped"),
    "shape": ("rectangular", "circular", "square", "triangular", "oval"),
    "solid": ("cylindrical", "spherical"),
    "line": ("curved", "straight"),
    "arrangement": ("parallel", "perpendicular", "diagonal"),
    "density": ("dense", "sparse"),
    "size": ("large", "small"),
    "size_comparative": ("larger", "smaller"),
    "width": ("wide", "narrow"),
    "orientation": ("horizontal", "vertical"),
    "surface": ("grass", "dirt", "concrete", "sand", "asphalt"),
}
_GROUP_OF = {word: group for group, words in ATTRIBUTE_GROUPS.items() for word in words}
_PATTERN = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, _GROUP_OF), key=len, reverse=True))
                      + r")(?![\w-])", re.IGNORECASE)


def attribute_words(text: str) -> list[re.Match]:
    """The whole words of ``text`` that belong to an attribute group (hyphenated words count whole)."""
    return list(_PATTERN.finditer(text))


def swap_attribute(text: str, rng: random.Random) -> str | None:
    """``text`` with one attribute word (drawn uniformly) replaced by another word of its group (drawn
    uniformly), or None if ``text`` has none. "gray" and "grey" count as one colour."""
    matches = attribute_words(text)
    if not matches:
        return None
    match = matches[rng.randrange(len(matches))]
    word = match.group(1).lower()
    same = {"gray", "grey"} if word in ("gray", "grey") else {word}
    choices = [other for other in ATTRIBUTE_GROUPS[_GROUP_OF[word]] if other not in same]
    new = match_case(rng.choice(choices), match.group(1))
    return text[:match.start(1)] + new + text[match.end(1):]


def attribute_negatives(positive: str, n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct swapped captions of ``positive`` (fewer when it has few attribute words)."""
    found: list[str] = []
    for _ in range(4 * n):
        if len(found) == n:
            break
        swapped = swap_attribute(positive, rng)
        if swapped is None:
            break
        if swapped != positive and swapped not in found:
            found.append(swapped)
    return found
