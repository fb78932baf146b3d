"""Scoring the queue in a thread of the app's process, beside the requests.

:class:`QueueScorer` scores every caption of the unlabelled images under the active model and stores the
scores (``curation.record_scores``), so the queue orders them by margin (uncertain first) and an image's
first view needs no model call. It starts at launch and again after a promotion, an import or a
generation. It works in chunks, each under :meth:`Services.using_model`, so that an annotator's request
waits for one chunk at most.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from common.paths import PathOutsideRootError
from curation.queue import record_scores
from curation.store import get_image
from curation.views import ImageFilter, image_captions, list_images

if TYPE_CHECKING:
    from loop.services import Services

log = logging.getLogger(__name__)

SCORE_CHUNK = 2  # images per model call: an annotator waits for one such chunk at most (~5 s at 3B on 2 CPU cores)
POLL_SECONDS = 30.0  # how often the store is checked for images imported by another process (the CLI)
LOW_PRIORITY = 10  # nice value of the queue scorer's thread (Linux applies it per thread)


class QueueScorer:
    """One low-priority thread that scores what the queue needs; :meth:`start` again to rescan."""

    def __init__(self, services: Services, chunk: int = SCORE_CHUNK):
        self.services = services
        self.chunk = chunk
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # None once the thread has decided to end (under _lock)
        self.scored_images = 0
        self.failed: dict[int, str] = {}  # image id → why it could not be scored

    def start(self) -> None:
        """Scan for unscored captions (now, or right after the scan that is running); nothing after :meth:`stop`."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._wanted.set()
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="queue-scorer", daemon=True)
                self._thread.start()

    def poll(self, every: float = POLL_SECONDS) -> None:
        """Start a thread that rescans every ``every`` seconds (images a CLI import added), until :meth:`stop`."""
        def loop() -> None:
            while not self._stopped.wait(every):
                if not self.running():
                    self.start()

        threading.Thread(target=loop, name="queue-scorer-poll", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no scan is pending; return whether that happened within ``timeout``."""
        return self._idle.wait(timeout)

    def running(self) -> bool:
        """Whether the scorer's thread is at work (or about to start)."""
        with self._lock:
            return self._thread is not None

    def stop(self, timeout: float = 30.0) -> bool:
        """End the scans for good (at the chunk in progress); return whether the thread ended within ``timeout``."""
        with self._lock:
            self._stopped.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY)
        except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
            pass
        try:
            while True:
                with self._lock:
                    if not self._wanted.is_set() or self._stopped.is_set():
                        self._thread = None  # a start() from now on starts a new thread
                        self._idle.set()
                        return
                    self._wanted.clear()
                try:
                    self.scan()
                except Exception:  # noqa: BLE001 - a background thread has no caller; log and wait for the next start
                    log.exception("scoring the queue failed")
        finally:
            self.services.close_conn()  # this thread's connection to the store

    def pending(self, model_id: int) -> list[int]:
        """Unlabelled images with a caption that has no score under ``model_id``."""
        conn = self.services.conn()
        rows = list_images(conn, ImageFilter(status="unlabelled"))
        return [row.id for row in rows if row.id not in self.failed
                and any(c.score is None for c in image_captions(conn, row.id, model_id))]

    def scan(self) -> int:
        """Score every pending image in chunks; return how many were scored. Stops early when the model changes."""
        scorer, model_id = self.services.scorer()
        if scorer is None:  # released while a run trains; reloading it starts a scan
            return 0
        todo = self.pending(model_id)
        done = 0
        for start in range(0, len(todo), self.chunk):
            if self._stopped.is_set():
                break
            if self.services.scorer() != (scorer, model_id):
                self._wanted.set()  # the next scan uses the new model
                break
            done += self._score_chunk(todo[start:start + self.chunk], model_id)
        if todo:
            log.info("queue scorer: %d of %d images scored under model v%d", done, len(todo), model_id)
        return done

    def _score_chunk(self, image_ids: list[int], model_id: int) -> int:
        conn = self.services.conn()
        items, captions = [], []
        for image_id in image_ids:
            rows = image_captions(conn, image_id, model_id)
            if not rows:
                continue
            try:
                path = self.services.image_path(get_image(conn, image_id).path)
            except PathOutsideRootError as error:  # a bad stored path: record it, score the others
                log.warning("queue scorer: image %d not scored: %s", image_id, error)
                self.failed[image_id] = str(error)
                continue
            items.append((image_id, str(path), rows))
        if not items:
            return 0
        if not self.services.model_loaded():
            return 0
        with self.services.using_model(background=True) as (scorer, current):
            if current != model_id:
                return 0
            try:
                ranked = scorer.rank([(path, [r.text for r in rows]) for _, path, rows in items])
            except ValueError:  # one unreadable image: score the chunk one by one to find it
                ranked = [self._rank_one(scorer, image_id, path, rows) for image_id, path, rows in items]
        for (image_id, _, rows), result in zip(items, ranked):
            if result is None:
                continue
            by_text = {c.text: c.score for c in result.captions}
            captions += [(image_id, row.id, by_text[row.text]) for row in rows]
        record_scores(conn, model_id, captions)
        self.scored_images += sum(r is not None for r in ranked)
        return sum(r is not None for r in ranked)

    def _rank_one(self, scorer, image_id: int, path: str, rows):
        try:
            return scorer.rank([(path, [r.text for r in rows])])[0]
        except ValueError as error:
            log.warning("queue scorer: image %d not scored: %s", image_id, error)
            self.failed[image_id] = str(error)
            return None
