"""Hard negatives: a caption with 2–3 concrete details changed (counts, colours, positions, objects).

An LLM (the local backbone or an endpoint) may propose edits; each proposal is *validated* — it must
differ from the source and from the others, change few details of a known kind, and not rewrite the
caption. The deterministic rule editor (:mod:`scorer.generation.rules`) fills the rest, so a caption
with editable details always gets ``n`` negatives, offline, whatever the LLM wrote.
"""

from __future__ import annotations

import difflib
import logging
import re

from scorer.generation.base import CaptionGenerator, clean_text, text_key
from scorer.generation.prompts import hard_negative_prompt, parse_negative_proposals
from scorer.generation.rules import (
    EDIT_KINDS,
    EditSite,
    HardNegative,
    detect_language,
    find_sites,
    rule_negatives,
)

logger = logging.getLogger(__name__)

MAX_CHANGES = 4  # asked for 2–3; one more is tolerated, more is a rewrite
MAX_CHANGED_FRACTION = 0.5  # of the source's tokens
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+|[^\w\s]")


def hard_negative_token_budget(caption: str, n: int) -> int:
    """A bound on the JSON answer's tokens: n copies of the caption (≤ one token per character) + markup."""
    return 32 + n * (len(caption) + 24)


def generate_hard_negatives(caption: str, n: int, generator: CaptionGenerator | None = None,
                            language: str | None = None, seed: int = 0) -> list[HardNegative]:
    """``n`` distinct negatives of ``caption``: validated LLM proposals first, then rule edits.

    Fewer than ``n`` come back only when the caption has too few countable, coloured, positional or
    object words for the rule editor (a warning is logged). Generator errors are raised, not hidden.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"hard negatives need a non-empty caption, got {caption!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (hard negatives per caption) must be a positive integer, got {n!r}")
    language = language or detect_language(caption)
    negatives: list[HardNegative] = []
    if generator is not None:
        answer = generator.chat([hard_negative_prompt(caption, n, language)], n=1,
                                max_new_tokens=hard_negative_token_budget(caption, n))[0]
        proposals = parse_negative_proposals(answer[0]) if answer else []
        negatives = validate_proposals(caption, proposals, f"llm:{generator.name}", language)[:n]
        logger.info("%s: %d of %d proposed negatives passed validation", generator.name, len(negatives),
                    len(proposals))
    taken = {text_key(negative.text) for negative in negatives}
    negatives += rule_negatives(caption, n - len(negatives), seed=seed, language=language, exclude=taken)
    if len(negatives) < n:
        logger.warning("only %d hard negatives of %d for caption %r: too few details to edit",
                       len(negatives), n, caption[:80])
    return negatives


def validate_proposals(source: str, proposals: list[tuple[str, list[str]]], method: str,
                       language: str | None = None) -> list[HardNegative]:
    """The proposals that are real hard negatives of ``source``, in order, without duplicates."""
    accepted: list[HardNegative] = []
    seen = {text_key(source)}
    for text, declared in proposals:
        negative = check_edit(source, clean_text(text), declared, method, language)
        if negative is not None and text_key(negative.text) not in seen:
            seen.add(text_key(negative.text))
            accepted.append(negative)
    return accepted


def check_edit(source: str, edited: str, declared: list[str], method: str,
               language: str | None = None) -> HardNegative | None:
    """``edited`` as a HardNegative of ``source`` if it changes 1–4 details of a known kind, else None."""
    old, new = _tokens(source), _tokens(edited)
    if not edited or [t for t, _ in old] == [t for t, _ in new]:
        return None
    matcher = difflib.SequenceMatcher(a=[t.casefold() for t, _ in old], b=[t.casefold() for t, _ in new],
                                      autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    changed_tokens = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in changes)
    if changed_tokens > max(3, MAX_CHANGED_FRACTION * len(old)):
        return None
    old_sites, new_sites = find_sites(source, language), find_sites(edited, language)
    kinds: set[str] = {kind for kind in declared if kind in EDIT_KINDS}
    details = 0
    for _, i1, i2, j1, j2 in changes:
        hit_old = [s for s in old_sites if _overlaps(s, _span(old, i1, i2, len(source)))]
        hit_new = [s for s in new_sites if _overlaps(s, _span(new, j1, j2, len(edited)))]
        kinds |= {s.kind for s in hit_old + hit_new}
        details += max(len(hit_old), len(hit_new), 1)
    if not kinds or details > MAX_CHANGES:
        return None
    return HardNegative(edited, tuple(k for k in EDIT_KINDS if k in kinds), details, method)


def _tokens(text: str) -> list[tuple[str, int]]:
    return [(m.group(), m.start()) for m in _TOKEN.finditer(text)]


def _span(tokens: list[tuple[str, int]], i1: int, i2: int, length: int) -> tuple[int, int]:
    """Character range of tokens[i1:i2]; an empty range sits where the insertion happens."""
    start = tokens[i1][1] if i1 < len(tokens) else length
    end = tokens[i2 - 1][1] + len(tokens[i2 - 1][0]) if i2 > i1 else start
    return start, end


def _overlaps(site: EditSite, span: tuple[int, int]) -> bool:
    """An empty span (the other side of an insertion or deletion) overlaps nothing."""
    start, end = span
    return site.start < end and start < site.end
