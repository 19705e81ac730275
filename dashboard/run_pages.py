"""Runs tab: every run; one run's live or replayed page; overlays; model downloads."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, render_template, request, send_file

from core.store import STATUSES, RunStore
from dashboard import access, run_query
from dashboard.helpers import lab_settings, run_service, sentence
from dashboard.paths import file_inside, photo_rel
from ml.panel import PANEL_FOLDER
from ml.recipes import RECIPES

bp = Blueprint("runs", __name__)

MAX_OVERLAY = 8


def _store() -> RunStore:
    return run_service().store


def model_file(run: dict[str, Any]) -> Path | None:
    """The run's saved model, only if it lies inside the models folder."""
    return file_inside(lab_settings().models_dir, run.get("model_path") or "")


def _misclassified(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Misclassified validation photos that this web process can show."""
    summary = run.get("summary") or {}
    wrong = (summary.get("validation") or {}).get("misclassified", [])
    if not wrong:
        return []
    found = []
    for item in wrong:
        rel = photo_rel(item["image_path"], summary.get("data_dir"))
        if rel is not None:
            found.append({**item, "rel": rel, "name": os.path.basename(item["image_path"])})
    return found


@bp.get("/runs")
def index():
    """The runs, a page at a time, filtered and sorted by the query (dashboard.run_query):
    only this browser's by default once it has launched one."""
    store = _store()
    view, problems = run_query.parse(request.args, mine_default=run_query.has_launched(store),
                                    paged=True, lenient=True)
    if view.archived and not access.unlocked():
        problems.append("archived runs are shown only to the instructor: unlock the lab first")
        view = dataclasses.replace(view, archived=False)
    runs, total = run_query.find(store, view)
    pages = max(1, math.ceil(total / (view.per_page or run_query.PER_PAGE)))
    if view.page > pages:  # an old link past the last page: show the last one
        view = dataclasses.replace(view, page=pages)
        runs, total = run_query.find(store, view)
    for run in runs:
        run["has_model"] = model_file(run) is not None
        run["mine"] = access.owns(run)
    filtered = bool(view.mine or view.by or view.statuses or view.recipe)
    return render_template(
        "runs.html", tab="runs", runs=runs, total=total, view=view, pages=pages,
        page_links=run_query.page_links(view.page, pages), filtered=filtered,
        problems=[sentence(p) for p in problems], statuses=STATUSES, recipes=RECIPES,
        owners=store.owner_names(include_archived=view.archived),
        sorts=run_query.SORT_LABELS, instructor=access.is_instructor(),
        flags=run_service().flags.state())


def _run_context(run_id: str) -> dict[str, Any]:
    """What run.html and its result partial are rendered with (a 404 if there is no run)."""
    run = _store().get_run(run_id)
    if run is None:
        abort(404, f"There is no run {run_id}. It may have been started on another lab.")
    run["mine"] = access.owns(run)
    has_model = model_file(run) is not None
    return {"tab": "runs", "run": run, "recipe": RECIPES.get(run["config"].get("recipe")),
            "has_model": has_model, "can_cancel": access.may_cancel(run),
            # It finished with a model that is no longer there (deleted or moved by hand).
            "model_missing": bool(run.get("model_path")) and not has_model,
            "misclassified": _misclassified(run)}


@bp.get("/runs/<run_id>")
def detail(run_id: str):
    return render_template("run.html", **_run_context(run_id))


@bp.get("/runs/<run_id>/result")
def result(run_id: str):
    """Just the result section (#run-result), for a run page that watched the run end."""
    return render_template("_run_result.html", **_run_context(run_id))


@bp.get("/runs/<run_id>/model.keras")
def download(run_id: str):
    run = _store().get_run(run_id)
    path = model_file(run) if run else None
    if path is None:
        abort(404, "This run has no saved model (it did not finish, or it failed).")
    return send_file(path, as_attachment=True, download_name=f"kitten-puppy-{run_id}.keras",
                     mimetype="application/octet-stream")


@bp.get("/runs/<run_id>/panel/<int:number>.png")
def panel_heatmap(run_id: str, number: int):
    """One Grad-CAM heat-map of the run's panel (ml.panel), from the run's folder."""
    run = _store().get_run(run_id)
    model = model_file(run) if run else None
    path = file_inside(model.parent, f"{PANEL_FOLDER}/{number:02d}.png") if model else None
    if path is None:
        abort(404, "This run has no such heat-map (it did not finish, or its files were "
                   "removed).")
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.get("/runs/compare")
def compare():
    """Up to MAX_OVERLAY ticked runs' curves on one chart; a page that says why otherwise."""
    asked = list(dict.fromkeys(i for i in request.args.getlist("ids") if i))
    runs = [r for r in (_store().get_run(i) for i in asked[:MAX_OVERLAY]) if r is not None]
    missing = len([i for i in asked[:MAX_OVERLAY] if i not in {r["id"] for r in runs}])
    return render_template("compare.html", tab="runs", runs=runs, asked=len(asked),
                           left_out=max(0, len(asked) - MAX_OVERLAY), missing=missing,
                           max_overlay=MAX_OVERLAY)
