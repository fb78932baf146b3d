"""Who may do what: the app's accounts and roles, and a throttle on failed logins.

Accounts come from ``--auth USER:PASS[:ROLE]`` and ``--auth-file`` (one ``USER:PASS[:ROLE]`` a line). A
file line without a role is an ``annotator``; the ``--auth`` account without one is the ``admin`` (the
operator). Roles, each with the rights of the ones before it:

- ``annotator``: open images, decide, undo, edit, add and generate captions of the open image, search, export;
- ``reviewer``: also hide / restore images and captions and resolve review items (the Review tab);
- ``admin``: also import, delete, batch generation, start/cancel training, promote and roll back.

Without accounts (one local user) everything is allowed, as before. With accounts the annotator is the
logged-in user: a name given by a client is ignored.

Failed logins are throttled per user name and per client address: after :data:`FREE_FAILURES`
failures in a row, every further attempt within a lock-out window is refused without checking the
password; the window is 1 s after the 5th failure and doubles with each failure up to
:data:`MAX_LOCK_S` (30 s). A successful login clears its user's and its address's counts.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ROLES = ("annotator", "reviewer", "admin")
DEFAULT_ROLE = "annotator"
ADMIN_ACTIONS = ("import", "delete", "generate_batch", "train", "cancel_training", "promote", "rollback")
REVIEW_ACTIONS = ("hide", "resolve")  # reviewer or admin
FREE_FAILURES = 5
FIRST_LOCK_S = 1.0
MAX_LOCK_S = 30.0

# The client address of the request being handled (set by ClientAddressMiddleware): gradio calls its ``auth``
# callable with (user, password) only.
client_address: ContextVar[str | None] = ContextVar("client_address", default=None)


class AccessDeniedError(ValueError):
    """The logged-in user's role does not allow the action (shown to the user like any bad input)."""


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    role: str = DEFAULT_ROLE

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"account {self.user!r}: role {self.role!r} is not one of {', '.join(ROLES)}")


def parse_account(line: str, source: str, default_role: str = DEFAULT_ROLE) -> Account:
    """``USER:PASS`` or ``USER:PASS:ROLE`` (a last ``:``-part that names a role is the role)."""
    user, sep, rest = line.partition(":")
    password, role = rest, default_role
    if rest.rsplit(":", 1)[-1] in ROLES and ":" in rest:
        password, role = rest.rsplit(":", 1)
    if not sep or not user or not password:
        raise ValueError(f"{source}: auth entry is not USER:PASS or USER:PASS:ROLE")
    return Account(user.strip(), password, role)


@dataclass
class LoginThrottle:
    """Failure counts per key (``user:NAME``, ``addr:IP``) and the time each key is locked until."""

    clock: Callable[[], float] = time.monotonic
    failures: dict[str, int] = field(default_factory=dict)
    locked_until: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, keys: list[str]) -> float:
        """Seconds before any of ``keys`` may try again (0: now)."""
        now = self.clock()
        with self.lock:
            return max([self.locked_until.get(key, 0.0) - now for key in keys] + [0.0])

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self.lock:
            for key in keys:
                count = self.failures[key] = self.failures.get(key, 0) + 1
                if count >= FREE_FAILURES:
                    self.locked_until[key] = now + min(MAX_LOCK_S, FIRST_LOCK_S * 2 ** (count - FREE_FAILURES))

    def succeeded(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                self.failures.pop(key, None)
                self.locked_until.pop(key, None)


class Access:
    """The accounts of the app (none: open to one local user) and the login check gradio calls."""

    def __init__(self, accounts: list[Account] | None = None, throttle: LoginThrottle | None = None):
        self.accounts = {account.user: account for account in accounts or []}
        self.throttle = throttle or LoginThrottle()

    @property
    def enabled(self) -> bool:
        return bool(self.accounts)

    def login(self, user: str, password: str, address: str | None = None) -> bool:
        """Whether ``user`` may log in with ``password``; refused without a check while throttled."""
        address = address if address is not None else client_address.get()
        keys = [f"user:{user}"] + ([f"addr:{address}"] if address else [])
        wait = self.throttle.wait_s(keys)
        if wait > 0:
            log.warning("login of %r from %s refused: throttled for %.1f s more", user, address or "?", wait)
            return False
        account = self.accounts.get(user)
        expected = account.password if account is not None else "\0no such user"
        ok = hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")) and account is not None
        if ok:
            self.throttle.succeeded(keys)
        else:
            self.throttle.failed(keys)
            log.warning("failed login of %r from %s", user, address or "?")
        return ok

    def __call__(self, user: str, password: str) -> bool:  # gradio's auth callable
        return self.login(user, password)

    def role(self, user: str | None) -> str:
        """The role of ``user`` ('admin' for everyone when there are no accounts)."""
        if not self.enabled:
            return "admin"
        account = self.accounts.get(user or "")
        if account is None:
            raise AccessDeniedError("not logged in")
        return account.role

    def require(self, user: str | None, action: str) -> None:
        """Raise :class:`AccessDeniedError` when ``user`` may not do ``action``."""
        role = self.role(user)
        if action in ADMIN_ACTIONS and role != "admin":
            raise AccessDeniedError(f"{action.replace('_', ' ')} needs the admin role; {user} is {role}")
        if action in REVIEW_ACTIONS and role not in ("reviewer", "admin"):
            raise AccessDeniedError(f"{action} needs the reviewer or admin role; {user} is {role}")


class ClientAddressMiddleware:
    """Pure ASGI middleware: puts the client's address in :data:`client_address` for the login route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("client"):
            token = client_address.set(scope["client"][0])
            try:
                return await self.app(scope, receive, send)
            finally:
                client_address.reset(token)
        return await self.app(scope, receive, send)
