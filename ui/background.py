"""Work the app does in threads of its own process, beside the requests: scoring the queue, generating captions.

Both use the active scorer's model, in chunks, each chunk under :meth:`Services.using_model` so that an
annotator's request waits for one chunk at most and never sees the model half switched to generation
(adapters off, left padding).

* :class:`QueueScorer` scores every caption of the unlabelled images under the active model and stores the
  scores (``curation.record_scores``), so the queue orders them by margin (uncertain first) and an image's
  first view needs no model call. It starts at launch and again after a promotion, an import or a
  generation.
* :class:`GenerationJobs` writes n candidate captions per image with :class:`LocalQwenGenerator` into a
  JSON Lines file (``docs/formats.md``) under ``data_dir/generated`` and imports it with the store's
  ``jsonl`` importer.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

from common.paths import PathOutsideRootError
from curation.importers import ImportOptions, import_file
from curation.queue import record_scores
from curation.store import get_image
from curation.views import ImageFilter, image_captions, list_images
from scorer.generation import LANGUAGES, STYLES, GenerationSettings, LocalQwenGenerator
from scorer.generation.cli import candidate_lines
from scorer.images import ImageLoadError

log = logging.getLogger(__name__)

SCORE_CHUNK = 8  # images per model call of the queue scorer
LOW_PRIORITY = 10  # nice value of the queue scorer's thread (Linux applies it per thread)
SCOPES = ("unlabelled", "all")


def generator_for(services, max_new_tokens: int, batch_size: int = 4) -> LocalQwenGenerator:
    """A generator on the active scorer's backbone (no second model in memory); use it under ``using_model``."""
    from scorer.generation.cli import model_label

    scorer, _ = services.scorer()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return LocalQwenGenerator(scorer.model, scorer.processor, settings,
                              model_name=model_label(services.backbone_name()))


# -- scoring the queue ------------------------------------------------------------------------------------
class QueueScorer:
    """One low-priority thread that scores what the queue needs; :meth:`start` again to rescan."""

    def __init__(self, services, chunk: int = SCORE_CHUNK):
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
        _, model_id = self.services.scorer()
        todo = self.pending(model_id)
        done = 0
        for start in range(0, len(todo), self.chunk):
            if self._stopped.is_set():
                break
            if self.services.scorer()[1] != model_id:
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
        with self.services.using_model() as (scorer, current):
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


# -- generating candidates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerateForm:
    """What the Data tab asks for: n captions for every image of ``scope``."""

    n: int = 3
    scope: str = "unlabelled"
    style: str = "detailed"
    language: str = "en"
    max_new_tokens: int = GenerationSettings.max_new_tokens
    chunk: int = 4  # images per generate call (and per hold of the model)

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.chunk < 1:
            raise ValueError(f"n, max new tokens and chunk must be at least 1 (got {self.n}, "
                             f"{self.max_new_tokens}, {self.chunk})")
        for name, value, allowed in (("scope", self.scope, SCOPES), ("style", self.style, STYLES),
                                     ("language", self.language, LANGUAGES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


@dataclass
class GenerationJob:
    job_id: int
    form: GenerateForm
    output: str
    total: int = 0
    done: int = 0
    status: str = "running"  # running | importing | done | failed | cancelled
    summary: str = ""
    error: str = ""
    skipped: dict[str, str] = field(default_factory=dict)  # image path → why no caption was generated for it
    started: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)


class GenerationJobs:
    """Batch generation in a thread; one job at a time; :meth:`snapshot` for the UI."""

    def __init__(self, services):
        self.services = services
        self._lock = threading.Lock()
        self.jobs: dict[int, GenerationJob] = {}

    def start(self, form: GenerateForm) -> int:
        with self._lock:
            running = [j for j in self.jobs.values() if j.status in ("running", "importing")]
            if running:
                raise ValueError(f"generation job {running[0].job_id} is still running; cancel it or wait")
            job_id = max(self.jobs, default=0) + 1
            out_dir = self.services.config.data_dir / "generated"
            out_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            job = GenerationJob(job_id, form, str(out_dir / f"gen-{job_id:03d}-{stamp}.jsonl"))
            self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job,), name=f"generate-{job_id}", daemon=True).start()
        return job_id

    def cancel(self) -> bool:
        with self._lock:
            running = [j for j in self.jobs.values() if j.status == "running"]
        for job in running:
            job.cancel.set()
        return bool(running)

    def snapshot(self) -> dict | None:
        with self._lock:
            if not self.jobs:
                return None
            job = self.jobs[max(self.jobs)]
            return {"job_id": job.job_id, "status": job.status, "done": job.done, "total": job.total,
                    "summary": job.summary, "error": job.error, "output": job.output,
                    "skipped": dict(job.skipped), "elapsed": time.time() - job.started}

    def _run(self, job: GenerationJob) -> None:
        """Generate, then import whatever was written (also after a failure or a cancel)."""
        errors = []
        try:
            self._generate(job)
        except Exception:  # noqa: BLE001 - the UI shows the failure; nothing else would see it
            errors.append(traceback.format_exc())
            log.exception("generation job %d failed; importing what it wrote", job.job_id)
        finally:
            try:
                self._import(job)
            except Exception:  # noqa: BLE001 - as above
                errors.append(traceback.format_exc())
                log.exception("generation job %d: importing %s failed", job.job_id, job.output)
            if errors:
                job.error, job.status = "\n".join(errors), "failed"
            else:
                job.status = "cancelled" if job.cancel.is_set() else "done"
            self.services.close_conn()  # this thread's connection to the store

    def _import(self, job: GenerationJob) -> None:
        if not os.path.exists(job.output):
            return
        job.status = "importing"
        report = import_file(self.services.conn(), "jsonl", job.output,
                             ImportOptions(image_root=self.services.image_root))
        job.summary = report.summary()
        self.services.queue_scorer.start()  # before "done": whoever waits for both sees the scan pending

    def _generate(self, job: GenerationJob) -> None:
        conn = self.services.conn()
        flt = ImageFilter(status="unlabelled") if job.form.scope == "unlabelled" else ImageFilter()
        images = [row.path for row in list_images(conn, flt)]
        job.total = len(images)
        size = job.form.chunk
        with open(job.output, "w", encoding="utf-8") as out:
            for start in range(0, len(images), size):
                if job.cancel.is_set():
                    return
                chunk = self._readable(job, images[start:start + size])
                if chunk:
                    with self.services.using_model():
                        generator = generator_for(self.services, job.form.max_new_tokens, size)
                        captions = generator.generate_captions([picture for _, picture in chunk], job.form.n,
                                                               job.form.style, job.form.language)
                    # the generator returns cleaned, non-empty, distinct captions
                    out.writelines(json.dumps(line, ensure_ascii=False) + "\n"
                                   for line in candidate_lines(generator, [rel for rel, _ in chunk], captions))
                    out.flush()
                job.done = min(start + size, len(images))

    def _readable(self, job: GenerationJob, paths: list[str]) -> list[tuple[str, object]]:
        """(path, picture) of the images that load; the others are recorded in ``job.skipped``."""
        processor = self.services.scorer()[0].processor
        loaded = []
        for rel in paths:
            try:
                loaded.append((rel, processor.load_images([self.services.image_path(rel)])[0]))
            except (ImageLoadError, PathOutsideRootError) as error:
                log.warning("generation job %d: no captions for %s: %s", job.job_id, rel, error)
                job.skipped[rel] = str(error)
        return loaded
