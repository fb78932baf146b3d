"""Where the project and the shared data live, and small file helpers, for tests (a plain module: never
import from conftest, pytest registers tests/conftest.py and tests/browser/conftest.py under the same name)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UCM_DIR = ROOT.parent / "shared" / "data" / "ucm"
REFERENCE_3B = ROOT.parent / "shared" / "reference" / "qwen2.5-vl-3b-instruct"


def write_pngs(root: Path, *names: str) -> None:
    """Small real images under ``root`` (folders made), so imports with the default file check find them."""
    from PIL import Image

    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), "green").save(root / name)
