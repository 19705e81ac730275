"""JSON API: launch, list, inspect and cancel runs; read their events; health.

Errors are JSON ``{"error": "one sentence"}`` (plus ``fields`` for a 422), never a page or a
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from dashboard import access
from ml.config import TrainConfig, parse_config
from ml.errors import ConfigError
from worker.store import RunStore

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_EVENTS_PER_PAGE = 5000
REDIS_DOWN = ("the job queue (Redis) is not reachable, so the run cannot be queued; "
              "start redis-server (make run does) and try again")


def _store() -> RunStore:
    return current_app.extensions["lab_store"]


def _error(status: int, message: str, **extra: Any):
    return jsonify({"error": message, **extra}), status


def _public(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the API shows it (internal bookkeeping left out)."""
    hidden = {"heartbeat", "client"}
    return {k: v for k, v in run.items() if k not in hidden}


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _error(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(access.Denied)
def _denied(exc: access.Denied):
    return _error(exc.status, exc.message)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("API error")
    return _error(500, "something went wrong on the server; the details are in its log")


class QueueDown(Exception):
    """The run could not be queued (Redis unreachable); nothing was kept."""


def launch(config: TrainConfig) -> dict[str, Any]:
    """Store a new run, queue its training task and announce it; the run as stored.

    Used by the API and the Train form. Raises access.Denied when the caller lacks the
    passcode or has too many runs waiting, and QueueDown, leaving no trace, when Redis
    cannot take the task.
    """
    store = _store()
    access.require_passcode("launching a run")
    access.check_queue_cap(store)
    run, queued = store.create_run(config.to_dict(), client=access.client_id())
    from worker.celery_app import queue_run

    try:
        queue_run(run["id"])
    except Exception as exc:
        log.warning("could not queue run %s: %s", run["id"], exc)
        store.delete_run(run["id"])
        raise QueueDown(str(exc)) from exc
    current_app.extensions["lab_publish"](queued)
    log.info("run %s queued: %s", run["id"], config.to_dict())
    return store.get_run(run["id"]) or run


@bp.post("/runs")
def create_run():
    data = request.get_json(silent=True) if request.content_length else {}
    if data is None:
        return _error(400, "send the run's settings as a JSON object "
                           "(Content-Type: application/json)")
    if not isinstance(data, dict):
        return _error(422, "the run's settings must be a JSON object", fields={})
    try:
        config = parse_config(data)
    except ConfigError as exc:
        return _error(422, str(exc), fields=exc.fields)
    try:
        run = launch(config)
    except QueueDown:
        return _error(503, REDIS_DOWN)
    return jsonify({"id": run["id"], "run": _public(run)}), 202, {
        "Location": f"/api/runs/{run['id']}"}


@bp.get("/runs")
def list_runs():
    return jsonify({"runs": [_public(r) for r in _store().list_runs()]})


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    run = _store().get_run(run_id)
    if run is None:
        return _error(404, f"there is no run {run_id!r}")
    return jsonify(_public(run))


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str):
    store = _store()
    if store.get_run(run_id) is None:
        return _error(404, f"there is no run {run_id!r}")
    try:
        after = _int_arg("after", 0, 0, 2**31)
        limit = _int_arg("limit", MAX_EVENTS_PER_PAGE, 1, MAX_EVENTS_PER_PAGE)
    except ValueError as exc:
        return _error(400, str(exc))
    found = store.events(run_id, after=after, limit=limit)
    return jsonify({"run_id": run_id, "events": found,
                    "last_seq": found[-1]["seq"] if found else after,
                    "more": len(found) == limit})


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str):
    store = _store()
    run = store.get_run(run_id)
    if run is None:
        return _error(404, f"there is no run {run_id!r}")
    if not access.may_cancel(run):
        raise access.Denied(401, access.NEEDS.format(
            what="cancelling a run someone else launched"))
    outcome, ev = store.request_cancel(run_id)
    if outcome == "missing":
        return _error(404, f"there is no run {run_id!r}")
    run = store.get_run(run_id)
    if outcome == "finished":
        return _error(409, f"run {run_id} has already ended ({run['status']})",
                      run=_public(run))
    if ev is not None:
        current_app.extensions["lab_publish"](ev)
    log.info("run %s: cancel requested (%s)", run_id, outcome)
    return jsonify({"id": run_id, "outcome": outcome, "run": _public(run)}), 202


@bp.get("/health")
def health():
    """What is up: the run store, Redis and the workers that announced themselves."""
    report: dict[str, Any] = {}
    try:
        _store().last_seq("")
        report["database"] = "ok"
    except Exception as exc:
        report["database"] = f"unreachable: {exc}"
    try:
        from worker.celery_app import live_workers

        report["workers"] = live_workers()
        report["redis"] = "ok"
    except Exception as exc:
        report["workers"] = []
        report["redis"] = f"unreachable: {exc}"
    report["ok"] = report["database"] == "ok" and report["redis"] == "ok"
    return jsonify(report), 200 if report["ok"] else 503


def _settings():
    return current_app.config["LAB_SETTINGS"]


@bp.get("/dataset/download")
def dataset_download_state():
    """The dataset download's state for the Dataset tab ({} when there has been none)."""
    from worker import downloads

    try:
        state = downloads.read(_settings())
    except Exception:
        return _error(503, "the job queue (Redis) is not reachable, so the download's "
                           "progress is unknown")
    return jsonify(state or {})


@bp.post("/dataset/download")
def dataset_download_start():
    """Queue the dataset download on a worker (into LAB_DATA_DIR)."""
    from ml.data import scan
    from worker import downloads
    from worker.celery_app import app as celery_app
    from worker.tasks import DOWNLOAD_TASK

    access.require_passcode("downloading the dataset")
    data = request.get_json(silent=True) or {}
    source = data.get("source", "auto") if isinstance(data, dict) else "auto"
    if source not in ("auto", "petimages", "kaggle"):
        return _error(422, "source must be auto, petimages or kaggle", fields={
            "source": f"unknown source {source!r}"})
    data_dir = _settings().data_dir
    try:
        if data_dir.is_dir() and len(scan(data_dir).images):
            return _error(409, f"{data_dir} already holds a dataset; the download would not "
                               f"overwrite it")
    except Exception:
        pass  # an unreadable folder: the download reports the real problem
    try:
        if not downloads.start(_settings(), source):
            return _error(409, "a download is already running; its progress is shown here")
        celery_app.send_task(DOWNLOAD_TASK, kwargs={"source": source}, ignore_result=True)
    except Exception as exc:
        log.warning("could not queue the dataset download: %s", exc)
        return _error(503, REDIS_DOWN.replace("the run", "the download"))
    return jsonify(downloads.read(_settings())), 202


@bp.post("/dataset/download/cancel")
def dataset_download_cancel():
    from worker import downloads

    access.require_passcode("cancelling the dataset download")
    if not downloads.request_cancel(_settings()):
        return _error(409, "no download is running")
    return jsonify(downloads.read(_settings())), 202
