"""The file formats of docs/formats.md: typed records and one set of validation rules.

Plain Python (no torch, no SQLite): the trainer's loaders (``trainer/records.py``) and the
curation store's importers and exporters read and write through this package.
"""

from common.formats.files import csv_rows, json_array, json_lines
from common.formats.records import (
    Candidate,
    KarpathyImage,
    ReadmeTriplet,
    SeedTriplet,
    check_triplets,
    parse_candidate,
    parse_karpathy_image,
    parse_readme,
    parse_seed,
    parse_triplet,
)
from common.formats.rules import (
    MAX_CAPTION_CHARS,
    FieldError,
    FormatError,
    caption,
    caption_problem,
    image_path,
    load_json,
    optional_label,
    parse_json,
    read_text,
)

__all__ = [
    "MAX_CAPTION_CHARS",
    "Candidate",
    "FieldError",
    "FormatError",
    "KarpathyImage",
    "ReadmeTriplet",
    "SeedTriplet",
    "caption",
    "caption_problem",
    "check_triplets",
    "csv_rows",
    "image_path",
    "json_array",
    "json_lines",
    "load_json",
    "optional_label",
    "parse_candidate",
    "parse_json",
    "parse_karpathy_image",
    "parse_readme",
    "parse_seed",
    "parse_triplet",
    "read_text",
]
