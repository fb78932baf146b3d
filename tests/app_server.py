"""The app served for API and browser tests (a helper module, not a test)."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_app(data_dir: Path, image_root: Path, checkpoint: Path, **config):
    """The app on a free 127.0.0.1 port with a fresh store holding the demo set: yields (url, services)."""
    import app
    from loop import AppConfig, Services

    services = Services(AppConfig(data_dir=data_dir, image_root=image_root, checkpoint=checkpoint,
                                  max_pixels=64 * 64, **config))
    app.import_demo_if_empty(services)
    port = free_port()
    demo = app.launch(services, port=port, block=False, quiet=True)  # also starts scoring the queue
    try:
        yield f"http://127.0.0.1:{port}/", services
    finally:
        services.close()
        demo.close()
