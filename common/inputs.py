"""Checks of one record of a scoring job's input (``inference_script.py``, ``scorer.corpus``), torch-free.

Every error names the item as the caller describes it in ``where`` (file, record index, caption number),
so a bad record among a million is found by its message alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.paths import PathOutsideRootError, resolve_inside


class InputRecordError(ValueError):
    """A bad input record, named by file, record index and field."""


def text_field(record: dict, field: str, where: str) -> str:
    """``record[field]`` if it is a non-empty string, else :class:`InputRecordError`."""
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InputRecordError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    return value


def existing_image(path: str, root: str | os.PathLike[str] | None, where: str) -> str:
    """The image file ``path`` names (inside ``root`` when one is given), which must exist."""
    try:
        resolved = resolve_inside(root, path) if root else Path(path)
    except PathOutsideRootError as err:
        raise InputRecordError(f"{where}: {err}") from None
    if not resolved.is_file():
        raise InputRecordError(f"{where}: image file not found: {resolved}")
    return str(resolved)


def record_image(record: dict, field: str, root: str | os.PathLike[str] | None, where: str) -> str:
    """The existing image file named by ``record[field]``."""
    return existing_image(text_field(record, field, where), root, where)
