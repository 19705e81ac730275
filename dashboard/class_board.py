"""What the class's views show, as the API sends it (``/api/home``, ``/api/leaderboard``,
``/api/class`` in ``dashboard.api``): the home page's state, the leaderboard and every
finished run's settings.

The store's reads are ``core.class_view``'s and the ranking ``core.ranking``'s; this adds
what needs the request: which rows are the viewer's, and the links.
"""

from __future__ import annotations

from typing import Any

from flask import url_for

from core import class_view
from core.ranking import accuracy_floor, standings, val_photos
from dashboard import access
from dashboard.filters import image_px, learning_rate_value
from dashboard.helpers import run_service

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


def leaderboard() -> list[dict[str, Any]]:
    """Each person's best finished run, best first, with its rank (equal rank for an equal
    accuracy on as many photos)."""
    me = access.owner_id(create=False)
    entries: list[dict[str, Any]] = []
    for standing in standings(class_view.finished_runs(run_service().store)):
        run = standing.run
        photos = val_photos(run)
        entries.append({
            "rank": standing.rank, "name": standing.name or NO_NAME,
            "named": standing.name is not None,
            "mine": bool(me) and run["owner"] == me, "run_id": run["id"],
            "url": url_for("runs.detail", run_id=run["id"]),
            "accuracy": run["best_val_accuracy"], "val_photos": photos,
            "accuracy_floor": accuracy_floor(run["best_val_accuracy"], photos),
            "finished": run["finished"], "finished_runs": standing.finished_runs,
            **_settings(run)})
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
