"""What the app shares between requests: the store's location, the active scorer, the background work.

The UI's handlers get a :class:`Services` and keep nothing else: one SQLite connection per thread (the store
wants that), the scorer behind a lock so that promoting a model swaps it atomically for every user.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common.paths import resolve_inside
from curation.models import active_model, get_model_version, set_active_model
from curation.queue import QueueOptions
from curation.store import open_store
from loop.access import Access
from loop.generation import GenerationJobs
from loop.memory_plan import Plan, available_bytes, gib, plan_swap
from loop.queue_scorer import QueueScorer
from loop.registry import initial_model
from loop.training import TrainingJobs
from scorer import Scorer
from scorer.checkpoint import BACKBONE_DIR
from scorer.generation import GenerationSettings
from scorer.ranking import EmbeddingCache, checkpoint_version

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = "200mb"


@dataclass(frozen=True)
class AppConfig:
    """Where the app keeps its data and which model it starts with.

    ``model`` is ``tiny``, a hub id or a backbone path (an untrained scorer is built on it once);
    ``checkpoint`` a scorer checkpoint directory that becomes the active model. Without either,
    the store's active model (e.g. one promoted earlier) is used.
    """

    data_dir: Path
    image_root: Path
    model: str = "tiny"
    checkpoint: Path | None = None
    device: str | None = None  # None: cuda when available, else cpu
    max_file_size: str = DEFAULT_MAX_UPLOAD
    max_pixels: int | None = None  # training images are shrunk to this many pixels (None: model default)
    max_new_tokens: int = GenerationSettings.max_new_tokens  # length limit of a generated candidate caption
    dtype: str = "auto"  # precision of the scorer and of a run's frozen base: auto | bf16 | fp16 | fp32
    train_threads: int | None = None  # torch threads of a training process (None: every core but one)
    # class-balanced uncertainty: the best strategy bench/loop_simulation.py measured (docs/loop_simulation.md)
    queue: QueueOptions = field(default_factory=lambda: QueueOptions(class_balance=True))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "store.sqlite"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache" / "embeddings"


STORAGE_ERRORS = (sqlite3.OperationalError, OSError)  # the store or a file could not be written


def storage_problem(error: BaseException) -> str | None:
    """``disk_full`` or ``read_only`` when ``error`` says so (SQLite's message or the OS error number)."""
    text = str(error).lower()
    if getattr(error, "errno", None) == errno.ENOSPC or "disk is full" in text or "no space" in text:
        return "disk_full"
    if getattr(error, "errno", None) in (errno.EROFS, errno.EACCES) or "readonly" in text or "read-only" in text:
        return "read_only"
    return None


def data_dir_read_only(config: AppConfig) -> bool:
    """Whether the app must run read-only: its data folder (or the store in it) exists but cannot be written.

    A read-only folder without a store cannot be served: ``FileNotFoundError`` names it."""
    folder, db = config.data_dir, config.db_path
    if not folder.exists():
        return False  # created on start (an unwritable parent fails there, naming it)
    if os.access(folder, os.W_OK) and (not db.exists() or os.access(db, os.W_OK)):
        return False
    if not db.is_file():
        raise FileNotFoundError(f"data folder {folder} is read-only and holds no store {db.name}")
    log.warning("data folder %s is read-only: the app starts in read-only mode", folder)
    return True


class Services:
    """Shared, read-mostly state of the running app (never put in ``gr.State``)."""

    def __init__(self, config: AppConfig, access: Access | None = None):
        self.config = config
        self.access = access or Access()  # no accounts: one local user who may do everything
        if not config.image_root.is_dir():
            raise FileNotFoundError(f"image root {config.image_root} is not a folder")
        self.read_only = data_dir_read_only(config)
        if not self.read_only:
            for folder in (config.data_dir, config.exports_dir, config.runs_dir, config.models_dir,
                           config.cache_dir):
                folder.mkdir(parents=True, exist_ok=True)
        self.image_root = config.image_root.resolve()
        self._local = threading.local()
        self._scorer_lock = threading.RLock()
        self._model_lock = threading.RLock()  # one user of the model's weights and tokenizer at a time
        self._priority = threading.Condition()  # counts requests waiting for the model (_waiting)
        self._waiting = 0
        self._built: dict = {}  # an untrained scorer built at start-up, used as is (one backbone load)
        model_id = self._initial_model()
        self._scorer: Scorer | None = self._load_scorer(model_id)
        self._model_id = model_id
        self._backbone = str(self._scorer.model.config.backbone)
        self.released_for: str | None = None  # why the scorer is released (a run trains), None while loaded
        self.training = TrainingJobs(self)
        if not self.read_only:
            self.training.recover_interrupted()
        self.queue_scorer = QueueScorer(self)
        self.generation = GenerationJobs(self)

    def _initial_model(self) -> int:
        config = self.config
        if not self.read_only:
            return initial_model(self.conn(), config.model, config.checkpoint, config.models_dir, config.device,
                                 config.dtype, self._built)
        current = active_model(self.conn())  # read-only: nothing is registered or written
        if current is None:
            raise FileNotFoundError(f"read-only store {config.db_path} has no active model")
        return current.id

    def start_background(self) -> None:
        """Start scoring the queue (at launch; it runs again after promotions, imports and generation, and every
        ``queue_scorer.POLL_SECONDS`` for images a CLI import added). A read-only app scores nothing in the
        background (it could not store the scores)."""
        if not self.read_only:
            self.queue_scorer.start()
            self.queue_scorer.poll()

    # -- store -------------------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection to the store (opened on first use; reopened after a failed write:
        a read-only folder or a full disk can leave SQLite's handle failing after the cause is gone)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(conn, "failed_write", False):
            log.warning("reopening the store connection of %s after a failed write",
                        threading.current_thread().name)
            self.close_conn()
            conn = None
        if conn is None:
            conn = open_store(self.config.db_path, read_only=self.read_only)
            self._local.conn = conn
        return conn

    def close_conn(self) -> None:
        """Close this thread's connection to the store (a thread that ends calls it); :meth:`conn` reopens."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            try:
                conn.close()
            except sqlite3.Error as error:  # a broken handle: it is dropped all the same
                log.warning("closing a store connection failed: %s", error)

    # -- the active model ----------------------------------------------------------------------------
    def scorer(self) -> tuple[Scorer | None, int]:
        """The active scorer (None while released for a training run) and its model version id, read together."""
        with self._scorer_lock:
            return self._scorer, self._model_id

    def model_loaded(self) -> bool:
        return self.scorer()[0] is not None

    def loaded_scorer(self) -> Scorer:
        """The active scorer, or a ``ValueError`` saying why it is released (a training run has the memory)."""
        scorer, _ = self.scorer()
        if scorer is None:
            raise ValueError(f"the model is released while {self.released_for}; stored scores still show, "
                             "new scores come when it is loaded again")
        return scorer

    @contextmanager
    def using_model(self, background: bool = False) -> Iterator[tuple[Scorer, int]]:
        """Hold the active model for one piece of work (scoring or generating): (scorer, model version id).

        Generation switches the model's adapters off and its tokenizer to left padding while it runs, so
        every use of the weights goes through this lock; keep each hold short (one chunk). A ``background`` user
        waits while any other request waits (annotators first). While the scorer
        is released for a training run, a ``ValueError`` says so (stored scores stay readable).
        """
        self._acquire_model(background)
        try:
            model_id = self.scorer()[1]
            yield self.loaded_scorer(), model_id
        finally:
            self._model_lock.release()

    def _acquire_model(self, background: bool) -> None:
        """The model lock; a ``background`` caller (the queue scorer) lets every waiting request go first."""
        if background:
            while True:
                with self._priority:
                    self._priority.wait_for(lambda: self._waiting == 0)
                self._model_lock.acquire()
                with self._priority:
                    if self._waiting == 0:
                        return
                self._model_lock.release()
        with self._priority:
            self._waiting += 1
        try:
            self._model_lock.acquire()
        finally:
            with self._priority:
                self._waiting -= 1
                self._priority.notify_all()

    def scorer_bytes(self) -> int:
        """Bytes the loaded scorer's weights hold (0 while released)."""
        scorer, _ = self.scorer()
        if scorer is None:
            return 0
        return sum(p.numel() * p.element_size() for p in scorer.model.parameters())

    def backbone_name(self) -> str:
        """The active backbone as caption sources name it: a hub id as is, a local folder by its name
        (by the checkpoint's name when the backbone was saved inside the checkpoint)."""
        path = Path(self._backbone)
        if not path.exists():
            return self._backbone
        return path.parent.name if path.name == BACKBONE_DIR else path.name

    def release_scorer(self, why: str) -> None:
        """Drop the scorer's weights (e.g. while a run trains on the same device); :meth:`reload_scorer` after."""
        with self._model_lock, self._scorer_lock:
            if self._scorer is None:
                return
            freed = self.scorer_bytes()
            self._scorer, self.released_for = None, why
        _free_memory()
        log.info("scorer released (%s of weights) while %s", gib(freed), why)

    def reload_scorer(self) -> None:
        """Load the active model again after :meth:`release_scorer` (nothing when it is loaded)."""
        with self._model_lock:
            if self.scorer()[0] is not None:
                return
            loaded = self._load_scorer(self._model_id)
            with self._scorer_lock:
                self._scorer, self.released_for = loaded, None
        log.info("scorer v%d loaded again", self._model_id)
        self.queue_scorer.start()

    def plan_swap(self, model_id: int) -> Plan:
        """Whether ``model_id`` fits once the active scorer is released (its size from its checkpoint)."""
        from loop.memory_plan import checkpoint_bytes

        version = get_model_version(self.conn(), model_id)
        need = checkpoint_bytes(version.path, self.config.dtype, self.config.device)
        return plan_swap(need, self.scorer_bytes(), available_bytes(self.config.device))

    def activate(self, model_id: int) -> None:
        """Make ``model_id`` the active model: release the old scorer, load the new one, record it in the store.

        The memory plan is checked first (``ValueError`` with the numbers when the new model cannot fit);
        when loading the new one fails, the old one is loaded again and the error raised.
        """
        version = get_model_version(self.conn(), model_id)
        if version is None:
            raise ValueError(f"model version {model_id} does not exist")
        plan = self.plan_swap(model_id)
        if not plan.fits:
            raise ValueError(f"model version {model_id} cannot be loaded: {plan.describe()}")
        with self._model_lock:
            old_id = self._model_id
            with self._scorer_lock:
                self._scorer = None
            _free_memory()
            try:
                loaded = self._load_scorer(model_id)
            except Exception:
                log.exception("loading model version %d failed; version %d is loaded again", model_id, old_id)
                restored = self._load_scorer(old_id)
                with self._scorer_lock:
                    self._scorer, self.released_for = restored, None
                raise
            with self._scorer_lock:
                set_active_model(self.conn(), model_id)
                self._scorer, self._model_id, self.released_for = loaded, model_id, None
                self._backbone = str(loaded.model.config.backbone)
        log.info("active model is now version %d (%s)", model_id, version.path)
        self.queue_scorer.start()  # the queue's order follows the new model's margins

    def _load_scorer(self, model_id: int) -> Scorer:
        version = get_model_version(self.conn(), model_id)
        built = self._built.pop(version.path, None)
        if built is not None:
            return Scorer(*built, checkpoint_version(version.path), 16, EmbeddingCache(self.config.cache_dir))
        return Scorer.from_checkpoint(version.path, device=self.config.device, batch_size=16,
                                      cache_dir=None if self.read_only else self.config.cache_dir,
                                      dtype=self.config.dtype)

    def image_path(self, rel_path: str) -> Path:
        """An image of the store on disk (inside the image root, or ``PathOutsideRootError``)."""
        return resolve_inside(self.image_root, rel_path)

    def close(self) -> None:
        """Stop the background work: the queue scorer (for good), training runs, the generation job."""
        if not self.queue_scorer.stop():
            log.warning("the queue scorer did not stop within its timeout")
        self.training.cancel_all()
        self.generation.cancel()
        self.close_conn()


def _free_memory() -> None:
    """Give released weights back: Python's cycles, then the CUDA allocator's cache."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
