"""``python -m dashboard``: the web process (one process, many threads)."""

from __future__ import annotations

import argparse
import logging
import os

from dashboard.app import create_app, socketio

log = logging.getLogger("dashboard")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LAB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "5000")))
    parser.add_argument("--log-level", default=os.environ.get("LAB_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Werkzeug logs every request at INFO; keep the console for what matters.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app()
    log.info("Kitten-and-Puppy Lab web: http://%s:%d/", args.host, args.port)
    # The threaded Werkzeug server is enough for one lab (tens of viewers); the compose
    # stack runs the same app under gunicorn.
    socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True,
                 log_output=False)


if __name__ == "__main__":
    main()
