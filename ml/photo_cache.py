"""Photos decoded once: a cache of resized uint8 photos per (dataset, image size), on disk.

Decoding JPEGs is most of a small run's first epoch on a CPU, and a class trains many runs
on one dataset at a few image sizes. So the first run that asks for a size decodes every
usable photo of the dataset once into ``images.u8`` (N x size x size x 3 bytes) beside a
``manifest.json``; every later run memory-maps the file, and concurrent runs share its pages
in the OS page cache instead of each holding its own decoded copy.

Safety:
- The manifest carries a fingerprint of the dataset (each usable photo's path, size and
  modification time), so an added, removed or replaced photo means a rebuild.
- A cache is built in a folder of its own and moved into place, manifest last, under a file
  lock: a build killed half-way leaves only that folder (cleared by the next build) and is
  never read; two runs asking at once decode once (the second waits for the first).
- A run that has a cache mapped keeps reading its (unlinked) file when a rebuild replaces it.
- A cache whose manifest and files disagree (edited, cut short, another version's) is
  logged and read as absent, so it is rebuilt like a missing one; the check reads the
  manifest and the file's size, never the photos themselves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import reprlib
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.disk import free_bytes, human_size

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
IMAGES = "images.u8"
FORMAT = 1  # bump when the file layout changes: older caches are then rebuilt
# Room left on the disk beyond the cache itself, for models and checkpoints.
SPARE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class PhotoCache:
    """A dataset's photos at one size, memory-mapped; ``state`` says whether this run built
    it (``"built"``) or found it (``"reused"``), ``seconds`` how long that took."""

    directory: Path
    root: Path  # the dataset folder whose photos it holds
    image_size: int
    images: np.ndarray  # (N, size, size, 3) uint8, memory-mapped read-only
    rows: dict[str, int]  # photo path relative to the dataset folder -> row
    decoded: np.ndarray  # (N,) bool: False where the photo did not decode
    state: str
    seconds: float

    def select(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the frame's photos that decoded, in the frame's order; the
        others are dropped, as the decoding pipeline drops them."""
        rows = np.array([self.rows[_relative(p, self.root)] for p in df["image_path"]],
                        dtype=np.int64)
        keep = self.decoded[rows] if len(rows) else np.zeros(0, dtype=bool)
        return rows[keep], df["label"].to_numpy()[keep]


class _Broken(Exception):
    """A cache folder whose manifest and files do not agree: what is wrong with it."""


def _relative(path: str, root: Path) -> str:
    return os.path.relpath(path, root)


def _cached_paths(images: pd.DataFrame, root: Path) -> list[str]:
    """The manifest's ``paths`` a cache of these photos holds, in its rows' order."""
    return [_relative(p, root) for p in sorted(images["image_path"].astype(str))]


def fingerprint(images: pd.DataFrame, root: Path) -> str:
    """What the cache must match: every usable photo's relative path, size and mtime."""
    digest = hashlib.sha256()
    for path in sorted(images["image_path"]):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "gone"
        digest.update(f"{_relative(path, root)}\0{stamp}\n".encode())
    return digest.hexdigest()


def cache_folder(cache_dir: Path, root: Path, image_size: int) -> Path:
    """Where the cache of this dataset folder at this size lives."""
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir / f"{root.name or 'data'}-{key}-{image_size}px"


Decoder = Callable[[list[str], int], Iterator[tuple[int, np.ndarray]]]


def open_photo_cache(images: pd.DataFrame, root: Path, image_size: int, cache_dir: Path,
                     *, decode: Decoder) -> PhotoCache | None:
    """The cache of these photos (a scan's ``images`` of dataset folder ``root``) at this
    size, built first when missing or stale; None when the disk has no room for it (the
    run then decodes as it goes). ``decode(paths, size)`` yields (position, image) for the
    photos that decode (the training pipeline's ``decode_many``)."""
    started = time.monotonic()
    folder = cache_folder(cache_dir, root, image_size)
    wanted = fingerprint(images, root)
    expected = _cached_paths(images, root)
    told: set[str] = set()

    def load() -> tuple[np.ndarray, dict[str, int], np.ndarray] | None:
        try:
            return _load(folder, wanted, image_size, expected)
        except _Broken as broken:
            # Once a run: the look again under the lock finds the same fault.
            if str(broken) not in told:
                told.add(str(broken))
                log.warning("photo cache in %s is inconsistent (%s); rebuilding it",
                            folder, broken)
            return None

    found = load()
    if found is not None:
        return _opened(folder, root, image_size, *found, "reused", started)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        found = load()  # built by another run while we waited
        if found is not None:
            return _opened(folder, root, image_size, *found, "reused", started)
        needed = len(images) * image_size * image_size * 3
        free = free_bytes(cache_dir)
        if free < needed + SPARE_BYTES:
            log.warning("photo cache not built: %d photos at %d px need %s and %s is free on "
                        "%s; this run decodes its photos as it goes", len(images), image_size,
                        human_size(needed), human_size(free), cache_dir)
            return None
        _build(folder, images, root, image_size, wanted, decode)
        found = load()
        if found is None:  # cannot happen unless the disk lies; decode as we go then
            log.warning("the photo cache just built in %s does not read back", folder)
            return None
        return _opened(folder, root, image_size, *found, "built", started)


