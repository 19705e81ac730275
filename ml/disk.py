"""Files on a disk that may fill up: written whole or not at all, and the room a run needs.

A full disk must never cost a run the best epoch it already saved, nor show a person a
library's raw message (h5py's names file descriptors and buffer addresses).
"""

from __future__ import annotations

import errno
import gc
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml.errors import DiskFullError

log = logging.getLogger(__name__)

SPARE_BYTES = 1_000_000  # room kept for the cards, best.json and the files' own structure
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def tmp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: in the same folder (so the
    rename is atomic), ".tmp" after the first part of the name so that the ending Keras
    insists on stays: best.tmp.weights.h5, model.tmp.keras, card.tmp.json."""
    stem, dot, rest = path.name.partition(".")
    return path.with_name(f"{stem}.tmp{dot}{rest}")


def discard(path: Path) -> None:
    """Remove a (partial) file and give its space back at once.

    Truncated first: a library whose write failed half-way may still hold the file open (h5py
    does, until its exception is garbage), and an unlinked file that is open keeps its blocks.
    """
    try:
        os.truncate(path, 0)
    except OSError:
        pass
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def write_files(*files: tuple[Path, Callable[[Path], Any]]) -> None:
    """Write each ``(path, write)``: ``write`` fills a temporary file beside the path, and once
    all are whole they are renamed into place (os.replace). A reader sees the old files or the
    new ones, never half of one; a write that fails (a full disk) leaves the old files as they
    were and removes its partial file."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            tmp = tmp_path(path)
            staged.append((tmp, path))
            write(tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            discard(tmp)
        raise


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an error, or one it was raised from, is a full disk (or an exhausted quota).

    h5py and zipfile raise OSError with its errno; the text is checked too, for libraries
    that re-raise it as another type.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded")):
            return True
        exc = exc.__cause__
    return False


def _existing(path: Path) -> Path:
    """The path, or its nearest folder that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free bytes (for this user) on the disk that holds path, or would hold it."""
    return shutil.disk_usage(_existing(path)).free


def human_size(n: float) -> str:
    """A size as a person reads it, in powers of 1000 as disks are sold (``df -H``)."""
    if n < 1000:
        return f"{int(n)} bytes"
    exponent = 1
    while exponent < 4 and n >= 999.5 * 1000 ** exponent:
        exponent += 1
    value, unit = n / 1000 ** exponent, ("kB", "MB", "GB", "TB")[exponent - 1]
    text = f"{value:.1f}".removesuffix(".0") if value < 9.95 else f"{value:.0f}"
    return f"{text} {unit}"


def full_message(folder: Path, name: str = "models folder") -> str:
    return (f"the {name} is full: {human_size(free_bytes(folder))} free on {folder}; free some "
            f"space and start the run again")


def disk_needed(model, out: Path, resume_dir: Path | None = None, *,
                checkpoint_file: str, backup_file: str) -> int:
    """Bytes a run of this (built) model needs free under ``out`` before it starts.

    The best-epoch checkpoint (best.weights.h5) holds every weight and, Keras saving the
    optimizer with the model, Adam's two moments of every trainable one, 4 bytes each (float32,
    under mixed bfloat16 too), plus 1 % for the HDF5 file's own structure:
        checkpoint = 4 B x (weights + 2 x trainable weights) x 1.01
    At its peak a run holds two files that size: the kept checkpoint and model.keras (as large:
    its optimizer is saved too), or the kept checkpoint and a better epoch's one, written beside
    it before it replaces it. With ``resume_dir`` on the same disk, Keras's backup of the model
    and optimizer is a third. And 1 MB for the cards:
        needed = checkpoint x (2 + 1 with a backup) + 1 MB - what those files already take
    (a resumed run's checkpoint and backup are there already). fast_cnn: 28.5 MB.
    """
    weights = model.count_params()
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    checkpoint = int(4 * (weights + 2 * trainable) * 1.01)
    held = [out / checkpoint_file]
    copies = 2
    if resume_dir is not None and (os.stat(_existing(Path(resume_dir))).st_dev
                                   == os.stat(_existing(out)).st_dev):
        copies += 1
        held.append(Path(resume_dir) / backup_file)
    already = sum(path.stat().st_size for path in held if path.is_file())
    return max(checkpoint * copies + SPARE_BYTES - already, SPARE_BYTES)


def check_free_space(needed: int, out: Path) -> None:
    """DiskFullError, before training, when the disk under ``out`` has less than ``needed``
    bytes free (see ``disk_needed``)."""
    free = free_bytes(out)
    if free < needed:
        raise DiskFullError(
            f"this run needs about {human_size(needed)} in {out} and only {human_size(free)} "
            f"{'is' if free < 1000 else 'are'} free; free some space there (or train a smaller "
            f"model) and start the run again")


def write_making_room(path: Path, write: Callable[[Path], Any], spare: list[Path],
                       out: Path) -> None:
    """Write one file atomically; when the disk is full, remove the spare files (whose content
    the caller holds in memory) and try again; DiskFullError when there is still no room."""
    while True:
        try:
            write_files((path, write))
            return
        except Exception as exc:
            if not is_disk_full(exc):
                raise
        gc.collect()  # see EventCallback: a failed h5py write holds its file until then
        present = [p for p in spare if p.is_file()]
        spare.clear()
        if not present:
            raise DiskFullError(full_message(out))
        for p in present:
            log.warning("the disk is full: removing %s to make room for %s", p, path.name)
            discard(p)
