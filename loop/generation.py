"""Caption generation with the active model: batch jobs in a thread, and single actions on the open image.

* :class:`GenerationJobs` writes n candidate captions per image with :class:`LocalQwenGenerator` into a
  JSON Lines file (``docs/formats.md``) under ``data_dir/generated`` and imports it with the store's
  ``jsonl`` importer, then asks the queue scorer to score the new captions.
* :func:`add_generated_captions` writes n captions of one image into the store;
  :func:`add_hard_negatives` adds hard negatives of one caption (:func:`generate_hard_negatives`: 2–3
  details changed, validated; the rule editor fills in) as new candidates whose source names the edit kind.

Every use of the model's weights goes through :meth:`Services.using_model` (generation switches the
adapters off and the tokenizer to left padding while it runs), one chunk at a time.
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
from typing import TYPE_CHECKING

from common.paths import PathOutsideRootError
from curation.importers import ImportOptions, import_file
from curation.store import add_caption, get_image
from curation.views import ImageFilter, image_captions, list_images
from scorer.generation import (
    LANGUAGES,
    STYLES,
    GenerationSettings,
    LocalQwenGenerator,
    generate_hard_negatives,
)
from scorer.generation.cli import candidate_lines, caption_source, model_label, negative_source
from scorer.images import ImageLoadError

if TYPE_CHECKING:
    from loop.services import Services

log = logging.getLogger(__name__)

SCOPES = ("unlabelled", "all")


def generator_for(services: Services, max_new_tokens: int, batch_size: int = 4) -> LocalQwenGenerator:
    """A generator on the active scorer's backbone (no second model in memory); use it under ``using_model``."""
    scorer = services.loaded_scorer()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return LocalQwenGenerator(scorer.model, scorer.processor, settings,
                              model_name=model_label(services.backbone_name()))


# -- one image, one caption --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddedCaptions:
    """Captions an action added to an image: their ids in the store (new ones only) and their sources."""

    image_id: int
    caption_ids: list[int]
    sources: list[str]


def add_generated_captions(services: Services, image_id: int, n: int) -> AddedCaptions:
    """Write ``n`` candidate captions of image ``image_id`` with the active backbone into the store."""
    if n < 1:
        raise ValueError(f"number of captions to generate must be at least 1, got {n}")
    path = services.image_path(get_image(services.conn(), image_id).path)
    with services.using_model():
        generator = generator_for(services, services.config.max_new_tokens, batch_size=1)
        texts = generator.generate_captions([str(path)], n)[0]
    source = caption_source(generator)  # the generator returns cleaned, non-empty, distinct captions
    ids = sorted({add_caption(services.conn(), image_id, text, source, author=generator.name) for text in texts})
    return AddedCaptions(image_id, ids, [source])


def add_hard_negatives(services: Services, image_id: int, caption_id: int, n: int,
                       use_model: bool = True) -> AddedCaptions:
    """Add ``n`` hard negatives of caption ``caption_id`` of image ``image_id`` as new candidate captions.

    With ``use_model`` the active backbone proposes edits first (each validated); the rule editor fills the
    rest. Each negative's source names its edit kinds (``hard-negative:count+colour``); its author the
    method (``rule`` or ``llm:<generator>``). Fewer than ``n`` come only from a caption with few details.
    """
    if n < 1:
        raise ValueError(f"number of hard negatives must be at least 1, got {n}")
    captions = {row.id: row for row in image_captions(services.conn(), image_id)}
    if caption_id not in captions:
        raise ValueError(f"image {image_id} has no caption {caption_id}")
    source_text = captions[caption_id].text
    if use_model:
        with services.using_model():
            generator = generator_for(services, services.config.max_new_tokens, batch_size=1)
            negatives = generate_hard_negatives(source_text, n, generator=generator, seed=caption_id)
    else:
        negatives = generate_hard_negatives(source_text, n, seed=caption_id)
    ids, sources = [], []
    for negative in negatives:
        ids.append(add_caption(services.conn(), image_id, negative.text, negative_source(negative),
                               author=negative.method))
        sources.append(negative_source(negative))
    return AddedCaptions(image_id, ids, sorted(set(sources)))


# -- batch jobs ------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class GenerationSnapshot:
    """A generation job as the UI shows it."""

    job_id: int
    status: str
    done: int
    total: int
    summary: str  # the import's summary, once imported
    error: str
    output: str  # the JSON Lines file
    skipped: dict[str, str]  # image path → why no caption was generated for it
    elapsed: float  # seconds since the job started


class GenerationJobs:
    """Batch generation in a thread; one job at a time; :meth:`snapshot` for the UI."""

    def __init__(self, services: Services):
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

    def snapshot(self) -> GenerationSnapshot | None:
        """A copy of the latest job's state for the UI (None before the first job)."""
        with self._lock:
            if not self.jobs:
                return None
            job = self.jobs[max(self.jobs)]
            return GenerationSnapshot(job.job_id, job.status, job.done, job.total, job.summary, job.error,
                                      job.output, dict(job.skipped), time.time() - job.started)

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
        processor = self.services.loaded_scorer().processor
        loaded = []
        for rel in paths:
            try:
                loaded.append((rel, processor.load_images([self.services.image_path(rel)])[0]))
            except (ImageLoadError, PathOutsideRootError) as error:
                log.warning("generation job %d: no captions for %s: %s", job.job_id, rel, error)
                job.skipped[rel] = str(error)
        return loaded
