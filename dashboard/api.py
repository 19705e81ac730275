"""The JSON API, every ``/api/...`` route: runs (launch, list, inspect, events, cancel),
the instructor's controls (queue, launching, archive), the class's views (home, leaderboard,
class), predict, the dataset download, health.

Errors are JSON ``{"error": "one sentence"}`` (plus ``fields`` for a 422), never a page or a
traceback. Runs change only through the runs service.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import HTTPException

from core import downloads
from core.run_service import QueueDown
from core.store import StoreBusy
from dashboard import access, class_board, predict, run_query
from dashboard.helpers import (
    STORE_RETRY_AFTER_S,
    BadArgument,
    int_arg,
    json_body,
    json_error,
    lab_settings,
    run_service,
)
from dashboard.launching import REDIS_DOWN, launch
from dashboard.security import SAFE_METHODS, CrossSite
from ml.config import parse_config
from ml.errors import ConfigError

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_EVENTS_PER_PAGE = 5000
# Bookkeeping a run's API answer leaves out: who launched it from where is for the caps.
HIDDEN = ("heartbeat", "launched_from", "last_seq", "owner")


def public(run: dict[str, Any], *, history: bool = True) -> dict[str, Any]:
    """A run as the API shows it (internal bookkeeping left out; the epoch history only
    where one run is asked for, since a list of hundreds of runs would carry all of theirs)."""
    shown = {k: v for k, v in run.items() if k not in HIDDEN}
    shown["mine"] = access.owns(run)
    if not history and shown.get("summary"):
        shown["summary"] = {k: v for k, v in shown["summary"].items() if k != "history"}
    return shown


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return json_error(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(access.Denied)
def _denied(exc: access.Denied):
    return json_error(exc.status, exc.message)


@bp.errorhandler(CrossSite)
def _cross_site(exc: CrossSite):
    return json_error(403, str(exc))


@bp.errorhandler(BadArgument)
def _bad_argument(exc: BadArgument):
    return json_error(400, str(exc))


@bp.errorhandler(StoreBusy)
def _store_busy(exc: StoreBusy):
    resp, status = json_error(503, str(exc))
    return resp, status, {"Retry-After": str(STORE_RETRY_AFTER_S)}


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("API error")
    return json_error(500, "something went wrong on the server; the details are in its log")


@bp.before_request
def _read_json_body():
    # Every write's JSON body is read before its view runs, so one that cannot be read (bad
    # JSON, nested too deeply, too large) gets its 400 or 413 on any route, used or not.
    if request.method not in SAFE_METHODS and request.is_json:
        json_body()


# -- runs -------------------------------------------------------------------------------------


@bp.post("/runs")
def create_run():
    """Launch a run: 202 with the queued run."""
    data = json_body()
    if data is None:
        return json_error(400, "send the run's settings as a JSON object "
                               "(Content-Type: application/json)")
    if not isinstance(data, dict):
        return json_error(422, "the run's settings must be a JSON object", fields={})
    try:
        config = parse_config(data)
    except ConfigError as exc:
        return json_error(422, str(exc), fields=exc.fields)
    try:
        run = launch(config)
    except QueueDown:
        return json_error(503, REDIS_DOWN)
    return jsonify({"id": run["id"], "run": public(run)}), 202, {
        "Location": f"/api/runs/{run['id']}"}


@bp.get("/runs")
def list_runs():
    """Runs, newest first, filtered, sorted and paged by the query parameters of the Runs
    tab (``dashboard.run_query``); every run when no ``page`` or ``per_page`` is given."""
    view, _ = run_query.parse(request.args, mine_default=False, paged=False, lenient=False)
    if view.archived:
        access.require_passcode("listing archived runs")
    found, total = run_query.find(run_service().store, view)
    return jsonify({"runs": [public(r, history=False) for r in found], "total": total,
                    "page": view.page, "per_page": view.per_page or max(total, 1)})


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    """One run, with its epoch history once it has finished."""
    run = run_service().store.get_run(run_id)
    if run is None:
        return json_error(404, f"there is no run {run_id!r}")
    return jsonify(public(run))


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str):
    """A page of a run's stored events after ``after``."""
    store = run_service().store
    if store.get_run(run_id) is None:
        return json_error(404, f"there is no run {run_id!r}")
    after = int_arg("after", 0, 0, 2**31)
    limit = int_arg("limit", MAX_EVENTS_PER_PAGE, 1, MAX_EVENTS_PER_PAGE)
    found = store.events(run_id, after=after, limit=limit)
    return jsonify({"run_id": run_id, "events": found,
                    "last_seq": found[-1]["seq"] if found else after,
                    "more": len(found) == limit})


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str):
    """Cancel a queued run at once, a running one at its next batch."""
    service = run_service()
    run = service.store.get_run(run_id)
    if run is None:
        return json_error(404, f"there is no run {run_id!r}")
    if not access.may_cancel(run):
        raise access.Denied(401, access.NEEDS.format(
            what="cancelling a run someone else launched"))
    outcome = service.cancel(run_id, by=access.canceller(run))
    if outcome == "missing":
        return json_error(404, f"there is no run {run_id!r}")
    run = service.store.get_run(run_id)
    if outcome == "finished":
        return json_error(409, f"run {run_id} has already ended ({run['status']})",
                          run=public(run))
    log.info("run %s: cancel requested (%s)", run_id, outcome)
    return jsonify({"id": run_id, "outcome": outcome, "run": public(run)}), 202


