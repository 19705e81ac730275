"""``python -m dashboard``: the web process (one process, many threads)."""

from __future__ import annotations

import argparse
import logging

from core.settings import load_settings
from dashboard.app import create_app, socketio

log = logging.getLogger("dashboard")


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default=settings.host)  # LAB_HOST
    parser.add_argument("--port", type=int, default=settings.port)  # LAB_PORT
    parser.add_argument("--log-level", default=settings.log_level)  # LAB_LOG_LEVEL
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Werkzeug logs every request at INFO; keep the console for what matters.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(settings)
    log.info("Kitten-and-Puppy Lab web: http://%s:%d/", args.host, args.port)
    # The threaded Werkzeug server is enough for one lab (tens of viewers); the compose
    # stack runs the same app under gunicorn.
    socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True,
                 log_output=False)


if __name__ == "__main__":
    main()
