"""Review: the items a reviewer should look at, and the resolutions that settle them.

:func:`review_items` lists, for visible images and captions:

* ``disagreement`` — annotators' latest verdicts on one caption differ in polarity (accept/best vs reject);
* ``best-pick`` — annotators picked different captions of one image as ``best``;
* ``model-contradiction`` — a decision the model contradicts strongly: a caption someone accepted (or
  picked as best) scores at least ``accepted_gap`` below the image's best caption, or a caption someone
  rejected is the model's top caption by at least ``rejected_margin`` over the second.

Each item carries the captions in question side by side (and, for a contradiction, the model's top
caption), each with every annotator's verdict, the model's score and rank, and the resolution in force.
An item is resolved once a reviewer resolved one of its captions (a ``best`` resolution on the image for
``best-pick``); resolved items are left out unless asked for.

:func:`resolve` appends a resolution (:mod:`curation.resolutions`) and rebuilds the image's derived
triplets in the same transaction, so the triplets follow the reviewer at once.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from curation.queue import queue_model
from curation.resolutions import RESOLUTION_VERDICTS, Resolution, resolutions_in_force
from curation.store import now_iso, transaction
from curation.triplets import rebuild_derived
from curation.views import latest_verdicts

KINDS = ("disagreement", "best-pick", "model-contradiction")


@dataclass(frozen=True)
class ReviewOptions:
    model_version: int | None = None  # whose scores to compare with; default: the queue's model
    accepted_gap: float = 0.15  # accepted caption at least this far below the image's best score
    rejected_margin: float = 0.10  # rejected caption the model's top by at least this over the second
    include_resolved: bool = False
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"review kinds {sorted(unknown)} are not among {', '.join(KINDS)}")
        if self.accepted_gap < 0 or self.rejected_margin < 0:
            raise ValueError("accepted_gap and rejected_margin must not be negative")


@dataclass(frozen=True)
class ReviewCaption:
    caption_id: int
    text: str
    source: str
    verdicts: dict[str, str]  # annotator → their latest effective verdict
    score: float | None  # under the model of the review
    rank: int | None  # 1: the model's top caption of the image
    resolution: str | None  # the reviewer's verdict in force, if any


@dataclass(frozen=True)
class ReviewItem:
    kind: str  # disagreement | best-pick | model-contradiction
    image_id: int
    image: str
    reason: str  # one line for the reviewer
    captions: tuple[ReviewCaption, ...]  # the captions in question first, then the model's top for context
    model_version_id: int | None
    resolved: bool


def _scores(conn: sqlite3.Connection, model: int | None) -> dict[int, dict[int, float]]:
    """image id → {caption id: score} of visible captions under ``model``."""
    out: dict[int, dict[int, float]] = defaultdict(dict)
    if model is not None:
        for img, cap, score in conn.execute(
            "SELECT s.image_id, s.caption_id, s.score FROM scores s JOIN captions c ON c.id = s.caption_id"
            " WHERE s.model_version_id = ? AND c.hidden = 0",
            (model,),
        ):
            out[img][cap] = score
    return out


class _Builder:
    """Shared lookups for building items (captions, scores, ranks, verdicts, resolutions)."""

    def __init__(self, conn: sqlite3.Connection, opts: ReviewOptions):
        self.model = opts.model_version if opts.model_version is not None else queue_model(conn)
        self.scores = _scores(conn, self.model)
        self.verdicts = latest_verdicts(conn)
        self.resolved = resolutions_in_force(conn)
        self.captions = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT c.id, c.image_id, c.text, c.source, i.path FROM captions c JOIN images i"
                " ON i.id = c.image_id WHERE c.hidden = 0 AND i.hidden = 0"
            )
        }

    def ranked(self, image_id: int) -> list[int]:
        by_score = self.scores.get(image_id, {})
        return sorted(by_score, key=lambda c: (-by_score[c], c))

    def caption(self, image_id: int, caption_id: int) -> ReviewCaption:
        ranked = self.ranked(image_id)
        resolution = self.resolved.get(caption_id)
        return ReviewCaption(
            caption_id=caption_id,
            text=self.captions[caption_id][1],
            source=self.captions[caption_id][2],
            verdicts=dict(self.verdicts.get((image_id, caption_id), {})),
            score=self.scores.get(image_id, {}).get(caption_id),
            rank=ranked.index(caption_id) + 1 if caption_id in ranked else None,
            resolution=resolution.verdict if resolution else None,
        )

    def item(self, kind: str, image_id: int, reason: str, caption_ids: list[int], resolved: bool) -> ReviewItem:
        captions = tuple(self.caption(image_id, c) for c in dict.fromkeys(caption_ids))
        image = self.captions[caption_ids[0]][3]
        return ReviewItem(kind, image_id, image, reason, captions, self.model, resolved)


def _said(by: dict[str, str]) -> str:
    return " · ".join(f"{who} {verdict}" for who, verdict in sorted(by.items()))


def _caption_items(b: _Builder, opts: ReviewOptions) -> list[ReviewItem]:
    items = []
    for (img, cap), by in sorted(b.verdicts.items()):
        if cap not in b.captions:
            continue  # hidden
        resolved = cap in b.resolved
        if "disagreement" in opts.kinds and len({v == "reject" for v in by.values()}) > 1:
            items.append(b.item("disagreement", img, f"annotators disagree: {_said(by)}", [cap], resolved))
            continue
        if "model-contradiction" not in opts.kinds or cap not in b.scores.get(img, {}):
            continue
        ranked, scores = b.ranked(img), b.scores[img]
        top = ranked[0]
        gap = scores[top] - scores[cap]
        if any(v != "reject" for v in by.values()) and gap >= opts.accepted_gap:
            reason = f"{_said(by)}, yet it scores {gap:.3f} below the image's best caption"
            items.append(b.item("model-contradiction", img, reason, [cap, top], resolved))
        elif any(v == "reject" for v in by.values()) and cap == top and len(ranked) > 1:
            margin = scores[cap] - scores[ranked[1]]
            if margin >= opts.rejected_margin:
                reason = f"{_said(by)}, yet the model ranks it first by {margin:.3f}"
                items.append(b.item("model-contradiction", img, reason, [cap, ranked[1]], resolved))
    return items


def _best_pick_items(b: _Builder) -> list[ReviewItem]:
    picks: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for (img, cap), by in b.verdicts.items():
        for who, verdict in by.items():
            if verdict == "best" and cap in b.captions:
                picks[img][who].add(cap)
    items = []
    for img in sorted(picks):
        if len({frozenset(caps) for caps in picks[img].values()}) < 2:
            continue
        caps = sorted({c for caps in picks[img].values() for c in caps})
        resolved = any(r.image_id == img and r.verdict == "best" for r in b.resolved.values())
        who = ", ".join(sorted(picks[img]))
        items.append(b.item("best-pick", img, f"best picks differ: {who}", caps, resolved))
    return items


def review_items(conn: sqlite3.Connection, options: ReviewOptions | None = None) -> list[ReviewItem]:
    """Items to review (see the module docstring), by image, caption items before best-pick ones."""
    opts = options or ReviewOptions()
    b = _Builder(conn, opts)
    items = _caption_items(b, opts)
    if "best-pick" in opts.kinds:
        items += _best_pick_items(b)
    items.sort(key=lambda item: (item.image_id, KINDS.index(item.kind) == 1))
    return [item for item in items if opts.include_resolved or not item.resolved]


def resolve(
    conn: sqlite3.Connection,
    image_id: int,
    caption_id: int,
    verdict: str,
    reviewer: str,
    note: str | None = None,
) -> Resolution:
    """Record ``reviewer``'s ``verdict`` (accept / reject / best, or clear to withdraw) on a caption.

    It overrides every annotator's verdict on that caption; the image's derived triplets are rebuilt
    in the same transaction (see :mod:`curation.resolutions`).
    """
    if verdict not in RESOLUTION_VERDICTS:
        raise ValueError(f"resolution {verdict!r} is not one of {', '.join(RESOLUTION_VERDICTS)}")
    if not reviewer or not reviewer.strip():
        raise ValueError("reviewer name is empty")
    with transaction(conn):
        row = conn.execute("SELECT image_id, hidden FROM captions WHERE id = ?", (caption_id,)).fetchone()
        if row is None:
            raise ValueError(f"caption {caption_id} does not exist")
        if row[0] != image_id:
            raise ValueError(f"caption {caption_id} belongs to image {row[0]}, not to image {image_id}")
        if row[1] and verdict != "clear":
            raise ValueError(f"caption {caption_id} is hidden; unhide it before resolving it")
        cursor = conn.execute(
            "INSERT INTO resolutions(image_id, caption_id, verdict, reviewer, note, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (image_id, caption_id, verdict, reviewer, note, now_iso()),
        )
        for (annotator,) in conn.execute(
            "SELECT DISTINCT annotator FROM decisions WHERE image_id = ?", (image_id,)
        ).fetchall():
            rebuild_derived(conn, image_id, annotator)
        row = conn.execute(
            "SELECT id, image_id, caption_id, verdict, reviewer, note, created_at FROM resolutions WHERE id = ?",
            (cursor.lastrowid,),
        ).fetchone()
        return Resolution(*row)
