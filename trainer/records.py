"""Triplet records from the three sources, and the validation report made before any training.

Sources (docs/formats.md):

* ``seed-triplets`` — the original project's ``{"image", "pos", "negs": [hard, short, other...]}``;
* ``triplets`` — the README format ``{"image_name", "positive", "negative"}`` (JSON array or ``.jsonl``);
* the curation store, through any object with ``triplet_records() -> list[dict]`` (README format),
  or a plain list of such dicts — the trainer never imports SQLite code.

Everything becomes :class:`TripletRecord`; :func:`validate_records` lists every offending record by
index (missing image file, empty text, duplicate) in one :class:`ValidationReport`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

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
    original caption (seed ``negs[1]``); ``others``: other, worse captions of the same image
    (seed ``negs[2:]``). ``index`` is the record's position in its source, for error messages.
    """

    image: str
    positive: str
    hard: str | None = None
    short: str | None = None
    others: tuple[str, ...] = ()
    index: int = 0

    @property
    def other_negatives(self) -> tuple[str, ...]:
        """The original project's "other negatives": ``negs[1:]``."""
        return ((self.short,) if self.short else ()) + self.others

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
    """→ (a name for messages, the raw records). Files: JSON array, or JSON Lines for ``.jsonl``."""
    if isinstance(source, TripletSource):
        return type(source).__name__, list(source.triplet_records())
    if isinstance(source, list):
        return "records", source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"triplet file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON: {err}") from err
        return str(path), rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if isinstance(data, dict) and "images" in data:
        raise ValueError(f"{path} is a Karpathy caption file; it has no negatives to train on. "
                         f"Evaluate on it with python -m trainer.evaluate")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of triplet records, got {type(data).__name__}")
    return str(path), data


def _text(raw: dict, key: str, index: int, problems: list[RecordProblem]) -> str | None:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(RecordProblem(index, key, f"empty or not a string: {value!r}"))
        return None
    return value


def parse_record(raw, index: int, problems: list[RecordProblem]) -> TripletRecord | None:
    """One raw dict (either format) → TripletRecord, or None with its problems appended."""
    if not isinstance(raw, dict):
        problems.append(RecordProblem(index, "record", f"not a JSON object: {type(raw).__name__}"))
        return None
    before = len(problems)
    if "pos" in raw or "negs" in raw:  # seed format
        image, positive = _text(raw, "image", index, problems), _text(raw, "pos", index, problems)
        negs = raw.get("negs")
        if not isinstance(negs, list) or not negs:
            problems.append(RecordProblem(index, "negs", f"needs a non-empty list, got {negs!r}"))
            negs = []
        for n, neg in enumerate(negs):
            if not isinstance(neg, str) or not neg.strip():
                problems.append(RecordProblem(index, f"negs[{n}]", f"empty or not a string: {neg!r}"))
        if len(problems) > before:
            return None
        return TripletRecord(image, positive, negs[0], negs[1] if len(negs) > 1 else None, tuple(negs[2:]), index)
    if "image_name" in raw or "positive" in raw:  # README format
        image = _text(raw, "image_name", index, problems)
        positive, negative = _text(raw, "positive", index, problems), _text(raw, "negative", index, problems)
        return None if len(problems) > before else TripletRecord(image, positive, negative, index=index)
    problems.append(RecordProblem(index, "record", "neither seed ('image', 'pos', 'negs') nor README "
                                  f"('image_name', 'positive', 'negative') format: keys {sorted(raw)}"))
    return None


def validate_records(source: str | os.PathLike[str] | TripletSource | list[dict],
                     image_root: str | os.PathLike[str]) -> tuple[list[TripletRecord], ValidationReport]:
    """Parse and check every record: fields, image file inside the root and present, duplicates.

    Returns the good records and the report of the bad ones (image files are checked for existence
    here; an unreadable image found during training is skipped and counted, never fatal).
    """
    name, raw_records = read_raw_records(source)
    report = ValidationReport(name, len(raw_records))
    good: list[TripletRecord] = []
    seen: dict[tuple, int] = {}
    for index, raw in enumerate(raw_records):
        record = parse_record(raw, index, report.problems)
        if record is None:
            continue
        try:
            path = resolve_inside(image_root, record.image)
        except PathOutsideRootError as err:
            report.problems.append(RecordProblem(index, "image", str(err)))
            continue
        if not path.is_file():
            report.problems.append(RecordProblem(index, "image", f"image file not found: {path}"))
            continue
        if record.positive in record.negatives:
            report.problems.append(RecordProblem(index, "negatives", "a negative equals the positive caption"))
            continue
        key = (record.image, record.positive, record.negatives)
        if key in seen:
            report.problems.append(RecordProblem(index, "record", f"duplicate of record {seen[key]}"))
            continue
        seen[key] = index
        good.append(record)
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
