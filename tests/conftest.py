"""Shared fixtures: the tiny offline scorer, the real UC Merced data (skipped when absent)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from project_paths import ROOT, UCM_DIR

# The tiny backbone is built once per machine and reused by every test run.
os.environ.setdefault("REMOTE_SCORER_CACHE", str(ROOT / ".cache" / "remote_scorer"))
# No test may reach for the hub: fail fast instead of waiting for network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def conn(tmp_path):
    """A fresh curation store."""
    from curation.store import open_store

    connection = open_store(tmp_path / "store.db")
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def ucm_dir() -> Path:
    """../shared/data/ucm: 600 real UC Merced images with triplets and UCM-Captions."""
    if not (UCM_DIR / "triplets_train.json").is_file():
        pytest.skip(f"real UC Merced data not found at {UCM_DIR} (it lives in the shared folder beside the repo)")
    return UCM_DIR


@pytest.fixture(scope="session")
def ucm_triplets(ucm_dir: Path) -> list[dict]:
    return json.loads((ucm_dir / "triplets_train.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_checkpoint_session(tmp_path_factory) -> Path:
    """An untrained scorer checkpoint on the tiny backbone, written by ``python -m scorer.write_tiny_checkpoint``."""
    from scorer.write_tiny_checkpoint import main as write_tiny

    out = tmp_path_factory.mktemp("tiny") / "checkpoint"
    write_tiny([str(out)])
    return out


@pytest.fixture
def tiny_checkpoint(tiny_checkpoint_session: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint, so a test may overwrite or train it."""
    copy = tmp_path / "tiny_checkpoint"
    shutil.copytree(tiny_checkpoint_session, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_scorer(tiny_checkpoint_session: Path):
    """A loaded (read-only) Scorer on the tiny checkpoint."""
    from scorer import Scorer

    return Scorer.from_checkpoint(tiny_checkpoint_session, device="cpu", batch_size=8)

