"""Resolve user-given image paths without ever leaving their root.

Every room that opens a file named by a user (a record in a JSON file, a row of the store, a
request from the app) goes through :func:`resolve_inside`, so one rule holds everywhere:
absolute paths, ``..`` segments and symlinks that point outside the root are rejected.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathOutsideRootError(ValueError):
    """A user-given path resolves outside the root it must stay in."""


def resolve_inside(root: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """Return ``root / relative`` resolved, or raise :class:`PathOutsideRootError`.

    ``relative`` must be a relative path; after resolving symlinks the result must still lie
    inside ``root`` (also resolved). The file need not exist.
    """
    rel = os.fspath(relative)
    if not rel or "\x00" in rel:
        raise PathOutsideRootError(f"image path {rel!r} is empty or contains a NUL byte")
    if os.path.isabs(rel) or Path(rel).drive:
        raise PathOutsideRootError(f"image path {rel!r} is absolute; give it relative to the image root")
    root_resolved = Path(root).resolve()
    candidate = (root_resolved / rel).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise PathOutsideRootError(
            f"image path {rel!r} resolves to {candidate}, outside the image root {root_resolved}"
        )
    return candidate


def relative_to_root(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The POSIX-style path of ``path`` relative to ``root``; raises if it lies outside."""
    root_resolved = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise PathOutsideRootError(f"{path} lies outside the image root {root_resolved}")
    return resolved.relative_to(root_resolved).as_posix()
