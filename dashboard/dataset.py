"""Dataset tab: the scanned photos paged and sorted server-side, their label counts (a seaborn
countplot PNG and a Plotly bar chart), sample photos, skipped files, and the photo routes.

A scan of 25,000 files takes seconds, so it is done once and cached per folder; each request
only sorts (once per order, then cached) and slices the cached DataFrame. The photo routes
serve nothing outside the dataset folder. TensorFlow is never imported here.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flask import Blueprint, abort, current_app, render_template, request, send_file, url_for

from ml.data import CLASS_NAMES, LABELS, ScanResult, scan
from ml.errors import DatasetError

log = logging.getLogger(__name__)

bp = Blueprint("dataset", __name__)

RESCAN_AFTER_S = 60.0
MAX_CACHED_FOLDERS = 4
PER_PAGE_DEFAULT, PER_PAGE_MIN, PER_PAGE_MAX = 50, 10, 200
PER_PAGE_CHOICES = (25, 50, 100, 200)
SORT_COLUMNS = ("image_path", "label", "class_name", "format", "bytes")
SAMPLE_PER_CLASS, SAMPLE_SEED = 6, 42
MAX_SKIPPED_SHOWN = 500
THUMB_PX = 160
THUMB_CACHE_SIZE = 512
COLOURS = {"dog": "#2f6db5", "cat": "#d9622b"}
_IMAGE_MIMETYPES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))
_DIGITS = re.compile(r"(\d+)")


# --------------------------------------------------------------------------- scan cache


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
    samples: list[dict[str, Any]]
    orders: dict[tuple[str, str, int | None], np.ndarray] = field(default_factory=dict)
    countplot: bytes | None = None

    @property
    def version(self) -> str:
        return f"{int(self.scanned_at * 1000):x}"


_cache: OrderedDict[str, Snapshot] = OrderedDict()
_cache_lock = threading.Lock()  # guards _cache and _refreshing
_scan_lock = threading.Lock()  # one scan at a time: they compete for the same disk anyway
_plot_lock = threading.Lock()  # matplotlib is not thread-safe
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


def _inside(root: str, path: str) -> bool:
    return path != root and os.path.commonpath([root, path]) == root


def _samples(table: pd.DataFrame) -> list[dict[str, Any]]:
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
    return [_row(r) for r in chosen.sort_values(["label", "_pos"]).to_dict("records")]


def _build(root: str) -> Snapshot:
    subdirs = _subdirs(root)
    signature = _signature(root, subdirs)  # taken first: changes during the scan re-scan
    started = time.monotonic()
    result: ScanResult = scan(root)
    root = str(result.root)
    images = result.images.copy()
    images["rel"] = _rel(images["image_path"], root)
    keys = [_natural_key(r) for r in images["rel"]]
    table = images.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)
    table["_pos"] = np.arange(len(table))
    # A file link pointing outside the folder is scanned but never served (see _resolve).
    served = [not os.path.islink(p) or _inside(root, os.path.realpath(p))
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


def _positions(snap: Snapshot, sort: str, order: str, label: int | None) -> np.ndarray:
    """Row positions in the wanted order, computed once per (sort, order, label) and scan."""
    key = (sort, order, label)
    found = snap.orders.get(key)
    if found is not None:
        return found
    table = snap.table
    if sort == "image_path":
        pos = np.arange(len(table))
        if order == "desc":
            pos = pos[::-1]
    else:  # ties stay in path order whichever way the column goes
        pos = table.sort_values([sort, "_pos"], ascending=[order == "asc", True],
                                kind="stable").index.to_numpy()
    if label is not None:
        pos = pos[table["label"].to_numpy()[pos] == label]
    snap.orders[key] = pos  # a race only computes the same array twice
    return pos


# --------------------------------------------------------------------------- paths


def _data_root() -> str | None:
    """Realpath of the configured dataset folder, or None when there is none."""
    data_dir = getattr(current_app.config["LAB_SETTINGS"], "data_dir", None)
    if not data_dir:
        return None
    root = os.path.realpath(data_dir)
    return root if os.path.isdir(root) else None


def _resolve(root: str, rel: str) -> str | None:
    """The regular file ``rel`` names inside ``root`` after following every link, else None.

    realpath collapses ``..``, absolute paths (join drops root) and symlinks, so one
    containment check on the result covers them all; Werkzeug has already decoded %2e%2e.
    """
    if not rel or "\x00" in rel:
        return None
    try:
        target = os.path.realpath(os.path.join(root, rel))
        if not _inside(root, target):
            return None
        return target if stat.S_ISREG(os.stat(target).st_mode) else None
    except (OSError, ValueError):
        return None


def _relative_to(path: str, base: str | os.PathLike[str]) -> str | None:
    path, base = os.path.normpath(path), os.path.normpath(base)
    if not (os.path.isabs(path) and os.path.isabs(base)):
        return None
    try:
        return os.path.relpath(path, base) if _inside(base, path) else None
    except ValueError:
        return None


def photo_rel(image_path: str, data_dir: str | None = None) -> str | None:
    """The path under this web process's dataset folder of a photo named by absolute path.

    ``data_dir`` is the root the path was recorded under (a worker may mount the dataset
    elsewhere): the part below it is looked up here. None when the photo is not here.
    Needs an app context.
    """
    root = _data_root()
    if root is None or not image_path:
        return None
    candidates = []
    if data_dir:
        candidates.append(_relative_to(image_path, data_dir))
    candidates.append(_relative_to(image_path, root))
    try:
        candidates.append(_relative_to(os.path.realpath(image_path), root))
    except (OSError, ValueError):
        pass
    for rel in candidates:
        if rel and _resolve(root, rel) is not None:
            return rel.replace(os.sep, "/")
    return None


# --------------------------------------------------------------------------- helpers


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MB"


def _printable(text: str) -> tuple[str, bool]:
    """Text for the page and whether it is plain UTF-8 (undecodable names get no link)."""
    try:
        text.encode("utf-8")
        return text, True
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), False


def _row(record: dict[str, Any]) -> dict[str, Any]:
    shown, plain = _printable(record["rel"])
    return {"rel": record["rel"], "shown": shown, "linkable": plain and record["served"],
            "label": int(record["label"]), "class_name": record["class_name"],
            "format": record["format"], "bytes": int(record["bytes"]),
            "size": _human_bytes(int(record["bytes"]))}


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, ""))
    except ValueError:
        return default
    return min(max(value, low), high)


def _query() -> dict[str, Any]:
    """Sort, order, label filter and page size from the query; anything odd means default."""
    sort = request.args.get("sort", "image_path")
    order = request.args.get("order", "asc")
    label_arg = request.args.get("label", "").strip().lower()
    label = {"dog": "dog", "cat": "cat", "0": "dog", "1": "cat"}.get(label_arg)
    return {
        "sort": sort if sort in SORT_COLUMNS else "image_path",
        "order": order if order in ("asc", "desc") else "asc",
        "label": label,
        "per_page": _int_arg("per_page", PER_PAGE_DEFAULT, PER_PAGE_MIN, PER_PAGE_MAX),
    }


def _problem(data_dir: Any, message: str | None) -> dict[str, str]:
    if not data_dir:
        return {"title": "No dataset folder is configured",
                "detail": "This lab does not know where the photos are."}
    if message:
        title = ("The dataset folder is missing" if not os.path.exists(data_dir) else
                 "The dataset path is not a folder" if not os.path.isdir(data_dir) else
                 "The dataset folder cannot be read")
        return {"title": title, "detail": message[0].upper() + message[1:] + "."}
    return {"title": "The dataset folder has no photos",
            "detail": f"No usable cat or dog photos were found in {data_dir}."}


# --------------------------------------------------------------------------- routes


@bp.get("/dataset")
def index():
    data_dir = getattr(current_app.config["LAB_SETTINGS"], "data_dir", None)
    snap, message = None, None
    if data_dir:
        try:
            snap = snapshot(data_dir)
        except DatasetError as exc:
            message = str(exc)
    scanned = (time.strftime("%H:%M:%S", time.localtime(snap.scanned_at))
               if snap is not None else None)
    if snap is None or snap.table.empty:
        skipped = _skipped_rows(snap) if snap is not None else []
        return render_template("dataset.html", tab="dataset", data_dir=data_dir,
                               problem=_problem(data_dir, message), snap=snap,
                               skipped=skipped, scanned=scanned)

    q = _query()
    label = LABELS[q["label"]] if q["label"] else None
    pos = _positions(snap, q["sort"], q["order"], label)
    per_page = q["per_page"]
    pages = max(1, -(-len(pos) // per_page))
    page = _int_arg("page", 1, 1, pages)
    start = (page - 1) * per_page
    rows = [_row(r) for r in snap.table.iloc[pos[start:start + per_page]].to_dict("records")]
    for i, row in enumerate(rows, start=start + 1):
        row["n"] = i

    def link(**changes: Any) -> str:
        """This page's URL with some query values changed (defaults left out)."""
        args = {**q, "page": page, **changes}
        args = {k: v for k, v in args.items()
                if v is not None and v != {"sort": "image_path", "order": "asc", "page": 1,
                                           "per_page": PER_PAGE_DEFAULT}.get(k)}
        return url_for("dataset.index", **args) + "#photos"

    s = snap.summary
    total = max(1, s["total"])
    counts = {"total": s["total"], "cats": s["cats"], "dogs": s["dogs"],
              "skipped": s["skipped"], "cat_share": f"{100 * s['cats'] / total:.1f} %",
              "dog_share": f"{100 * s['dogs'] / total:.1f} %"}
    return render_template(
        "dataset.html", tab="dataset", data_dir=data_dir, problem=None, snap=snap,
        counts=counts, rows=rows, q=q, page=page, pages=pages, matching=len(pos),
        first=start + 1 if rows else 0, last=start + len(rows), link=link,
        skipped=_skipped_rows(snap), samples=snap.samples, colours=COLOURS,
        per_page_choices=sorted({*PER_PAGE_CHOICES, per_page}), scanned=scanned,
    )


