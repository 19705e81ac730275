"""Scan a dataset folder into a pandas DataFrame, and split it.

Layouts: the Kaggle flat folder (``cat.123.jpg``, ``dog.45.jpg``) and class folders (``Cat/``,
``dogs/``, any case, at any depth, e.g. Microsoft's ``PetImages/Cat``). Label 0 = dog, 1 = cat.

A file's type is decided by its bytes, not its extension. Files that are empty, not an image,
corrupt, truncated, in a format the training pipeline cannot decode, or of unknown label go to
a second DataFrame with the reason; scanning never raises on a bad file. Only the header and
the last few KiB of each file are read, in a thread pool, so 25,000 files take seconds.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml import formats
from ml.errors import DatasetError

log = logging.getLogger(__name__)

CLASS_NAMES = ("dog", "cat")  # index = label: 0 = dog, 1 = cat
LABELS = {name: i for i, name in enumerate(CLASS_NAMES)}

_FLAT_NAME = re.compile(r"^(cat|dog)s?[._\- ]", re.IGNORECASE)
_FOLDER_NAMES = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_TAIL_BYTES = 4096
# Per process, the last scan of a few folders: a file whose stat is unchanged is not read
# again, so a worker's second run (and the web's re-scan) costs a walk, not 12,000 opens.
_MEMO_FOLDERS = 4

IMAGE_COLUMNS = ["image_path", "label", "class_name", "format", "bytes"]
SKIPPED_COLUMNS = ["image_path", "reason"]


@dataclass(frozen=True)
class ScanResult:
    """The photos usable for training and the files skipped, each as a DataFrame."""

    root: Path
    images: pd.DataFrame  # image_path, label, class_name, format, bytes
    skipped: pd.DataFrame  # image_path, reason

    def summary(self) -> dict[str, object]:
        """Counts for people and scripts (the CLI's ``scan --json``)."""
        counts = self.images["class_name"].value_counts()
        reasons = self.skipped["reason"].str.split(":").str[0].value_counts()
        return {
            "root": str(self.root),
            "total": int(len(self.images)),
            "cats": int(counts.get("cat", 0)),
            "dogs": int(counts.get("dog", 0)),
            "skipped": int(len(self.skipped)),
            "skipped_reasons": {str(k): int(v) for k, v in reasons.items()},
        }


def label_for(path: Path, root: Path) -> str | None:
    """Class name from the file name (``cat.1.jpg``) or the nearest class folder, else None."""
    match = _FLAT_NAME.match(path.name)
    if match:
        return match.group(1).lower()
    for part in reversed(path.relative_to(root).parts[:-1]):
        name = _FOLDER_NAMES.get(part.lower())
        if name:
            return name
    return None


def sniff(path: Path) -> tuple[str | None, str | None, int]:
    """Return (format, problem, size) from a file's bytes; format None when it is not usable."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None, "empty file (0 bytes)", 0
        with open(path, "rb") as fh:
            head = fh.read(32)
            if size > _TAIL_BYTES:
                fh.seek(-_TAIL_BYTES, os.SEEK_END)
            else:
                fh.seek(0)
            tail = fh.read()
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}", 0
    fmt = formats.sniff(head)
    if fmt is None:
        return None, "not an image: its bytes are not JPEG, PNG, GIF or BMP", size
    if fmt not in formats.DECODABLE:  # an image, but not one the training pipeline can decode
        return None, f"unsupported format: {fmt} (convert it to JPEG or PNG)", size
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return None, "corrupt: truncated JPEG (no end-of-image marker)", size
    if fmt == "PNG" and b"IEND" not in tail:
        return None, "corrupt: truncated PNG (no IEND chunk)", size
    if fmt == "BMP" and len(head) < 26:
        return None, "corrupt: BMP header too short", size
    return fmt, None, size


def _walk(root: Path) -> Iterator[os.DirEntry]:
    """All files under root, depth first, in a stable order; follows no directory links."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            continue
        subdirs = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(Path(entry.path))
            elif entry.is_file():
                yield entry
        stack.extend(reversed(subdirs))


def _check(path: Path, root: Path) -> Check:
    class_name = label_for(path, root)
    fmt, problem, size = sniff(path)
    if problem is None and class_name is None:
        problem = "unknown label: neither the name nor a folder says cat or dog"
    return path, class_name, fmt, problem, size


Check = tuple[Path, str | None, str | None, str | None, int]
StatKey = tuple[int, int, int, int]  # size, mtime, ctime (ns), inode: a replaced file differs


class _ScanMemo:
    """Each folder's last checks by file, keyed by the file's stat."""

    def __init__(self, folders: int) -> None:
        self._folders = folders
        self._by_root: OrderedDict[Path, dict[str, tuple[StatKey, Check]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, root: Path) -> dict[str, tuple[StatKey, Check]]:
        with self._lock:
            return self._by_root.get(root, {})

    def put(self, root: Path, checks: dict[str, tuple[StatKey, Check]]) -> None:
        with self._lock:
            self._by_root[root] = checks
            self._by_root.move_to_end(root)
            while len(self._by_root) > self._folders:
                self._by_root.popitem(last=False)


_memo = _ScanMemo(_MEMO_FOLDERS)


def _stat_key(entry: os.DirEntry) -> StatKey | None:
    try:
        st = entry.stat()
    except OSError:
        return None  # gone or unreadable: checked afresh, which says why
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def scan(root: str | os.PathLike[str], workers: int = 16) -> ScanResult:
    """Scan a dataset folder; raises DatasetError only when the folder itself is unusable.

    Files unchanged since this process last scanned the folder (same size, times and inode)
    keep their earlier check instead of being read again.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a folder")
    root = root.resolve()
    known = _memo.get(root)
    keys = [(entry.path, _stat_key(entry)) for entry in _walk(root)]
    todo = [Path(path) for path, key in keys
            if key is None or known.get(path, (None,))[0] != key]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fresh = {str(check[0]): check
                 for check in pool.map(lambda p: _check(p, root), todo, chunksize=256)}
    checks: dict[str, tuple[StatKey, Check]] = {}
    images: list[tuple[str, int, str, str, int]] = []
    skipped: list[tuple[str, str]] = []
    for path, key in keys:
        check = fresh.get(path) or known[path][1]
        if key is not None:
            checks[path] = (key, check)
        _, class_name, fmt, problem, size = check
        if problem:
            skipped.append((path, problem))
        else:
            images.append((path, LABELS[class_name], class_name, fmt, size))
    _memo.put(root, checks)
    result = ScanResult(
        root=root,
        images=pd.DataFrame(images, columns=IMAGE_COLUMNS).astype({"label": "int64"}),
        skipped=pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
    )
    log.debug("scanned %s: %d photos, %d skipped", root, len(result.images), len(result.skipped))
    return result


def require_photos(result: ScanResult, minimum_per_class: int = 1) -> None:
    """Raise DatasetError unless both classes have photos to train on."""
    counts = result.images["class_name"].value_counts()
    missing = [c for c in CLASS_NAMES if counts.get(c, 0) < minimum_per_class]
    if len(result.images) == 0:
        hint = f" ({len(result.skipped)} files skipped)" if len(result.skipped) else ""
        raise DatasetError(
            f"no usable cat or dog photos in {result.root}{hint}; expected files named "
            "cat.N.jpg / dog.N.jpg or folders named Cat/ and Dog/"
        )
    if missing:
        raise DatasetError(
            f"{result.root} needs at least {minimum_per_class} photo(s) of each class; "
            f"too few of: {', '.join(missing)}"
        )


def stratified_sample(df: pd.DataFrame, n: int, seed: int = 42) -> pd.DataFrame:
    """At most n rows keeping the class balance, chosen with a fixed seed."""
    if n >= len(df):
        return df.reset_index(drop=True)
    fraction = n / len(df)
    parts = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in df.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def split_frame(df: pd.DataFrame, val_fraction: float, seed: int = 42
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified (train, validation) split with a fixed seed; both parts get every class."""
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    rng = np.random.default_rng(seed)
    val_index: list[int] = []
    for _, group in df.groupby("label", sort=True):
        idx = group.index.to_numpy().copy()
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) > 1 else 0
        val_index.extend(idx[:n_val].tolist())
    val_mask = df.index.isin(val_index)
    return df[~val_mask].reset_index(drop=True), df[val_mask].reset_index(drop=True)
