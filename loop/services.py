"""What the app shares between requests: the store's location, the active scorer, the background work.

The UI's handlers get a :class:`Services` and keep nothing else: one SQLite connection per thread (the store
wants that), the scorer behind a lock so that promoting a model swaps it atomically for every user.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.paths import resolve_inside
from curation.models import active_model, get_model_version, set_active_model
from curation.store import open_store
from loop.access import Access
from loop.generation import GenerationJobs
from loop.queue_scorer import QueueScorer
from loop.registry import initial_model
from loop.training import TrainingJobs
from scorer import Scorer
from scorer.checkpoint import BACKBONE_DIR
from scorer.generation import GenerationSettings

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
        model_id = self._initial_model()
        self._scorer = self._load_scorer(model_id)
        self._model_id = model_id
        self.training = TrainingJobs(self)
        if not self.read_only:
            self.training.recover_interrupted()
        self.queue_scorer = QueueScorer(self)
        self.generation = GenerationJobs(self)

    def _initial_model(self) -> int:
        config = self.config
        if not self.read_only:
            return initial_model(self.conn(), config.model, config.checkpoint, config.models_dir, config.device)
        current = active_model(self.conn())  # read-only: nothing is registered or written
        if current is None:
            raise FileNotFoundError(f"read-only store {config.db_path} has no active model")
        return current.id

    def start_background(self) -> None:
        """Start scoring the queue (at launch; it runs again after promotions, imports and generation).
        A read-only app scores nothing in the background (it could not store the scores)."""
        if not self.read_only:
            self.queue_scorer.start()

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
    def scorer(self) -> tuple[Scorer, int]:
        """The active scorer and its model version id in the store, read together."""
        with self._scorer_lock:
            return self._scorer, self._model_id

    @contextmanager
    def using_model(self) -> Iterator[tuple[Scorer, int]]:
        """Hold the active model for one piece of work (scoring or generating): (scorer, model version id).

        Generation switches the model's adapters off and its tokenizer to left padding while it runs, so
        every use of the weights goes through this lock; keep each hold short (one chunk).
        """
        with self._model_lock:
            yield self.scorer()

    def backbone_name(self) -> str:
        """The active backbone as caption sources name it: a hub id as is, a local folder by its name
        (by the checkpoint's name when the backbone was saved inside the checkpoint)."""
        scorer, _ = self.scorer()
        backbone = str(scorer.model.config.backbone)
        path = Path(backbone)
        if not path.exists():
            return backbone
        return path.parent.name if path.name == BACKBONE_DIR else path.name

    def activate(self, model_id: int) -> None:
        """Make ``model_id`` the active model: load it, record it in the store, then swap it in."""
        version = get_model_version(self.conn(), model_id)
        if version is None:
            raise ValueError(f"model version {model_id} does not exist")
        loaded = self._load_scorer(model_id)
        with self._scorer_lock:
            set_active_model(self.conn(), model_id)
            self._scorer, self._model_id = loaded, model_id
        log.info("active model is now version %d (%s)", model_id, version.path)
        self.queue_scorer.start()  # the queue's order follows the new model's margins

    def _load_scorer(self, model_id: int) -> Scorer:
        version = get_model_version(self.conn(), model_id)
        return Scorer.from_checkpoint(version.path, device=self.config.device, batch_size=16,
                                      cache_dir=None if self.read_only else self.config.cache_dir)

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
