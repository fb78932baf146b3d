"""Triplet records from the three sources, and the validation report made before any training.

Sources (docs/formats.md):

* ``seed-triplets`` — the original project's ``{"image", "pos", "negs": [hard, short, other...]}``;
* ``triplets`` — the README format ``{"image_name", "positive", "negative"}`` (JSON array or ``.jsonl``);
* the curation store, through any object with ``triplet_records() -> list[dict]`` (README format),
  or a plain list of such dicts — the trainer never imports SQLite code.

Parsing and the validation rules are :mod:`common.formats`'s, shared with the curation store's
importers. Everything becomes :class:`TripletRecord`; :func:`validate_records` lists every offending
record by index (a field that breaks a rule, a duplicate, a missing image file) in one
:class:`ValidationReport`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from common.formats import (
    FieldError,
    FormatError,
    ReadmeTriplet,
    SeedTriplet,
    check_triplets,
    json_lines,
    load_json,
    parse_triplet,
)
from common.paths import PathOutsideRootError, resolve_inside

logger = logging.getLogger(__name__)


@runtime_checkable
class TripletSource(Protocol):
    """What the trainer needs from the curation store (``curation`` provides it; no SQLite here)."""

    def triplet_records(self) -> list[dict]: ...


@dataclass(frozen=True)
class TripletRecord:
    """One image with its positive caption and its negatives, by role.

    ``hard``: the LLM-edited negative (seed ``negs[0]``, README ``negative``); ``short``: the short
    original caption (seed ``negs[1]``); ``long_others``: the other, worse long captions of the same
    image (seed ``negs[2:]``). The original project's "others" (``negs[1:]``, named so in
    :class:`common.formats.SeedTriplet` too) are :attr:`other_negatives`. ``index`` is the record's
    position in its source, for error messages.
    """

    image: str
    positive: str
    hard: str | None = None
    short: str | None = None
    long_others: tuple[str, ...] = ()
    index: int = 0

    @property
    def other_negatives(self) -> tuple[str, ...]:
        """The original project's "other negatives": ``negs[1:]``."""
        return ((self.short,) if self.short else ()) + self.long_others

    @property
    def negatives(self) -> tuple[str, ...]:
        return ((self.hard,) if self.hard else ()) + self.other_negatives


@dataclass(frozen=True)
class RecordProblem:
    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"record {self.index} ({self.field}): {self.message}"


@dataclass
class ValidationReport:
    """Every problem of a triplet source, by record index; ``ok`` when there is none."""

    source: str
    n_records: int
    problems: list[RecordProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_indices(self) -> list[int]:
        return sorted({problem.index for problem in self.problems})

    def __str__(self) -> str:
        head = f"{self.source}: {len(self.bad_indices)} of {self.n_records} records have problems"
        return "\n".join([head] + [f"  {problem}" for problem in self.problems])


class DataValidationError(ValueError):
    """The training data has bad records; ``.report`` lists each of them."""

    def __init__(self, report: ValidationReport):
        super().__init__(str(report))
        self.report = report


def read_raw_records(source: str | os.PathLike[str] | TripletSource | list[dict]) -> tuple[str, list]:
    """→ (a name for messages, the raw records). Files: JSON array, or JSON Lines for ``.jsonl``.

    Files are read under the rules of :mod:`common.formats` (UTF-8, JSON depth, digit and surrogate
    limits); a file that breaks them raises ``ValueError`` naming the file and the position.
    """
    if isinstance(source, TripletSource):
        return type(source).__name__, list(source.triplet_records())
    if isinstance(source, list):
        return "records", source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"triplet file not found: {path}")
    try:
        if path.suffix == ".jsonl":
            rows = []
            for _, value in json_lines(path):
                if isinstance(value, FormatError):
                    raise value
                rows.append(value)
            return str(path), rows
        data = load_json(path)
    except FormatError as err:
        where = f"line {err.line} column {err.column}: " if err.line is not None else ""
        raise ValueError(f"{path}: not valid JSON: {where}{err.reason}") from (err.__cause__ or err)
    if isinstance(data, dict) and "images" in data:
        raise ValueError(f"{path} is a Karpathy caption file; it has no negatives to train on. "
                         f"Evaluate on it with python -m trainer.evaluate")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of triplet records, got {type(data).__name__}")
    return str(path), data


def to_record(parsed: SeedTriplet | ReadmeTriplet, index: int) -> TripletRecord:
    """The trainer's view of a parsed record: seed ``negs[0]`` is hard, ``negs[1]`` short, the rest long_others."""
    if isinstance(parsed, SeedTriplet):
        others = parsed.others
        return TripletRecord(parsed.image, parsed.pos, parsed.hard, others[0] if others else None,
                             others[1:], index)
    return TripletRecord(parsed.image, parsed.positive, parsed.negative, index=index)


def parse_record(raw, index: int, problems: list[RecordProblem]) -> TripletRecord | None:
    """One raw dict (either format) → TripletRecord, or None with its problem appended."""
    try:
        return to_record(parse_triplet(raw), index)
    except FieldError as err:
        problems.append(RecordProblem(index, err.field, err.message))
        return None


def validate_records(source: str | os.PathLike[str] | TripletSource | list[dict],
                     image_root: str | os.PathLike[str]) -> tuple[list[TripletRecord], ValidationReport]:
    """Parse and check every record under the rules of :mod:`common.formats` (fields, one seed record
    per image, no duplicate), then that its image file lies inside the root and exists.

    Returns the good records and the report of the bad ones (image files are checked for existence
    here; an unreadable image found during training is skipped and counted, never fatal).
    """
    name, raw_records = read_raw_records(source)
    report = ValidationReport(name, len(raw_records))
    parsed = []
    for index, raw in enumerate(raw_records):
        try:
            parsed.append((index, parse_triplet(raw)))
        except FieldError as err:
            report.problems.append(RecordProblem(index, err.field, err.message))
    kept, duplicates = check_triplets(parsed)
    report.problems.extend(RecordProblem(index, err.field, err.message) for index, err in duplicates)
    good: list[TripletRecord] = []
    for index, record in kept:
        try:
            path = resolve_inside(image_root, record.image)
        except PathOutsideRootError as err:
            report.problems.append(RecordProblem(index, "image", str(err)))
            continue
        if not path.is_file():
            report.problems.append(RecordProblem(index, "image", f"image file not found: {path}"))
            continue
        good.append(to_record(record, index))
    report.problems.sort(key=lambda problem: problem.index)
    return good, report


def load_records(source: str | os.PathLike[str] | TripletSource | list[dict], image_root: str | os.PathLike[str],
                 on_invalid: str = "error") -> list[TripletRecord]:
    """Validated records. ``on_invalid="error"`` raises :class:`DataValidationError` listing every bad
    record; ``"skip"`` logs the report and keeps the good ones."""
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    records, report = validate_records(source, image_root)
    if not report.ok:
        if on_invalid == "error":
            raise DataValidationError(report)
        logger.warning("skipping bad records:\n%s", report)
    if not records:
        raise ValueError(f"{report.source}: no usable triplet records")
    return records
