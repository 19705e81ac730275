"""Front-end libraries served by the app itself (labs are often offline: never a CDN)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, send_file

from core.settings import ROOT

bp = Blueprint("assets", __name__)

SOCKETIO_CLIENT = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"


def plotly_js() -> Path:
    """plotly.js as shipped inside the installed ``plotly`` Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@bp.get("/vendor/plotly.min.js")
def plotly_bundle():
    path = plotly_js()
    if not path.is_file():
        abort(404, "plotly.js is missing from the plotly package; reinstall it (make install)")
    return send_file(path, mimetype="text/javascript", max_age=86400)


@bp.get("/vendor/socket.io.min.js")
def socketio_bundle():
    if not SOCKETIO_CLIENT.is_file():
        abort(404, "the Socket.IO client is not installed; run `make install` (it runs "
                   "npm install for socket.io-client)")
    return send_file(SOCKETIO_CLIENT, mimetype="text/javascript", max_age=86400)


@bp.get("/favicon.ico")
def favicon():
    """The paw, for pages with no icon of their own (an API answer opened in a tab)."""
    return send_file(ROOT / "static" / "paw.svg", mimetype="image/svg+xml", max_age=86400)
