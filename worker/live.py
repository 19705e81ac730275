"""Publishing events to the web process's Socket.IO rooms through Redis.

Events are stored before they are published, so a viewer that misses a message (Redis
restarting, a slow network) gets it from the run store instead: publishing is best effort
and never stops a run.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ml.events import Event
from worker.settings import Settings

log = logging.getLogger(__name__)

EVENT_MESSAGE = "run_event"


def room_of(run_id: str) -> str:
    """The Socket.IO room of one run's viewers."""
    return f"run:{run_id}"


class Publisher:
    """A write-only ``SocketIO(message_queue=...)``, built once per process."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._socketio = None
        self._pid = None
        self._lock = threading.Lock()
        self._last_warning = 0.0

    def _client(self):
        # Built lazily in the process that uses it: a Redis connection must not cross a fork.
        if self._socketio is None or self._pid != os.getpid():
            from flask_socketio import SocketIO

            self._socketio = SocketIO(message_queue=self._settings.redis_url,
                                      channel=self._settings.socketio_channel)
            self._pid = os.getpid()
        return self._socketio

    def publish(self, ev: Event) -> None:
        try:
            with self._lock:
                self._client().emit(EVENT_MESSAGE, ev, to=room_of(ev["run_id"]))
        except Exception as exc:  # never let the live channel break a run
            now = time.monotonic()
            if now - self._last_warning > 30:
                self._last_warning = now
                log.warning("live events not published (%s); viewers will catch up from "
                            "the run store", exc)
