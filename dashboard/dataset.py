"""Dataset tab: the scanned photos paged and sorted, their label counts, samples, skipped files."""

from __future__ import annotations

import io
import os
import threading
import time
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, send_file, url_for

from dashboard.helpers import int_arg, lab_settings, sentence
from dashboard.scan_cache import Snapshot, snapshot
from ml.data import CLASS_NAMES, LABELS
from ml.errors import DatasetError

bp = Blueprint("dataset", __name__)

PER_PAGE_DEFAULT, PER_PAGE_MIN, PER_PAGE_MAX = 50, 10, 200
PER_PAGE_CHOICES = (25, 50, 100, 200)
SORT_COLUMNS = ("image_path", "label", "class_name", "format", "bytes")
MAX_SKIPPED_SHOWN = 500
COLOURS = {"dog": "#2f6db5", "cat": "#d9622b"}
_plot_lock = threading.Lock()  # matplotlib is not thread-safe


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


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


def _query() -> dict[str, Any]:
    """Sort, order, label filter and page size from the query; anything odd means default."""
    sort = request.args.get("sort", "image_path")
    order = request.args.get("order", "asc")
    label_arg = request.args.get("label", "").strip().lower()
    label = {"dog": "dog", "cat": "cat", "0": "dog", "1": "cat"}.get(label_arg)
    per_page = int_arg("per_page", PER_PAGE_DEFAULT, PER_PAGE_MIN, PER_PAGE_MAX, lenient=True)
    return {"sort": sort if sort in SORT_COLUMNS else "image_path",
            "order": order if order in ("asc", "desc") else "asc", "label": label,
            "per_page": per_page}


def _scan() -> tuple[Any, Snapshot | None, str | None]:
    """The configured dataset folder, its cached scan, and why there is none (an error)."""
    data_dir = getattr(lab_settings(), "data_dir", None)
    try:
        return data_dir, (snapshot(data_dir) if data_dir else None), None
    except DatasetError as exc:
        return data_dir, None, str(exc)


def _problem(data_dir: Any, message: str | None) -> dict[str, str]:
    if not data_dir:
        return {"title": "No dataset folder is configured",
                "detail": "This lab does not know where the photos are."}
    if message:
        title = ("The dataset folder is missing" if not os.path.exists(data_dir) else
                 "The dataset path is not a folder" if not os.path.isdir(data_dir) else
                 "The dataset folder cannot be read")
        return {"title": title, "detail": sentence(message)}
    return {"title": "The dataset folder has no photos",
            "detail": f"No usable cat or dog photos were found in {data_dir}."}


@bp.get("/dataset")
def index() -> str:
    """The tab: counts, charts, sample photos, one page of the photo table, skipped files."""
    data_dir, snap, message = _scan()
    scanned = time.strftime("%H:%M:%S", time.localtime(snap.scanned_at)) if snap else None
    if snap is None or snap.table.empty:
        skipped = _skipped_rows(snap) if snap is not None else []
        return render_template("dataset.html", tab="dataset", data_dir=data_dir,
                               problem=_problem(data_dir, message), snap=snap,
                               skipped=skipped, scanned=scanned)

    q = _query()
    label = LABELS[q["label"]] if q["label"] else None
    pos = snap.positions(q["sort"], q["order"], label)
    per_page = q["per_page"]
    pages = max(1, -(-len(pos) // per_page))
    page = int_arg("page", 1, 1, pages, lenient=True)  # past the end means the last page
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
        skipped=_skipped_rows(snap), colours=COLOURS, scanned=scanned,
        samples=[_row(r) for r in snap.samples.to_dict("records")],
        per_page_choices=sorted({*PER_PAGE_CHOICES, per_page}),
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
def countplot() -> Response:
    """The label countplot PNG, drawn once per scan."""
    _, snap, _ = _scan()
    if snap is None or snap.table.empty:
        abort(404, "There are no photos to count: see the Dataset tab.")
    if snap.countplot is None:
        with _plot_lock:
            if snap.countplot is None:
                snap.countplot = _render_countplot(snap)
    return send_file(io.BytesIO(snap.countplot), mimetype="image/png", etag=snap.version,
                     max_age=0)