@bp.post("/runs/<run_id>/next")
def run_next(run_id: str):
    """Move a queued run to the front of the queue (the instructor's, with the passcode)."""
    access.require_passcode("moving a run to the front of the queue")
    service = run_service()
    if service.store.get_run(run_id) is None:
        return json_error(404, f"there is no run {run_id!r}")
    if not service.promote(run_id):
        return json_error(409, f"run {run_id} is not waiting in the queue")
    return jsonify({"id": run_id, "run": public(service.store.get_run(run_id))}), 202


@bp.post("/runs/<run_id>/archive")
def archive_run(run_id: str):
    """Hide a finished run from the list and the board (never deleted; the instructor's)."""
    return _archive(run_id, True)


@bp.post("/runs/<run_id>/unarchive")
def unarchive_run(run_id: str):
    """Show an archived run in the list and on the board again (the instructor's)."""
    return _archive(run_id, False)


def _archive(run_id: str, archived: bool):
    access.require_passcode("archiving runs" if archived else "unarchiving runs")
    service = run_service()
    outcome = service.archive(run_id, archived)
    if outcome == "missing":
        return json_error(404, f"there is no run {run_id!r}")
    if outcome == "active":
        return json_error(409, f"run {run_id} has not ended yet: cancel it or wait for it to "
                               f"finish, then archive it")
    return jsonify({"id": run_id, "outcome": outcome,
                    "run": public(service.store.get_run(run_id) or {})})


# -- the lab's switches (the instructor's) ----------------------------------------------------


def _by() -> str:
    return access.display_name() or "the instructor"


@bp.get("/lab")
def lab_state():
    """The instructor's switches, for pages: queue_paused, launch_locked (and who set them
    when), and whether this request holds the passcode."""
    return jsonify({**run_service().flags.state(), "locked": access.locked(),
                    "instructor": access.is_instructor()})


@bp.post("/queue/pause")
def pause_queue():
    """Nothing starts until the queue is resumed; launches still queue."""
    access.require_passcode("pausing the queue")
    run_service().pause_queue(by=_by())
    return lab_state()


@bp.post("/queue/resume")
def resume_queue():
    """Queued runs start again, in the fair order."""
    from worker.celery_app import waiting_tasks

    access.require_passcode("resuming the queue")
    try:
        run_service().resume_queue(waiting_tasks, by=_by())
    except StoreBusy:
        raise  # the flag was not changed: the caller must hear so (503)
    except Exception as exc:  # Redis away: the flag is off; the web's queue check re-sends
        log.warning("queue resumed, but its tasks could not be sent yet: %s", exc)
    return lab_state()


@bp.post("/launching/lock")
def lock_launching():
    """Only passcode holders may launch runs until launching is unlocked."""
    access.require_passcode("locking launching")
    if not access.locked():
        return json_error(409, "this lab has no passcode (LAB_PASSCODE), so launching cannot "
                               "be locked for everyone but its holders")
    run_service().lock_launching(True, by=_by())
    return lab_state()


