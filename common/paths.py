"""Resolve user-given image paths without ever leaving their root.

Every room that opens a file named by a user (a record in a JSON file, a row of the store, a
request from the app) goes through :func:`resolve_inside`, so one rule holds everywhere:
absolute paths, ``..`` segments and symlinks that point outside the root are rejected.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


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


def normalize_relative(relative: str) -> str:
    """The canonical POSIX form of a user-given relative image path, or :class:`PathOutsideRootError`.

    ``./`` segments and repeated slashes are dropped (``./imgs//1.png`` is ``imgs/1.png``), so two
    spellings of one file compare equal. Refused: a value that is not text, an empty path or ``.``,
    an absolute path, a ``..`` segment (``/`` or ``\\`` separated), and control characters (NUL included).
    The file need not exist; :func:`resolve_inside` checks symlinks against a root.
    """
    if not isinstance(relative, str):
        raise PathOutsideRootError(f"image path {relative!r} is {type(relative).__name__}, not text")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in relative):
        raise PathOutsideRootError(f"image path {relative!r} contains a control character")
    if os.path.isabs(relative) or PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).drive:
        raise PathOutsideRootError(f"image path {relative!r} is absolute; give it relative to the image root")
    if ".." in relative.replace("\\", "/").split("/"):
        raise PathOutsideRootError(f"image path {relative!r} contains '..'; give it relative to the image root")
    parts = [part for part in PurePosixPath(relative).parts if part != "."]
    if not parts:
        raise PathOutsideRootError(f"image path {relative!r} is empty; name a file under the image root")
    return "/".join(parts)
