"""Flask dashboard: the JSON API and the live Socket.IO channel (pages arrive with the tabs).

One web process in Flask-SocketIO's threading mode (TensorFlow and eventlet/gevent do not
mix). It never imports TensorFlow at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, redirect, render_template, request, url_for
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException

from dashboard.live import RelayRedisManager, RunRelay, start_poller
from worker.live import EVENT_MESSAGE, room_of
from worker.settings import Settings, load_settings
from worker.store import RunStore

log = logging.getLogger(__name__)

socketio = SocketIO()

# Uploads to the predict tab: a few phone photos at once, never a 40 MB surprise.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def create_app(settings: Settings | None = None, *, start_background: bool = True) -> Flask:
    """The web app, wired to the run store and to Redis for live events."""
    settings = settings or load_settings()
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config["LAB_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    from dashboard import access

    app.secret_key = access.secret_key(settings)
    # Lax: the unlocked session never rides along on another site's POST.
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME="lab_session")
    if not settings.passcode:
        log.info("LAB_PASSCODE is not set: anyone who can open the lab may launch and "
                 "cancel runs")
    store = RunStore(settings.database_url)
    app.extensions["lab_store"] = store
    from worker import celery_app

    celery_app.configure(settings)

    manager = RelayRedisManager(settings.redis_url, channel=settings.socketio_channel)
    socketio.init_app(app, async_mode="threading", client_manager=manager,
                      cors_allowed_origins=[])
    relay = RunRelay(store, lambda sid, ev: socketio.emit(EVENT_MESSAGE, ev, to=sid,
                                                          ignore_queue=True))
    manager.relay = relay
    app.extensions["lab_relay"] = relay

    def publish(ev: dict[str, Any]) -> None:
        """Events the web process creates (queued, cancelled) go out like a worker's."""
        try:
            socketio.emit(EVENT_MESSAGE, ev, to=room_of(ev["run_id"]))
        except Exception as exc:
            log.warning("event %s/%s not published: %s", ev["run_id"], ev["seq"], exc)
            relay.deliver(ev)  # at least this process's viewers hear of it

    app.extensions["lab_publish"] = publish

    from dashboard import api, assets, dataset, predict, runs, train

    for module in (api, access, assets, dataset, train, runs, predict):
        app.register_blueprint(module.bp)
    app.add_url_rule("/", "home", lambda: redirect(url_for("runs.index")))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Unknown /api/... URLs and wrong methods answer in JSON like the rest of the API.
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description or exc.name}), exc.code or 500
        return render_template("error.html", tab="", heading=f"{exc.code} · {exc.name}",
                               message=exc.description or exc.name), exc.code or 500

    @app.errorhandler(access.Denied)
    def _denied(exc: access.Denied):
        heading = "Too many tries" if exc.status == 429 else "Passcode needed"
        return render_template("error.html", tab="", heading=heading,
                               message=exc.message[0].upper() + exc.message[1:] + ".",
                               unlock=exc.status in (401, 403)), exc.status

    _register_socket_handlers(store, relay)
    if start_background:
        start_poller(socketio, relay, store, lost_after_s=settings.lost_after_s,
                     reap_every_s=min(15.0, settings.lost_after_s / 2), publish=publish)
    return app


def _register_socket_handlers(store: RunStore, relay: RunRelay) -> None:
    @socketio.on("join")
    def on_join(data: Any = None):
        """``join`` {run_id, after?}: stored events after ``after``, then live ones."""
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            return {"ok": False, "error": 'send {"run_id": "..."} to watch a run'}
        after = data.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            return {"ok": False, "error": "after must be a sequence number (0 or more)"}
        run_id = data["run_id"]
        if store.get_run(run_id) is None:
            return {"ok": False, "error": f"there is no run {run_id!r}"}
        last = relay.join(request.sid, run_id, after)
        return {"ok": True, "run_id": run_id, "last_seq": last}

    @socketio.on("leave")
    def on_leave(data: Any = None):
        run_id = data.get("run_id") if isinstance(data, dict) else None
        relay.leave(request.sid, run_id if isinstance(run_id, str) else None)
        return {"ok": True}

    @socketio.on("disconnect")
    def on_disconnect(*_args):
        relay.leave(request.sid)