@bp.post("/launching/unlock")
def unlock_launching():
    """Everyone may launch runs again (within the caps)."""
    access.require_passcode("unlocking launching")
    run_service().lock_launching(False, by=_by())
    return lab_state()


# -- the class's views ------------------------------------------------------------------------


def _fresh(body: dict[str, Any]):
    """JSON that browsers revalidate on every poll: an unchanged board costs a 304."""
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-cache"
    resp.add_etag()
    return resp.make_conditional(request)


@bp.get("/home")
def api_home():
    """What the home page shows: the live run, the queue, the top of the leaderboard."""
    return _fresh(class_board.home_state())


@bp.get("/leaderboard")
def api_leaderboard():
    """Each person's best finished run, ranked."""
    return _fresh({"entries": class_board.leaderboard()})


@bp.get("/class")
def api_class():
    """Every finished run's settings and best accuracy, for what the class learned."""
    return _fresh({"runs": class_board.class_rows()})


# -- predict ----------------------------------------------------------------------------------


@bp.post("/predict")
def predict_photos():
    """Cat or dog for each uploaded photo, with confidence and a Grad-CAM overlay."""
    files = [f for key in ("photos", "photo", "file") for f in request.files.getlist(key)]
    if not files:
        return json_error(400, "send one or more photos as multipart form field 'photos'")
    if len(files) > predict.MAX_FILES:
        return json_error(413, f"at most {predict.MAX_FILES} photos at a time, got {len(files)}")
    runs = predict.usable_runs(run_service().store)
    wanted = request.form.get("model") or request.args.get("model")
    if wanted:
        run = next((r for r in runs if r["id"] == wanted), None)
        if run is None:
            return json_error(404, f"there is no finished run {wanted[:40]!r} with a saved "
                                   f"model")
    elif runs:
        run = runs[0]
    else:
        return json_error(409, "there is no trained model yet: train one in the Train tab first")
    body, status = predict.answer(run, files)
    return jsonify(body), status


# -- the dataset download ---------------------------------------------------------------------


@bp.get("/dataset/download")
def dataset_download_state():
    """The dataset download's state for the Dataset tab ({} when there has been none)."""
    try:
        state = downloads.read(lab_settings())
    except Exception:
        return json_error(503, "the job queue (Redis) is not reachable, so the download's "
                               "progress is unknown")
    return jsonify(state or {})


@bp.post("/dataset/download")
def dataset_download_start():
    """Queue the dataset download on a worker (into LAB_DATA_DIR)."""
    from ml.data import scan
    from worker.celery_app import queue_download

    access.require_passcode("downloading the dataset")
    data = json_body() or {}
    source = data.get("source", "auto") if isinstance(data, dict) else "auto"
    if source not in ("auto", "petimages", "kaggle"):
        return json_error(422, "source must be auto, petimages or kaggle", fields={
            "source": f"unknown source {source!r}"})
    settings = lab_settings()
    data_dir = settings.data_dir
    try:
        if data_dir.is_dir() and len(scan(data_dir).images):
            return json_error(409, f"{data_dir} already holds a dataset; the download would "
                                   f"not overwrite it")
    except Exception:
        pass  # an unreadable folder: the download reports the real problem
    try:
        if not downloads.start(settings, source):
            return json_error(409, "a download is already running; its progress is shown here")
        queue_download(source)
    except Exception as exc:
        log.warning("could not queue the dataset download: %s", exc)
        return json_error(503, REDIS_DOWN.replace("the run", "the download"))
    return jsonify(downloads.read(settings)), 202


@bp.post("/dataset/download/cancel")
def dataset_download_cancel():
    """Stop the dataset download."""
    access.require_passcode("cancelling the dataset download")
    if not downloads.request_cancel(lab_settings()):
        return json_error(409, "no download is running")
    return jsonify(downloads.read(lab_settings())), 202


# -- health -----------------------------------------------------------------------------------


@bp.get("/health")
def health():
    """What is up: the run store, Redis and the workers that announced themselves."""
    report: dict[str, Any] = {}
    try:
        run_service().store.ping()
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
