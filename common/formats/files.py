"""Reading the container of each format: a JSON array, JSON Lines, or a CSV table.

Row numbers are 1-based: records of a JSON array, lines of a JSON Lines or CSV file (a CSV row's
number is the line it ends on; the header is line 1). A file-level failure is a one-line
:class:`~common.formats.rules.FormatError`; in JSON Lines each line is its own document, so a line
that does not parse is returned as that line's error and the other lines still count.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from common.formats.rules import FormatError, load_json, parse_json, read_text


def json_array(path: str | Path, what: str) -> list[tuple[int, object]]:
    """(record number, record) of a file that must be a JSON array of ``what`` records."""
    data = load_json(path)
    if not isinstance(data, list):
        hint = " (this is a Karpathy caption file: import it as karpathy or ucm)" if (
            isinstance(data, dict) and "images" in data) else ""
        raise FormatError(path, None, None, f"a {what} file is a JSON array, got a {type(data).__name__}{hint}")
    return list(enumerate(data, 1))


def json_lines(path: str | Path) -> list[tuple[int, object]]:
    """(line number, parsed object or its :class:`FormatError`) for each non-blank line."""
    out: list[tuple[int, object]] = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((number, parse_json(line, path, line_offset=number - 1)))
        except FormatError as error:
            out.append((number, error))
    return out


def csv_rows(path: str | Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header holding at least the ``required`` columns."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise FormatError(path, 1, 1, f"CSV header lacks column(s) {', '.join(sorted(missing))}")
        return [(reader.line_num, {k: v for k, v in row.items() if k is not None}) for row in reader]
    except csv.Error as error:
        raise FormatError(path, reader.line_num, None, f"not valid CSV ({error})") from None
