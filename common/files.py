"""Writing files so that they appear whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and move it into place when the block succeeds."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the output file {path} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if "b" not in mode else None) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
