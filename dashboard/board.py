"""The class's views: the home page, the leaderboard and what the class learned, with the
API beside each (``/api/home``, ``/api/leaderboard``, ``/api/class``).

The pages are shells that static/board.js fills from the API and keeps fresh: the
leaderboard and the home page poll their JSON every few seconds (the Socket.IO channel has
rooms per run only, no lab-wide one), and the home page follows the live run through that
run's room like the run page does.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, render_template, request, url_for

from core import class_view
from dashboard import access
from dashboard.filters import image_px, learning_rate_value
from dashboard.helpers import run_service
from dashboard.predict import accuracy_floor, val_photos

log = logging.getLogger(__name__)

bp = Blueprint("board", __name__)

NO_NAME = "no name"
HOME_TOP = 5  # leaderboard rows on the home page
HOME_QUEUE = 5  # queued runs listed on the home page


def _name(run: dict[str, Any]) -> str:
    return run.get("owner_name") or NO_NAME


def _settings(run: dict[str, Any]) -> dict[str, Any]:
    """The settings that got a run where it is, as numbers (a recipe's own when not set)."""
    config = run["config"]
    return {"recipe": run.get("recipe") or config.get("recipe"),
            "image_px": image_px(config), "learning_rate": learning_rate_value(config),
            "epochs": config.get("epochs"), "batch_size": config.get("batch_size"),
            "augment": bool(config.get("augment")), "schedule": config.get("schedule"),
            "label_smoothing": config.get("label_smoothing"),
            # progressive resizing: the first epochs' smaller photos (None: full size only)
            "small_image_px": config.get("small_image_size"),
            "small_epochs": config.get("small_epochs") or 0}


def _rank_key(run: dict[str, Any]) -> tuple[float, float, float]:
    # Best accuracy first; at equal accuracy the one measured on more photos (what Predict's
    # default weighs), then whoever got there first.
    accuracy = run["best_val_accuracy"]
    return (-accuracy, -accuracy_floor(accuracy, val_photos(run)), run["finished"] or 0.0)


def leaderboard() -> list[dict[str, Any]]:
    """Each person's best finished run, best first, with its rank (equal rank for an equal
    accuracy on as many photos)."""
    best: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for run in class_view.finished_runs(run_service().store):
        who = run["owner"] or f"run:{run['id']}"  # runs from before owners: each its own
        counts[who] = counts.get(who, 0) + 1
        if run["owner_name"]:
            names[who] = run["owner_name"]  # the name they gave last (runs come in order)
        if who not in best or _rank_key(run) < _rank_key(best[who]):
            best[who] = run
    me = access.owner_id(create=False)
    entries: list[dict[str, Any]] = []
    previous: tuple[float, float] | None = None
    for n, (who, run) in enumerate(sorted(best.items(), key=lambda item: _rank_key(item[1])),
                                   start=1):
        key = _rank_key(run)[:2]
        rank = entries[-1]["rank"] if key == previous else n
        previous = key
        photos = val_photos(run)
        entries.append({
            "rank": rank, "name": names.get(who) or NO_NAME, "named": who in names,
            "mine": bool(me) and run["owner"] == me, "run_id": run["id"],
            "url": url_for("runs.detail", run_id=run["id"]),
            "accuracy": run["best_val_accuracy"], "val_photos": photos,
            "accuracy_floor": accuracy_floor(run["best_val_accuracy"], photos),
            "finished": run["finished"], "finished_runs": counts[who], **_settings(run)})
    return entries


def class_rows() -> list[dict[str, Any]]:
    """One row per finished run: its settings and its best validation accuracy."""
    return [{"run_id": run["id"], "name": _name(run),
             "url": url_for("runs.detail", run_id=run["id"]),
             "accuracy": run["best_val_accuracy"], "val_photos": val_photos(run),
             **_settings(run)}
            for run in class_view.finished_runs(run_service().store)]


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    """What the home page says about a queued or running run."""
    return {"run_id": run["id"], "name": _name(run), "named": bool(run.get("owner_name")),
            "status": run["status"],
            "url": url_for("runs.detail", run_id=run["id"]),
            "queue_position": run.get("queue_position"), "started": run["started"],
            "epochs_done": run["epochs_done"], "best_val_accuracy": run["best_val_accuracy"],
            **_settings(run)}


def home_state() -> dict[str, Any]:
    """The live run (the viewer's own running run if any: the projector is usually the
    instructor's browser, and the store does not record who held the passcode; else the
    most recently started one), the queue, the top of the leaderboard, and which empty state
    applies: ``no_runs``, ``all_failed`` or none."""
    store = run_service().store
    running = class_view.running_runs(store)
    me = access.owner_id(create=False)
    live = next((r for r in running if me and r["owner"] == me), running[0] if running else None)
    upcoming, waiting = class_view.next_in_queue(store, HOME_QUEUE)
    counts = class_view.status_counts(store)
    total = sum(counts.values())
    empty = None
    if total == 0:
        empty = "no_runs"
    elif counts.get("failed", 0) == total:
        empty = "all_failed"
    last_failed = class_view.latest_run(store, "failed") if empty == "all_failed" else None
    return {"live": _brief(live) if live else None, "running": len(running),
            "queue": {"waiting": waiting, "next": [_brief(r) for r in upcoming],
                      "paused": run_service().flags.queue_paused()},
            "top": leaderboard()[:HOME_TOP], "counts": counts, "empty": empty,
            "last_failed_url": url_for("runs.detail", run_id=last_failed["id"])
            if last_failed else None}


def _fresh(body: dict[str, Any]):
    """JSON that browsers revalidate on every poll: an unchanged board costs a 304."""
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-cache"
    resp.add_etag()
    return resp.make_conditional(request)


@bp.get("/")
def home():
    return render_template("home.html", tab="home")


@bp.get("/leaderboard")
def leaderboard_page():
    return render_template("leaderboard.html", tab="leaderboard")


@bp.get("/class")
def class_page():
    return render_template("class.html", tab="class")


@bp.get("/api/home")
def api_home():
    return _fresh(home_state())


@bp.get("/api/leaderboard")
def api_leaderboard():
    return _fresh({"entries": leaderboard()})


@bp.get("/api/class")
def api_class():
    return _fresh({"runs": class_rows()})
