"""WSGI entry point for gunicorn: ``gunicorn -w 1 --threads 100 dashboard.wsgi:app``.

Always one worker process (``-w 1``) with many threads: Flask-SocketIO keeps each client's
session in the process that accepted it, so several processes would need sticky sessions.
The Redis message queue, not more web processes, is what connects this process to the
training workers. Do not use ``--preload``: ``create_app`` starts background threads (the
live relay and the store poller), and threads do not survive gunicorn's fork.

Configuration comes from the environment (``REDIS_URL``, ``DATABASE_URL``, ``LAB_DATA_DIR``,
``LAB_MODELS_DIR``...; see ``core/settings.py``). Like the rest of the web process, this
never imports TensorFlow at start-up. ``python -m dashboard`` runs the same app locally.
"""

from __future__ import annotations

import logging

from core.settings import load_settings
from dashboard.app import create_app

settings = load_settings()
# gunicorn logs its own lines; this sends the app's log records to the same stderr.
logging.basicConfig(level=settings.log_level.upper(),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")

app = create_app(settings)
