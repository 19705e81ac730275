"""The dataset scan, cached per folder (25,000 files take seconds) and sorted once per order."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dashboard.paths import inside
from ml.data import scan
from ml.errors import DatasetError

log = logging.getLogger(__name__)

RESCAN_AFTER_S = 60.0
MAX_CACHED_FOLDERS = 4
SAMPLE_PER_CLASS, SAMPLE_SEED = 6, 42
_DIGITS = re.compile(r"(\d+)")


@dataclass
class Snapshot:
    """One scan of a folder, prepared for the page (rows in natural path order)."""

    root: str
    signature: tuple[int, ...]
    subdirs: tuple[str, ...]
    scanned_at: float  # time.time(), for people
    checked_at: float  # time.monotonic(), for the re-scan timer
    table: pd.DataFrame  # images + rel, served, _pos; index 0..n-1 in natural path order
    skipped: pd.DataFrame  # image_path, reason, rel
    summary: dict[str, Any]
    samples: pd.DataFrame  # rows of table: the sample photos, by label then path
    orders: dict[tuple[str, str, int | None], np.ndarray] = field(default_factory=dict)
    countplot: bytes | None = None

    @property
    def version(self) -> str:
        """Changes with every scan: an ETag, and a cache-buster in URLs."""
        return f"{int(self.scanned_at * 1000):x}"

    def positions(self, sort: str, order: str, label: int | None) -> np.ndarray:
        """Row positions in the wanted order, computed once per (sort, order, label)."""
        key = (sort, order, label)
        found = self.orders.get(key)
        if found is not None:
            return found
        table = self.table
        if sort == "image_path":
            pos = np.arange(len(table))
            if order == "desc":
                pos = pos[::-1]
        else:  # ties stay in path order whichever way the column goes
            pos = table.sort_values([sort, "_pos"], ascending=[order == "asc", True],
                                    kind="stable").index.to_numpy()
        if label is not None:
            pos = pos[table["label"].to_numpy()[pos] == label]
        self.orders[key] = pos  # a race only computes the same array twice
        return pos


_cache: OrderedDict[str, Snapshot] = OrderedDict()
_cache_lock = threading.Lock()  # guards _cache and _refreshing
_scan_lock = threading.Lock()  # one scan at a time: they compete for the same disk anyway
_refreshing: set[str] = set()


def _natural_key(text: str) -> tuple[Any, ...]:
    # cat.2.jpg before cat.10.jpg; str and int parts always alternate, so keys compare.
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(_DIGITS.split(text)))


def _signature(root: str, subdirs: tuple[str, ...]) -> tuple[int, ...]:
    """mtimes of the folder and its class folders: adding or removing a photo changes one."""
    stamps = []
    for path in (root, *subdirs):
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


def _subdirs(root: str) -> tuple[str, ...]:
    try:
        with os.scandir(root) as entries:
            return tuple(sorted(e.path for e in entries if e.is_dir(follow_symlinks=False)))
    except OSError:
        return ()


def _rel(paths: pd.Series, root: str) -> list[str]:
    prefix = root.rstrip(os.sep) + os.sep
    return [p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)
            for p in paths]


def _samples(table: pd.DataFrame) -> pd.DataFrame:
    """Up to 6 photos per class (more of one class when the other is short), fixed seed."""
    usable = table[table["served"]]
    picks = [group.sample(n=min(SAMPLE_PER_CLASS, len(group)), random_state=SAMPLE_SEED)
             for _, group in usable.groupby("label", sort=True)]
    chosen = pd.concat(picks) if picks else usable.iloc[:0]
    short = 2 * SAMPLE_PER_CLASS - len(chosen)
    rest = usable.drop(index=chosen.index)
    if short > 0 and len(rest):
        chosen = pd.concat([chosen, rest.sample(n=min(short, len(rest)),
                                                random_state=SAMPLE_SEED)])
    return chosen.sort_values(["label", "_pos"])


def _build(root: str) -> Snapshot:
    subdirs = _subdirs(root)
    signature = _signature(root, subdirs)  # taken first: changes during the scan re-scan
    started = time.monotonic()
    result = scan(root)
    root = str(result.root)
    images = result.images.copy()
    images["rel"] = _rel(images["image_path"], root)
    keys = [_natural_key(r) for r in images["rel"]]
    table = images.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)
    table["_pos"] = np.arange(len(table))
    # A file link pointing outside the folder is scanned but never served (see paths.resolve).
    served = [not os.path.islink(p) or inside(root, os.path.realpath(p))
              for p in table["image_path"]]
    table["served"] = np.array(served, dtype=bool)
    skipped = result.skipped.copy()
    skipped["rel"] = _rel(skipped["image_path"], root)
    skipped = skipped.iloc[sorted(range(len(skipped)),
                                  key=lambda i: _natural_key(skipped["rel"].iat[i]))]
    snap = Snapshot(root=root, signature=signature, subdirs=subdirs, scanned_at=time.time(),
                    checked_at=time.monotonic(), table=table,
                    skipped=skipped.reset_index(drop=True), summary=result.summary(),
                    samples=_samples(table))
    log.info("dataset %s scanned in %.1f s: %d photos, %d skipped", root,
             time.monotonic() - started, len(table), len(skipped))
    return snap


def _store(key: str, snap: Snapshot) -> None:
    with _cache_lock:
        _cache[key] = snap
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED_FOLDERS:
            _cache.popitem(last=False)


def _refresh_later(key: str) -> None:
    """Re-scan in the background: the page keeps showing the previous scan meanwhile."""
    with _cache_lock:
        if key in _refreshing:
            return
        _refreshing.add(key)

    def work() -> None:
        try:
            with _scan_lock:
                _store(key, _build(key))
        except Exception as exc:  # the next request scans again in the foreground
            log.warning("background re-scan of %s failed: %s", key, exc)
            with _cache_lock:
                _cache.pop(key, None)
        finally:
            with _cache_lock:
                _refreshing.discard(key)

    threading.Thread(target=work, name="dataset-rescan", daemon=True).start()


def snapshot(data_dir: str | os.PathLike[str]) -> Snapshot:
    """The cached scan of ``data_dir``; raises DatasetError when the folder is unusable."""
    key = os.path.realpath(data_dir)
    if not os.path.isdir(key):
        with _cache_lock:
            _cache.pop(key, None)
        scan(data_dir)  # raises the library's one-sentence DatasetError
        raise DatasetError(f"dataset folder {data_dir} is not usable")
    with _cache_lock:
        snap = _cache.get(key)
    if snap is not None and snap.signature == _signature(key, snap.subdirs):
        if time.monotonic() - snap.checked_at > RESCAN_AFTER_S:
            _refresh_later(key)
        return snap
    with _scan_lock:
        with _cache_lock:  # another request may have scanned while this one waited
            snap = _cache.get(key)
        if snap is not None and snap.signature == _signature(key, snap.subdirs):
            return snap
        snap = _build(key)
        _store(key, snap)
        return snap