def _opened(folder: Path, root: Path, image_size: int, array: np.ndarray, rows: dict[str, int],
            decoded: np.ndarray, state: str, started: float) -> PhotoCache:
    seconds = time.monotonic() - started
    log.info("photo cache %s: %d photos at %d px in %s (%.1f s)", state, len(rows),
             image_size, folder, seconds)
    return PhotoCache(folder, root, image_size, array, rows, decoded, state, seconds)


def _load(folder: Path, wanted: str, image_size: int, expected: list[str]
          ) -> tuple[np.ndarray, dict[str, int], np.ndarray] | None:
    """The complete cache in ``folder`` if it matches; None for a missing or stale one (a
    reader never sees a half-built cache: those live in another folder). Raises _Broken for
    one whose manifest and files disagree, so that no fault surfaces later as a bad index."""
    try:
        text = (folder / MANIFEST).read_text()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _Broken(f"its manifest does not read: {exc}") from None
    manifest = _checked_manifest(text, wanted, image_size)
    if manifest is None:
        return None
    paths, undecodable = manifest["paths"], manifest["undecodable"]
    shape = (len(paths), image_size, image_size, 3)
    _check_images(folder / IMAGES, shape)
    if paths != expected:
        raise _Broken(f"its manifest's paths are not the dataset's {len(expected)} photos")
    bad = [row for row in undecodable if not _whole(row) or not 0 <= row < len(paths)]
    if bad:
        raise _Broken(f"its manifest's undecodable names {reprlib.repr(bad[0])}, not one of "
                      f"its {len(paths)} rows")
    try:
        array = np.memmap(folder / IMAGES, dtype=np.uint8, mode="r", shape=shape) \
            if paths else np.zeros(shape, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise _Broken(f"its {IMAGES} does not map: {exc}") from None
    if paths and hasattr(mmap, "MADV_RANDOM"):
        # Batches read scattered rows: the kernel's read-ahead would page in (and charge
        # each run for) neighbours no batch asked for.
        array._mmap.madvise(mmap.MADV_RANDOM)
    decoded = np.ones(len(paths), dtype=bool)
    decoded[undecodable] = False
    return array, {p: i for i, p in enumerate(paths)}, decoded


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no row


def _checked_manifest(text: str, wanted: str, image_size: int) -> dict[str, Any] | None:
    """The manifest with each field of the type the builder writes; None for another
    format's or another dataset's (stale, not broken); raises _Broken otherwise."""
    try:
        manifest = json.loads(text)
    except ValueError:
        raise _Broken("its manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise _Broken(f"its manifest is a JSON {type(manifest).__name__}, not an object")

    def field(key: str, ok: Callable[[Any], bool], what: str) -> Any:
        value = manifest.get(key)
        if not ok(value):
            raise _Broken(f"its manifest's {key} is {reprlib.repr(value)}, not {what}")
        return value

    if field("format", _whole, "a whole number") != FORMAT:
        return None  # an older layout: its other fields may differ
    if field("fingerprint", lambda v: isinstance(v, str), "a string") != wanted:
        return None
    if field("image_size", _whole, "a whole number") != image_size:
        raise _Broken(f"its manifest says {manifest['image_size']} px in the {image_size} px "
                      "folder")
    field("paths", lambda v: isinstance(v, list), "a list")
    field("undecodable", lambda v: isinstance(v, list), "a list")
    return manifest


def _check_images(path: Path, shape: tuple[int, ...]) -> None:
    """The pixel file holds exactly ``shape`` (its size, from stat: nothing is read)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _Broken(f"its {IMAGES} is missing") from None
    except OSError as exc:
        raise _Broken(f"its {IMAGES} does not read: {exc}") from None
    needed = int(np.prod(shape))
    if not stat.S_ISREG(st.st_mode) or st.st_size != needed:
        raise _Broken(f"its {IMAGES} holds {st.st_size} bytes where {shape[0]} photos at "
                      f"{shape[1]} px take {needed}")


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One builder per cache across processes; the lock goes with a killed builder."""
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run that is building the photo cache %s",
                     lock_path.name.removesuffix(".lock"))
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(folder: Path, images: pd.DataFrame, root: Path, image_size: int, wanted: str,
           decode: Decoder) -> None:
    # Under the lock nobody else builds this cache: what a killed build left is garbage.
    for stale in folder.parent.glob(folder.name + ".building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    building.mkdir(parents=True)
    paths = sorted(images["image_path"].astype(str))
    shape = (len(paths), image_size, image_size, 3)
    log.info("building the photo cache: decoding %d photos at %d px once for every run",
             len(paths), image_size)
    started = time.monotonic()
    undecodable = set(range(len(paths)))
    if paths:
        array = np.memmap(building / IMAGES, dtype=np.uint8, mode="w+", shape=shape)
        for position, image in decode(paths, image_size):
            array[position] = image
            undecodable.discard(position)
        array.flush()
        del array
    else:
        (building / IMAGES).touch()
    with open(building / IMAGES, "rb") as fh:
        os.fsync(fh.fileno())
    manifest = {"format": FORMAT, "fingerprint": wanted, "image_size": image_size,
                "root": str(root), "paths": [_relative(p, root) for p in paths],
                "undecodable": sorted(undecodable), "built": time.time()}
    (building / MANIFEST).write_text(json.dumps(manifest))
    # Swap the complete folder in: an old cache moves aside first (a run reading it keeps
    # its mapping), then goes.
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    building.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    if undecodable:
        log.warning("photo cache: %d photos did not decode and are left out",
                    len(undecodable))
    log.info("photo cache built in %.1f s (%s)", time.monotonic() - started,
             human_size(int(np.prod(shape))))

