"""Shared by exporters: the report and the record writers (atomic, through common.files)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.files import atomic_output


@dataclass(frozen=True)
class ExportReport:
    kind: str
    file: str
    records: int


def write_json_records(path: Path, records: Iterable[dict]) -> int:
    """A JSON array with one record per line, or JSON Lines when ``path`` ends in ``.jsonl``."""
    lines = path.suffix == ".jsonl"
    count = 0
    with atomic_output(path) as handle:
        if not lines:
            handle.write("[")
        for record in records:
            text = json.dumps(record, ensure_ascii=False)
            if lines:
                handle.write(text + "\n")
            else:
                handle.write(("\n" if count == 0 else ",\n") + text)
            count += 1
        if not lines:
            handle.write("\n]\n")
    return count


def write_frame(frame: pd.DataFrame, path: Path, parquet: bool) -> None:
    """CSV or Parquet, atomically."""
    if parquet:
        with atomic_output(path, "wb") as handle:
            frame.to_parquet(handle, index=False)
    else:
        with atomic_output(path, "w") as handle:
            frame.to_csv(handle, index=False)
