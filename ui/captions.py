"""The Annotate tab's caption table: rows as the annotator sees them, with a word-level diff against the
selected caption, and how a status line names a caption (its row number and first words, never its id).

Hard negatives differ from their caption by a word or two ("darker" / "lighter"); the table marks the
words of each near-duplicate caption that differ from the selected one with ``<mark>`` (difflib on words),
so that such pairs can be reviewed at a glance. Captions sharing less than :data:`NEAR_RATIO` of their words
with the selected one are shown plain (marking every word of an unrelated caption says nothing).
"""

from __future__ import annotations

import difflib
import html
import math

import pandas as pd

from curation.views import CaptionRow
from ui.common import say

NEAR_RATIO = 0.5  # difflib ratio on words from which a caption counts as a near-duplicate of the selected one
FIRST_WORDS = 6  # words of a caption a status line quotes


def word_diff(text: str, reference: str) -> str:
    """``text`` as HTML (escaped) with the words not in ``reference`` (replaced or inserted) in ``<mark>``.

    Returns the escaped text unmarked when it equals the reference or shares little with it.
    """
    words, ref = text.split(), reference.split()
    matcher = difflib.SequenceMatcher(None, ref, words, autojunk=False)
    if words == ref or not ref or matcher.ratio() < NEAR_RATIO:
        return html.escape(text)
    out = []
    for op, _, _, j1, j2 in matcher.get_opcodes():
        chunk = html.escape(" ".join(words[j1:j2]))
        if not chunk:
            continue
        out.append(chunk if op == "equal" else f"<mark>{chunk}</mark>")
    return " ".join(out)


def first_words(text: str, n: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def caption_ref(caption_ids: list[int], texts: dict[int, str], caption_id: int) -> str:
    """How a status line names a caption: "row 3 “a dense residential area …”" (no row if it is not shown)."""
    words = first_words(texts.get(caption_id, ""))
    if caption_id in caption_ids:
        return say("caption_ref", row=caption_ids.index(caption_id) + 1, words=words)
    return say("caption_ref_hidden", words=words)


def caption_table(ranked: list[tuple[CaptionRow, float]], annotator: str, selected: int) -> pd.DataFrame:
    """One row per caption, best first: ▶ on the selected row, the caption (HTML, diff marked), score, source,
    this annotator's verdict."""
    marks = {verdict: say(f"mark_{verdict}") for verdict in ("accept", "reject", "best")}
    reference = ranked[selected][0].text if 0 <= selected < len(ranked) else ""
    records = [
        ["▶" if n == selected else "", n + 1,
         html.escape(row.text) if n == selected else word_diff(row.text, reference),
         None if math.isnan(score) else round(score, 4), row.source,
         marks.get(row.verdicts.get(annotator, ""), "")]
        for n, (row, score) in enumerate(ranked)
    ]
    columns = ["", "#", *(say(key) for key in ("col_caption", "col_score", "col_source", "col_verdict"))]
    return pd.DataFrame(records, columns=columns)


TABLE_DATATYPES = ["str", "number", "html", "number", "str", "str"]
