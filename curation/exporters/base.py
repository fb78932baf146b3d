"""Shared by exporters: the report and atomic writing (a file appears whole or not at all)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd


@dataclass(frozen=True)
class ExportReport:
    kind: str
    file: str
    records: int


@contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and move it into place when the block succeeds."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the export file {path} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if "b" not in mode else None) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
