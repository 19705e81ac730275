"""The app factory: settings, the runs service, the live channel, blueprints, error pages.

One web process in Flask-SocketIO's threading mode (TensorFlow and eventlet/gevent do not
mix).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.bus import Publisher
from core.run_service import RunService
from core.settings import Settings, load_settings
from core.store import RunStore, StoreBusy
from dashboard import filters
from dashboard.helpers import STORE_RETRY_AFTER_S, LabRequest, sentence

log = logging.getLogger(__name__)

socketio = SocketIO()

# Uploads to the predict tab: a few phone photos at once, never a 40 MB surprise.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def create_app(settings: Settings | None = None, *, start_background: bool = True) -> Flask:
    """The web app, wired to the run store and to Redis for live events.

    ``start_background=False`` leaves out the poller (catch-up and reaping), for unit tests.
    """
    settings = settings or load_settings()
    app = Flask("dashboard", template_folder="../templates", static_folder="../static")
    app.request_class = LabRequest  # unreadable JSON bodies are a 400, never a 500
    app.config["LAB_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    from dashboard import access

    app.secret_key = access.secret_key(settings)
    # Lax: the unlocked session never rides along on another site's POST.
    # Named for this lab (its port, or LAB_SESSION_COOKIE): cookies ignore ports, so two labs
    # on one host would otherwise share one cookie and sign each other out.
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME=settings.session_cookie)
    if not settings.passcode:
        log.info("LAB_PASSCODE is not set: anyone who can open the lab may launch and "
                 "cancel runs")

    from worker import celery_app

    celery_app.configure(settings)
    # The web's writes wait only briefly for a busy store: the caller gets a 503 to retry.
    store = RunStore(settings.database_url, busy_s=settings.store_busy_s)
    service = RunService(store, models_dir=settings.models_dir,
                         bus=Publisher(settings), enqueue=celery_app.queue_training,
                         lost_after_s=settings.lost_after_s,
                         launch_locked_default=settings.lock_launch)
    app.extensions["lab_runs"] = service

    from dashboard import live

    live.init_app(app, socketio, service, settings, start_background=start_background)
    from dashboard import security

    security.init_app(app)  # after Socket.IO: ProxyFix must wrap its middleware too

    from dashboard import api, assets, board, dataset, photos, predict, run_pages, train_form

    for module in (api, access, assets, board, dataset, photos, train_form, run_pages, predict):
        app.register_blueprint(module.bp)
    filters.register(app)
    _register_error_pages(app)
    return app


def _register_error_pages(app: Flask) -> None:
    from dashboard.access import Denied
    from dashboard.security import CrossSite

    def page(status: int, heading: str, message: str, **extra):
        return render_template("error.html", tab="", heading=heading, message=message,
                               **extra), status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Unknown /api/... URLs and wrong methods answer in JSON like the rest of the API.
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description or exc.name}), exc.code or 500
        return page(exc.code or 500, f"{exc.code} · {exc.name}", exc.description or exc.name)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"] // 2**20
        message = f"the upload is too large: at most {limit} MB per request"
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), 413
        return page(413, "Upload too large", sentence(message))

    @app.errorhandler(StoreBusy)
    def _store_busy(exc: StoreBusy):
        retry = {"Retry-After": str(STORE_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return jsonify({"error": str(exc)}), 503, retry
        body, status = page(503, "The lab is busy", sentence(str(exc)))
        return body, status, retry

    @app.errorhandler(CrossSite)
    def _cross_site(exc: CrossSite):
        return page(403, "Refused", sentence(str(exc)))  # the API answers its own, in JSON

    @app.errorhandler(Denied)
    def _denied(exc: Denied):
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.message}), exc.status
        return page(exc.status, "Too many tries" if exc.status == 429 else "Passcode needed",
                    sentence(exc.message), unlock=exc.status in (401, 403))
