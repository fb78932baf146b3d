"""Store statistics: sizes, per-annotator counts, disagreements and inter-annotator agreement.

Agreement is Cohen's κ on the polarity of verdicts (positive: accept/best, negative: reject) over
captions that two annotators both judged (their latest effective verdicts). Each pair of annotators
gets its own κ; ``agreement.kappa`` pools every pair's items. κ is ``None`` where it is undefined
(no items, or both raters always gave one same category).
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations

from curation.views import latest_verdicts

MAX_LISTED_DISAGREEMENTS = 100


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's κ for (rater A label, rater B label) pairs; ``None`` if undefined."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    count_a = Counter(a for a, _ in pairs)
    count_b = Counter(b for _, b in pairs)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _polarity(verdict: str) -> str:
    return "negative" if verdict == "reject" else "positive"


def _by_pair(verdicts: dict[tuple[int, int], dict[str, str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(annotator a, annotator b), a < b → their (polarity a, polarity b) on each caption both judged."""
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for by in verdicts.values():
        for a, b in combinations(sorted(by), 2):
            by_pair[(a, b)].append((_polarity(by[a]), _polarity(by[b])))
    return by_pair


def agreement(verdicts: dict[tuple[int, int], dict[str, str]]) -> dict:
    """κ per annotator pair and pooled, each with the number of items it rests on."""
    by_pair = _by_pair(verdicts)
    pooled = [item for items in by_pair.values() for item in items]
    return {
        "measure": "cohen_kappa",
        "kappa": cohen_kappa(pooled),
        "items": len(pooled),
        "pairs": {
            f"{a} / {b}": {"kappa": cohen_kappa(items), "items": len(items)}
            for (a, b), items in by_pair.items()
        },
    }


def disagreements(verdicts: dict[tuple[int, int], dict[str, str]]) -> list[dict]:
    """Captions on which annotators' latest verdicts differ in polarity."""
    return [
        {"image_id": img, "caption_id": cap, "verdicts": dict(by)}
        for (img, cap), by in sorted(verdicts.items())
        if len({_polarity(v) for v in by.values()}) > 1
    ]


def _per_annotator(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("decisions", "images", "accept", "reject", "best", "edit", "undone"), 0)
    )
    for who, verdict, count in conn.execute(
        "SELECT annotator, verdict, COUNT(*) FROM effective_decisions WHERE verdict != 'undo' GROUP BY 1, 2"
    ):
        out[who][verdict] += count
        out[who]["decisions"] += count if verdict != "edit" else 0
    # each undo row cancels one earlier action of the same annotator (decisions.undo_last)
    for who, count in conn.execute("SELECT annotator, COUNT(*) FROM decisions WHERE verdict = 'undo' GROUP BY 1"):
        out[who]["undone"] += count
    for who, images in conn.execute(
        "SELECT annotator, COUNT(DISTINCT image_id) FROM effective_decisions WHERE verdict != 'undo' GROUP BY 1"
    ):
        out[who]["images"] = images
    return dict(out)


def stats(conn: sqlite3.Connection) -> dict:
    """Counts (``images``, ``captions``, ``decisions`` — effective verdicts —, ``triplets``, ...),
    ``per_annotator``, ``disagreements`` (count and up to 100 listed) and ``agreement``."""

    def one(sql: str) -> int:
        return conn.execute(sql).fetchone()[0]

    verdicts = latest_verdicts(conn)
    disagree = disagreements(verdicts)
    per = _per_annotator(conn)
    return {
        "images": one("SELECT COUNT(*) FROM images"),
        "images_labelled": one("SELECT COUNT(*) FROM images WHERE n_annotators > 0"),
        "captions": one("SELECT COUNT(*) FROM captions"),
        "captions_by_source": dict(
            conn.execute("SELECT source, COUNT(*) FROM captions GROUP BY source").fetchall()
        ),
        "decisions": sum(p["decisions"] for p in per.values()),
        "log_rows": one("SELECT COUNT(*) FROM decisions"),
        "edits": one("SELECT COUNT(*) FROM edits"),
        "undone": sum(p["undone"] for p in per.values()),
        "triplets": one("SELECT COUNT(*) FROM triplets"),
        "triplets_by_provenance": dict(
            conn.execute("SELECT provenance, COUNT(*) FROM triplets GROUP BY provenance").fetchall()
        ),
        "annotators": len(per),
        "per_annotator": per,
        "disagreements": {"count": len(disagree), "items": disagree[:MAX_LISTED_DISAGREEMENTS]},
        "agreement": agreement(verdicts),
        "model_versions": one("SELECT COUNT(*) FROM model_versions"),
        "training_runs": one("SELECT COUNT(*) FROM training_runs"),
    }


# -- for the review screen: dataclasses ------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotatorProgress:
    annotator: str
    decisions: int  # effective verdicts (accept + reject + best)
    images: int  # images with an effective action of theirs
    accept: int
    reject: int
    best: int
    edit: int
    undone: int
    last_at: str | None  # time of their latest log row


@dataclass(frozen=True)
class PairAgreement:
    annotator_a: str
    annotator_b: str
    kappa: float | None  # Cohen's κ on verdict polarity; None where undefined
    items: int  # captions both judged
    agreed: int  # of which with the same polarity


@dataclass(frozen=True)
class Agreement:
    kappa: float | None  # pooled over every pair's items
    items: int
    pairs: tuple[PairAgreement, ...]


def annotator_progress(conn: sqlite3.Connection) -> list[AnnotatorProgress]:
    """Per-annotator counts (as in :func:`stats`) and the time of their latest action, by name."""
    last = dict(conn.execute("SELECT annotator, max(created_at) FROM decisions GROUP BY annotator").fetchall())
    return [AnnotatorProgress(annotator=who, **counts, last_at=last.get(who))
            for who, counts in sorted(_per_annotator(conn).items())]


def agreement_summary(conn: sqlite3.Connection) -> Agreement:
    """Cohen's κ per pair of annotators (the annotators' own latest verdicts) and pooled."""
    by_pair = _by_pair(latest_verdicts(conn))
    pairs = tuple(
        PairAgreement(a, b, cohen_kappa(items), len(items), sum(x == y for x, y in items))
        for (a, b), items in sorted(by_pair.items())
    )
    pooled = [item for items in by_pair.values() for item in items]
    return Agreement(cohen_kappa(pooled), len(pooled), pairs)
