"""Shared by the tabs: choosing UI text in English or Chinese (the words are in :mod:`ui.strings`), and
turning bad input into a message for the user.

Component labels are translated in the browser (``gr.I18n``, from the browser's locale). Text the handlers
write (status lines, counters, errors) is chosen on the server with :func:`say`, in the language of the
request being handled: :func:`localized` reads it from the request's ``Accept-Language`` header, which the
browser sets from the same locale. Outside a request (tests, the watcher thread) the text is English.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import gradio as gr

from common.paths import PathOutsideRootError
from loop.services import STORAGE_ERRORS, storage_problem
from ui.strings import EN, METRIC_WORDS_ZH, ZH

log = logging.getLogger(__name__)

def metric_label(name: str) -> str:
    """A metric's name as the UI shows it: as is in English, word by word in Chinese."""
    if _language.get() != "zh":
        return name
    return re.sub(r"[A-Za-z0-9]+", lambda m: METRIC_WORDS_ZH.get(m.group(0), m.group(0)), name)


# Keys are prefixed so they never collide with gradio's own translation keys (e.g. "image").
I18N = gr.I18n(en={f"rs_{k}": v for k, v in EN.items()}, zh={f"rs_{k}": v for k, v in ZH.items()})
TEXTS = {"en": EN, "zh": ZH}
_language: ContextVar[str] = ContextVar("ui_language", default="en")


def tr(key: str) -> gr.i18n.I18nData:
    """The UI label ``key`` in the browser's language (English or Chinese), translated by the browser."""
    if key not in EN:
        raise ValueError(f"no UI text named {key!r}")
    return I18N(f"rs_{key}")


def say(key: str, **values) -> str:
    """Handler text ``key`` filled with ``values``, in the language of the request being handled."""
    if key not in EN:
        raise ValueError(f"no UI text named {key!r}")
    return TEXTS[_language.get()].get(key, EN[key]).format(**values)


def headers(*keys: str) -> list[str]:
    """Table column names ``col_<key>`` in the language of the request being handled."""
    return [say(f"col_{key}") for key in keys]


def accepted_language(header: str | None) -> str:
    """The UI language ("en" or "zh") an ``Accept-Language`` header prefers most; English when none fits."""
    ranked = []
    for order, part in enumerate((header or "").split(",")):
        tag, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        code = tag.lower().split("-")[0]
        if code in TEXTS and quality > 0:
            ranked.append((-quality, order, code))
    return min(ranked)[2] if ranked else "en"


@contextmanager
def language(code: str) -> Iterator[None]:
    """Write handler texts in ``code`` ("en" or "zh") inside the block."""
    if code not in TEXTS:
        raise ValueError(f"no UI language {code!r}; choose one of {', '.join(TEXTS)}")
    token = _language.set(code)
    try:
        yield
    finally:
        _language.reset(token)


def request_language(request: gr.Request | None) -> str:
    headers = getattr(request, "headers", None) or {}
    return accepted_language(next((v for k, v in headers.items() if k.lower() == "accept-language"), None))


def localized(fn: Callable) -> Callable:
    """``fn`` as a gradio handler whose :func:`say` texts follow the request's ``Accept-Language``.

    gradio passes the request to a parameter annotated ``gr.Request``; the wrapper adds one in front of
    ``fn``'s own parameters (so ``gr.SelectData`` and ``gr.Progress`` parameters keep working).
    """
    signature = inspect.signature(fn)
    if "ui_request" in signature.parameters:
        raise ValueError(f"{getattr(fn, '__name__', fn)} already has a parameter named ui_request")

    @functools.wraps(fn)
    def wrapper(ui_request, *args, **kwargs):
        token = _user.set(getattr(ui_request, "username", None) or None)
        try:
            with language(request_language(ui_request)):
                return fn(*args, **kwargs)
        finally:
            _user.reset(token)

    request_param = inspect.Parameter("ui_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapper.__signature__ = signature.replace(parameters=[request_param, *signature.parameters.values()])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "ui_request": gr.Request}
    return wrapper


USER_ERRORS = (ValueError, FileNotFoundError, PathOutsideRootError)
_user: ContextVar[str | None] = ContextVar("ui_user", default=None)
_public_roots: dict[str, str] = {}  # absolute folder → how a browser is shown it ("" for the image root)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`:,;()\[\]{}<>/]+/)*[^\s'\"`:,;()\[\]{}<>/]+")


def current_user() -> str | None:
    """The logged-in user of the request being handled (None without ``--auth``, or outside a request)."""
    return _user.get()


def acting_user(given: str | None) -> str:
    """Who acts: the logged-in user when there is one (a name the client gives is then ignored), else the
    name typed in the annotator box."""
    return current_user() or (given or "").strip()


def require(services, action: str) -> None:
    """Refuse ``action`` (``loop.access.ADMIN_ACTIONS``) unless the logged-in user's role allows it."""
    services.access.require(current_user(), action)


def publish_roots(image_root: Path, data_dir: Path) -> None:
    """Folders whose absolute paths a browser never sees: the image root (paths are shown relative to it)
    and the data folder (shown as ``data/``)."""
    for folder, shown in ((image_root, ""), (data_dir, "data/")):
        for form in {str(folder), str(Path(folder).resolve())}:
            _public_roots[form.rstrip("/") + "/"] = shown


def public_text(text: str) -> str:
    """``text`` as a browser may see it: paths under the image root made relative, the data folder as
    ``data/``, any other absolute path (a symlink target, a library file) cut to its file name."""
    for root in sorted(_public_roots, key=len, reverse=True):
        text = text.replace(root, _public_roots[root])
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def storage_message(error: BaseException) -> str:
    """What the user is told when the store or a file could not be written."""
    problem = storage_problem(error)
    return say(f"err_{problem}") if problem else say("err_storage", error=public_text(str(error)))


def user_errors(fn: Callable) -> Callable:
    """A gradio handler (:func:`localized`) that shows bad input (``ValueError``, ``FileNotFoundError``) and a
    store that cannot write (full disk, read-only folder) as an error message naming the item, never an
    absolute server path (the server log keeps the full message)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as error:
            log.info("user error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(public_text(str(error)), title=say("error_title")) from error
        except STORAGE_ERRORS as error:
            log.error("storage error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(storage_message(error), title=say("error_title")) from error

    return localized(wrapper)
