"""Typed records of the file formats in docs/formats.md and the one parser of each.

* :class:`SeedTriplet` — the original project's ``{"image", "pos", "negs": [hard, ...others], "class"?}``:
  ``hard`` is ``negs[0]`` (the LLM-edited positive), ``others`` are ``negs[1:]`` (the short original
  caption, then other, worse captions of the same image).
* :class:`ReadmeTriplet` — the README's ``{"image_name", "positive", "negative", "provenance"?}``.
* :class:`Candidate` — a candidate caption ``{"image", "caption", "source"?, "generator"?}`` (a JSONL
  line or a CSV row ``image,caption[,source]``).
* :class:`KarpathyImage` — one ``images[]`` entry of a Karpathy caption file.

Every ``parse_*`` takes one raw record (a parsed JSON object or a CSV row) and returns the typed
record or raises :class:`~common.formats.rules.FieldError` naming the first failing field.
:func:`check_triplets` applies the per-file rules (one seed record per image, no duplicate record).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.formats.rules import FieldError, caption, image_path, optional_label, text_list


@dataclass(frozen=True, slots=True)
class SeedTriplet:
    image: str
    pos: str
    negs: tuple[str, ...]
    cls: str | None = None

    @property
    def hard(self) -> str:
        """``negs[0]``: the hard negative."""
        return self.negs[0]

    @property
    def others(self) -> tuple[str, ...]:
        """``negs[1:]``: the other negatives (short original caption first)."""
        return self.negs[1:]

    def to_json(self) -> dict:
        record = {"image": self.image, "pos": self.pos, "negs": list(self.negs)}
        if self.cls is not None:
            record["class"] = self.cls
        return record


@dataclass(frozen=True, slots=True)
class ReadmeTriplet:
    image: str
    positive: str
    negative: str
    provenance: str | None = None

    def to_json(self) -> dict:
        record = {"image_name": self.image, "positive": self.positive, "negative": self.negative}
        if self.provenance is not None:
            record["provenance"] = self.provenance
        return record


@dataclass(frozen=True, slots=True)
class Candidate:
    image: str
    caption: str
    source: str | None = None
    generator: str | None = None


@dataclass(frozen=True, slots=True)
class KarpathyImage:
    filename: str
    filepath: str | None
    split: str | None
    sentences: tuple[str, ...]


def _object(raw: object) -> dict:
    if not isinstance(raw, dict):
        raise FieldError("record", f"expected a JSON object, got {type(raw).__name__}")
    return raw


def parse_seed(raw: object) -> SeedTriplet:
    raw = _object(raw)
    image = image_path(raw.get("image"), "image")
    pos = caption(raw.get("pos"), "pos")
    negs = text_list(raw.get("negs"), "negs")
    if not negs:
        raise FieldError("negs", "needs at least one negative (negs[0] is the hard negative)")
    for n, neg in enumerate(negs):
        caption(neg, f"negs[{n}]")
        if neg == pos:
            raise FieldError(f"negs[{n}]", "equals the positive caption")
    return SeedTriplet(image, pos, tuple(negs), optional_label(raw, "class"))


def parse_readme(raw: object) -> ReadmeTriplet:
    raw = _object(raw)
    image = image_path(raw.get("image_name"), "image_name")
    positive, negative = caption(raw.get("positive"), "positive"), caption(raw.get("negative"), "negative")
    if positive == negative:
        raise FieldError("negative", "equals the positive caption")
    return ReadmeTriplet(image, positive, negative, optional_label(raw, "provenance"))


def parse_triplet(raw: object) -> SeedTriplet | ReadmeTriplet:
    """Either triplet format, told apart by its keys (``pos``/``negs`` or ``image_name``/``positive``)."""
    raw = _object(raw)
    if "pos" in raw or "negs" in raw:
        return parse_seed(raw)
    if "image_name" in raw or "positive" in raw:
        return parse_readme(raw)
    raise FieldError("record", "neither seed ('image', 'pos', 'negs') nor README ('image_name', "
                     f"'positive', 'negative') format: keys {sorted(map(str, raw))[:8]}")


def parse_candidate(raw: object) -> Candidate:
    raw = _object(raw)
    return Candidate(image_path(raw.get("image"), "image"), caption(raw.get("caption"), "caption"),
                     optional_label(raw, "source"), optional_label(raw, "generator"))


def _sentence(value: object, field: str) -> str:
    if isinstance(value, dict):
        raw = value.get("raw")
        if raw is None and "tokens" in value:
            tokens = text_list(value["tokens"], f"{field}.tokens")
            for n, token in enumerate(tokens):
                if not isinstance(token, str):
                    raise FieldError(f"{field}.tokens[{n}]", f"expected text, got {type(token).__name__}")
            raw = " ".join(tokens)
            return caption(raw, f"{field}.tokens")
        return caption(raw, f"{field}.raw")
    return caption(value, field)


def parse_karpathy_image(raw: object) -> KarpathyImage:
    """``{"filename", "filepath"?, "split"?, "sentences": [{"raw"} | {"tokens"} | "text", ...]}``."""
    raw = _object(raw)
    filename = raw.get("filename")
    if not isinstance(filename, str) or not filename:
        raise FieldError("filename", f"expected a file name, got {str(filename)[:60]!r}")
    sentences = text_list(raw.get("sentences", []), "sentences")
    texts = tuple(_sentence(value, f"sentences[{n}]") for n, value in enumerate(sentences))
    return KarpathyImage(filename, optional_label(raw, "filepath"), optional_label(raw, "split"), texts)


def check_triplets(
    parsed: Iterable[tuple[int, SeedTriplet | ReadmeTriplet]],
) -> tuple[list[tuple[int, SeedTriplet | ReadmeTriplet]], list[tuple[int, FieldError]]]:
    """Per-file rules: one seed record per image; no README record twice (with the same provenance).

    Returns (kept (index, record) pairs, (index, error) for each record left out), in input order.
    """
    kept, problems = [], []
    seen: dict[tuple, int] = {}
    for index, record in parsed:
        if isinstance(record, SeedTriplet):
            key: tuple = ("seed", record.image)
            what = f"image {record.image!r} already has a seed record (one per image)"
        else:
            key = ("readme", record.image, record.positive, record.negative, record.provenance)
            what = "the same triplet"
        if key in seen:
            problems.append((index, FieldError("record", f"duplicate of record {seen[key]}: {what}")))
            continue
        seen[key] = index
        kept.append((index, record))
    return kept, problems
