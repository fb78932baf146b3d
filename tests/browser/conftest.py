"""Headless Chromium (Debian's, via Playwright) against the app served on a free local port.

Chromium: ``apt-get install -y chromium`` (``.ci/run`` does it); tests skip with the reason when it is
absent. Screenshots go to ``test-output/browser/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_server import serve_app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
SCREENSHOTS = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint_session):
    """The app on the demo scenes with a fresh store: (url, services)."""
    with serve_app(tmp_path_factory.mktemp("browser-app"), DEMO, tiny_checkpoint_session) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
