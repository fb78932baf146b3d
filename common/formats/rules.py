"""The validation rules every reader of a caption or triplet file applies, and safe file reading.

Field rules (a failing field raises :class:`FieldError`, which names the field):

* a caption is a ``str``, non-empty after stripping, at most :data:`MAX_CAPTION_CHARS` characters,
  without control characters other than tab, newline and carriage return (kept verbatim), and
  without lone UTF-16 surrogates;
* an optional label (``source``, ``generator``, ``provenance``, ``class``, ``split``) is absent,
  ``null`` or such a text (empty counts as absent);
* an image path is normalised by :func:`common.paths.normalize_relative`.

File rules (a failing file raises :class:`FormatError`, one line naming the file and the position):
UTF-8 text (a BOM is allowed); for JSON, parseable by :mod:`json`, nested at most as deep as the
parser allows, integers within Python's digit limit, no lone ``\\ud800``-style surrogate escapes.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path

from common.paths import PathOutsideRootError, normalize_relative

MAX_CAPTION_CHARS = 2000
ALLOWED_CONTROLS = frozenset("\t\n\r")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|-?\d+')
_ESCAPE = re.compile(r"(\\+)u([0-9a-fA-F]{4})")
MAX_JSON_DEPTH = 500  # reported as the limit when the parser runs out of stack (its own limit is ~1000)


class FieldError(ValueError):
    """One field of one record breaks a rule; ``field`` names it (``negs[2]``, ``sentences[0].raw``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.message = message


class FormatError(ValueError):
    """A file that cannot be read as its format. The message is one line: file, line, column, reason."""

    def __init__(self, path: str | Path, line: int | None, column: int | None, message: str):
        where = f"{path}: " + (f"line {line} " if line is not None else "")
        where += f"column {column}: " if column is not None else ("" if line is None else ": ")
        super().__init__(where.replace(" : ", ": ") + message)
        self.path, self.line, self.column, self.reason = str(path), line, column, message


def caption_problem(value: object, max_chars: int = MAX_CAPTION_CHARS) -> str | None:
    """Why ``value`` cannot be a caption, or ``None`` if it can."""
    if not isinstance(value, str):
        return f"caption is {type(value).__name__}, not text: {str(value)[:60]!r}"
    if not value.strip():
        return "caption is empty"
    if len(value) > max_chars:
        return f"caption has {len(value)} characters, more than the limit {max_chars}"
    return _bad_character(value)


def _bad_character(text: str) -> str | None:
    for position, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cs") and char not in ALLOWED_CONTROLS:
            return f"text contains the control character U+{ord(char):04X} at position {position}"
    return None


def caption(value: object, field: str) -> str:
    """``value`` if it is a valid caption, else :class:`FieldError` naming ``field``."""
    problem = caption_problem(value)
    if problem:
        raise FieldError(field, problem)
    return value  # type: ignore[return-value]


def optional_label(raw: dict, key: str) -> str | None:
    """``raw[key]`` as a label: ``None`` when absent, ``null`` or empty; else text without controls."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(key, f"expected text, got {type(value).__name__}: {str(value)[:60]!r}")
    if len(value) > MAX_CAPTION_CHARS:
        raise FieldError(key, f"has {len(value)} characters, more than the limit {MAX_CAPTION_CHARS}")
    problem = _bad_character(value)
    if problem:
        raise FieldError(key, problem)
    return value


def image_path(value: object, field: str) -> str:
    """The normalised relative image path in ``value``, else :class:`FieldError` naming ``field``."""
    try:
        return normalize_relative(value)  # type: ignore[arg-type]
    except PathOutsideRootError as error:
        raise FieldError(field, str(error)) from error


def text_list(value: object, field: str) -> list:
    if not isinstance(value, list):
        raise FieldError(field, f"expected a list, got {type(value).__name__}: {str(value)[:60]!r}")
    return value


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text (BOM dropped); :class:`FormatError` at the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise FormatError(path, line, column, f"not UTF-8 text (byte 0x{data[error.start]:02x})") from None


def parse_json(text: str, path: str | Path, line_offset: int = 0) -> object:
    """``json.loads`` whose every failure is a one-line :class:`FormatError` with the position."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError(path, error.lineno + line_offset, error.colno, f"not valid JSON ({error.msg})") from error
    except RecursionError:
        offset = _first_deeper_than(text, MAX_JSON_DEPTH)
        raise _at(text, path, offset, line_offset, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:  # Python's limit on digits in an integer
        limit = sys.get_int_max_str_digits()
        offset = next((m.start() for m in _TOKEN.finditer(text) if len(m.group().lstrip("-")) > limit), None)
        message = f"a number with more than {limit} digits" if offset is not None else str(error)
        raise _at(text, path, offset, line_offset, message) from None
    offset = _lone_surrogate(text) if "\\" in text else None
    if offset is not None:
        raise _at(text, path, offset, line_offset, f"lone UTF-16 surrogate escape {text[offset:offset + 6]} "
                  "(not Unicode text)")
    return value


def load_json(path: str | Path) -> object:
    """Read and parse a JSON file under the file rules above."""
    return parse_json(read_text(path), path)


def _at(text: str, path: str | Path, offset: int | None, line_offset: int, message: str) -> FormatError:
    if offset is None:
        return FormatError(path, None, None, message)
    line, column = position(text, offset)
    return FormatError(path, line + line_offset, column, message)


def _first_deeper_than(text: str, limit: int) -> int | None:
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None


def _lone_surrogate(text: str) -> int | None:
    """Offset of the first ``\\uD800``-``\\uDFFF`` escape not part of a high+low pair, or ``None``."""
    pending = None  # the high surrogate escape waiting for its low half
    for match in _ESCAPE.finditer(text):
        if len(match.group(1)) % 2 == 0:
            continue  # an escaped backslash followed by a plain "u"
        code = int(match.group(2), 16)
        start = match.end() - 6
        if 0xDC00 <= code <= 0xDFFF:
            if pending is None or pending[1] != start:
                return start
            pending = None
            continue
        if pending is not None:
            return pending[0]
        pending = (start, match.end()) if 0xD800 <= code <= 0xDBFF else None
    return pending[0] if pending is not None else None
