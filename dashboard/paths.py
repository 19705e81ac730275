"""Path containment: which files under the dataset (or models) folder the web may serve."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dashboard.helpers import lab_settings


def inside(root: str, path: str) -> bool:
    """Whether ``path`` lies below ``root`` (both absolute and normalised; root itself is not)."""
    return path != root and os.path.commonpath([root, path]) == root


def data_root() -> str | None:
    """Realpath of the configured dataset folder, or None when there is none (app context)."""
    data_dir = getattr(lab_settings(), "data_dir", None)
    root = os.path.realpath(data_dir) if data_dir else None
    return root if root and os.path.isdir(root) else None


def resolve(root: str, rel: str) -> str | None:
    """The regular file ``rel`` names inside the realpath ``root``, links followed; else None."""
    # realpath collapses "..", absolute paths (join drops root) and links, so one containment
    # check covers them all; Werkzeug has already decoded %2e%2e.
    if not rel or "\x00" in rel:
        return None
    try:
        target = os.path.realpath(os.path.join(root, rel))
        if not inside(root, target):
            return None
        return target if stat.S_ISREG(os.stat(target).st_mode) else None
    except (OSError, ValueError):
        return None


def file_inside(root: str | os.PathLike[str], rel: str) -> Path | None:
    """The regular file ``rel`` names inside ``root`` (any path), links followed, else None."""
    path = resolve(os.path.realpath(root), rel)
    return Path(path) if path else None


def _relative_to(path: str, base: str | os.PathLike[str]) -> str | None:
    path, base = os.path.normpath(path), os.path.normpath(base)
    if not (os.path.isabs(path) and os.path.isabs(base)):
        return None
    try:
        return os.path.relpath(path, base) if inside(base, path) else None
    except ValueError:
        return None


def photo_rel(image_path: str, data_dir: str | None = None) -> str | None:
    """A photo's path below this process's dataset folder, or None (needs an app context)."""
    # image_path was recorded under data_dir: a worker may mount the dataset somewhere else.
    root = data_root()
    if root is None or not image_path:
        return None
    try:
        real = os.path.realpath(image_path)
    except (OSError, ValueError):
        real = ""
    pairs = ((image_path, data_dir),) if data_dir else ()
    for rel in (_relative_to(p, b) for p, b in (*pairs, (image_path, root), (real, root))):
        if rel and resolve(root, rel) is not None:
            return rel.replace(os.sep, "/")
    return None
