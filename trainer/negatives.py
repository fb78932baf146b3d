"""The negative groups of a triplet record, defined once for training and evaluation alike.

For a record with image ``x``, positive caption ``pos`` and seed negatives ``negs`` (docs/formats.md,
"Conventions")::

    "hard"    negs[0]                   the LLM-edited caption (README format: ``negative``)
    "other"   negs[1:]                  the short original caption and the other, worse captions
    "random"  one positive caption of a record of another image, different from ``pos``

Training (``trainer.data``: the focal triplet loss's three terms) and evaluation (``trainer.evaluate``:
hard / local / global accuracy) read the groups from :func:`negative_groups`; the random caption is
drawn by :func:`random_other_caption` from a ``random.Random`` the caller seeds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from trainer.records import TripletRecord

NEGATIVE_GROUPS = ("random", "hard", "other")
_TRIES = 100  # rejection draws before the exhaustive fallback


def random_other_caption(pool: Sequence[TripletRecord], record: TripletRecord, rng: random.Random) -> str | None:
    """The positive caption of a random record of ``pool`` with another image and another text; None if
    no record qualifies. A few rejection draws first (cheap on real data), then a draw among all
    qualifying records, so a pool where most records share the image still finds one."""
    def qualifies(other: TripletRecord) -> bool:
        return other.image != record.image and other.positive != record.positive

    for _ in range(_TRIES):
        other = pool[rng.randrange(len(pool))]
        if qualifies(other):
            return other.positive
    candidates = [other.positive for other in pool if qualifies(other)]
    return rng.choice(candidates) if candidates else None


def negative_groups(record: TripletRecord, random_caption: str | None) -> dict[str, list[str]]:
    """{"random": [..], "hard": [negs[0]], "other": negs[1:]}: the captions of each group (maybe empty)."""
    return {"random": [random_caption] if random_caption else [],
            "hard": [record.hard] if record.hard else [],
            "other": list(record.other_negatives)}