def _skipped_rows(snap: Snapshot) -> list[dict[str, str]]:
    return [{"shown": _printable(r["rel"])[0], "reason": r["reason"]}
            for r in snap.skipped.head(MAX_SKIPPED_SHOWN).to_dict("records")]


def _render_countplot(snap: Snapshot) -> bytes:
    """The notebook's ``sns.countplot`` of the labels, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # a web server has no display; Figure below needs no pyplot
    import seaborn as sns
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=110)
    ax = fig.add_subplot()
    classes = list(CLASS_NAMES)
    sns.countplot(data=snap.table[["class_name"]], x="class_name", order=classes,
                  hue="class_name", hue_order=classes, palette=COLOURS, saturation=1,
                  legend=False, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="{:,.0f}", padding=3, fontsize=12)
    ax.set_xlabel("class (label 0 = dog, 1 = cat)", fontsize=12)
    ax.set_ylabel("photos", fontsize=12)
    ax.tick_params(labelsize=12)
    ax.margins(y=0.12)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@bp.get("/dataset/countplot.png")
def countplot():
    data_dir = getattr(current_app.config["LAB_SETTINGS"], "data_dir", None)
    try:
        snap = snapshot(data_dir) if data_dir else None
    except DatasetError:
        snap = None
    if snap is None or snap.table.empty:
        abort(404, "There are no photos to count: see the Dataset tab.")
    if snap.countplot is None:
        with _plot_lock:
            if snap.countplot is None:
                snap.countplot = _render_countplot(snap)
    return send_file(io.BytesIO(snap.countplot), mimetype="image/png", etag=snap.version,
                     max_age=0)


def _photo_file(rel: str) -> str:
    root = _data_root()
    path = _resolve(root, rel) if root else None
    if path is None:
        abort(404, "There is no such photo in the dataset folder.")
    return path


@bp.get("/photos/<path:rel>")
def photo(rel: str):
    path = _photo_file(rel)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:  # removed or unreadable since it was checked
        abort(404, "There is no such photo in the dataset folder.")
    mimetype = next((m for magic, m in _IMAGE_MIMETYPES if head.startswith(magic)), None)
    # Only real images are shown inline; anything else (an HTML file?) is a download.
    response = send_file(path, mimetype=mimetype or "application/octet-stream",
                         as_attachment=mimetype is None, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


_thumbs: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_thumbs_lock = threading.Lock()


def _make_thumb(path: str) -> bytes | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a fraction
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "P", "PA"):
                img = img.convert("RGBA")
                flat = Image.new("RGB", img.size, (255, 255, 255))
                flat.paste(img, mask=img.getchannel("A"))
                img = flat
            img = img.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=82, optimize=True)
            return buf.getvalue()
    except Exception as exc:  # corrupt, truncated, not an image, decompression bomb...
        log.debug("no thumbnail for %s: %s", path, exc)
        return None


@bp.get("/photos/thumb/<path:rel>")
def thumb(rel: str):
    path = _photo_file(rel)
    try:
        st = os.stat(path)
    except OSError:
        abort(404, "There is no such photo in the dataset folder.")
    key = (path, st.st_mtime_ns, st.st_size)
    with _thumbs_lock:
        data = _thumbs.get(key)
        if data is not None:
            _thumbs.move_to_end(key)
    if data is None:
        data = _make_thumb(path)
        if data is None:
            abort(404, "This file cannot be decoded as a photo.")
        with _thumbs_lock:
            _thumbs[key] = data
            while len(_thumbs) > THUMB_CACHE_SIZE:
                _thumbs.popitem(last=False)
    response = send_file(io.BytesIO(data), mimetype="image/jpeg", max_age=3600,
                         etag=f"{st.st_mtime_ns:x}-{st.st_size:x}", last_modified=st.st_mtime)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
