"""Predict tab, and the predictions ``POST /api/predict`` answers: cat or dog, with
confidence and a Grad-CAM overlay, from the surest model unless one is picked.

TensorFlow is imported here only when the first photo arrives, never at start-up.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections import OrderedDict
from typing import Any

from flask import Blueprint, current_app, render_template
from werkzeug.datastructures import FileStorage

from core.ranking import accuracy_floor, val_photos
from core.store import RunStore
from dashboard.helpers import run_service, sentence
from dashboard.run_pages import model_file
from ml.errors import ImageError, LabError

log = logging.getLogger(__name__)

bp = Blueprint("predict", __name__)

MAX_FILES = 16
MODEL_CACHE_SIZE = 3
_models: OrderedDict[str, Any] = OrderedDict()
_models_lock = threading.Lock()
_predict_lock = threading.Lock()  # one Grad-CAM at a time: they share the CPU anyway


def usable_runs(store: RunStore) -> list[dict[str, Any]]:
    """Runs with a saved model, surest first: the first is Predict's default model.

    Ranked by the lower bound of their validation accuracy, not the accuracy itself, which
    on a handful of validation photos is often a lucky 100 %.
    """
    runs = [r for r in store.list_runs() if r["status"] in ("succeeded", "cancelled")
            and model_file(r) is not None]
    for run in runs:
        run["val_photos"] = val_photos(run)
    return sorted(runs, key=lambda r: (-accuracy_floor(r["best_val_accuracy"], r["val_photos"]),
                                       -(r["best_val_accuracy"] or 0)))


WEAK_BELOW = 0.6  # a model scoring under this on validation is barely better than a coin
FEW_VAL_PHOTOS = 20  # a score on fewer photos than this is a test run's, not a measure


def is_weak(run: dict[str, Any]) -> bool:
    """A model worth offering last: a low score, or one measured on a handful of photos."""
    return (run["best_val_accuracy"] or 0) < WEAK_BELOW or \
        (run.get("val_photos") or 0) < FEW_VAL_PHOTOS


def model_groups(runs: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Predict's model picker: one group per owner (the owner of the surest model first),
    then the weak and test models, each list in the order ``runs`` ranks them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    weak: list[dict[str, Any]] = []
    for run in runs:
        if is_weak(run):
            weak.append(run)
        else:
            groups.setdefault(f"By {run.get('owner_name') or 'no name'}", []).append(run)
    found = list(groups.items())
    if weak:
        found.append((f"Weak or test models (under {WEAK_BELOW:.0%} or checked on fewer "
                      f"than {FEW_VAL_PHOTOS} photos)", weak))
    return found


def no_model_reason(store: RunStore) -> str:
    """Why Predict has no model to offer, in a sentence for the page."""
    runs = store.list_runs()
    if not runs:
        return "No one has trained a model in this lab yet."
    by_status: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_status.setdefault(run["status"], []).append(run)
    active = len(by_status.get("queued", [])) + len(by_status.get("running", []))
    finished = by_status.get("succeeded", []) + by_status.get("cancelled", [])
    if active:
        return (f"{active} run{'s are' if active != 1 else ' is'} still training or waiting; "
                "a model is ready here as soon as one finishes.")
    if finished:
        return (f"The model files of the {len(finished)} finished run"
                f"{'s are' if len(finished) != 1 else ' is'} gone from the models folder "
                "(deleted or moved), so none can answer.")
    failed = by_status.get("failed", [])
    last = failed[0].get("error") if failed else None  # newest first
    text = f"No model is ready: all {len(runs)} run{'s' if len(runs) != 1 else ''} so far failed."
    return text + (f" The last one said: {sentence(last)}" if last else "")


def _loaded(run: dict[str, Any]):
    from ml.model_io import load_model
    from ml.tf_env import import_tensorflow_quietly

    with _models_lock:
        if run["id"] in _models:
            _models.move_to_end(run["id"])
            return _models[run["id"]]
        import_tensorflow_quietly()
        loaded = load_model(model_file(run))
        _models[run["id"]] = loaded
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
        return loaded


def display_name(filename: str | None) -> str:
    """The name a person gave the file, for showing back: no folders, no control
    characters, not endless. (Pages escape it; this only keeps it readable.)"""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "photo"


@bp.get("/predict")
def index():
    """The Predict tab: drop photos, pick a model."""
    store = run_service().store
    runs = usable_runs(store)
    return render_template("predict.html", tab="predict", runs=runs, groups=model_groups(runs),
                           no_model=None if runs else no_model_reason(store),
                           default_id=runs[0]["id"] if runs else None, max_files=MAX_FILES,
                           max_mb=current_app.config["MAX_CONTENT_LENGTH"] // 2**20)


def answer(run: dict[str, Any], files: list[FileStorage]) -> tuple[dict[str, Any], int]:
    """Each photo's prediction by the run's model, and the status the answer deserves."""
    try:
        loaded = _loaded(run)
    except LabError as exc:
        return {"error": str(exc)}, 500

    from ml.predict import explain_bytes

    results = []
    for upload in files:
        name = display_name(upload.filename)
        data = upload.read()
        try:
            with _predict_lock:
                out = explain_bytes(loaded, data)
        except ImageError as exc:
            results.append({"filename": name, "error": str(exc), "status": exc.status})
            continue
        results.append({
            "filename": name, "label": out["label"], "confidence": out["confidence"],
            "cat_probability": out["cat_probability"], "format": out["format"],
            "width": out["size"][0], "height": out["size"][1], "notes": out["notes"],
            "heatmap": "data:image/png;base64," + base64.b64encode(out["overlay_png"]).decode(),
        })
    body: dict[str, Any] = {
        "model": {"run_id": run["id"], "recipe": run["config"]["recipe"],
                  "image_size": loaded.image_size,
                  "best_val_accuracy": run["best_val_accuracy"]},
        "results": results}
    if any("error" not in r for r in results):
        return body, 200
    # Every photo was refused: one shared reason gives its own status (415, 413...).
    statuses = {r["status"] for r in results}
    body["error"] = results[0]["error"] if len(results) == 1 else \
        "none of these photos could be read: see each one's message"
    return body, statuses.pop() if len(statuses) == 1 else 422
