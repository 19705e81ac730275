"""The event bus: live events and queue positions to the web process's Socket.IO rooms,
through Redis, from any process (a worker, or the web process itself).

Events are stored before they are published, so a viewer that misses a message (Redis
restarting, a slow network) gets it from the run store instead: publishing is best effort
and never stops a run.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import socketio

from core.settings import Settings
from ml.events import Event

log = logging.getLogger(__name__)

EVENT_MESSAGE = "run_event"
# {"run_id", "queue_position"}: sent to a queued run's room whenever the queue changes.
QUEUE_MESSAGE = "queue_position"
# After a failed publish, skip publishing this long: each try against a Redis that is down
# costs a connection attempt per event, and viewers catch up from the store meanwhile.
RETRY_AFTER_S = 5.0


def room_of(run_id: str) -> str:
    """The Socket.IO room of one run's viewers."""
    return f"run:{run_id}"


class _Emitter(socketio.RedisManager):
    """python-socketio's write-only emitter, remembering whether the last publish worked
    (it gives up quietly rather than raising)."""

    ok = True

    def _publish(self, data):
        result = super()._publish(data)
        self.ok = result is not None  # Redis answers with the subscriber count
        return result


class Publisher:
    """Publishes run events to the web processes, built once per process."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._emitter: _Emitter | None = None
        self._pid = None
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._skip_until = 0.0

    def _client(self) -> _Emitter:
        # Built lazily in the process that uses it: a Redis connection must not cross a fork.
        if self._emitter is None or self._pid != os.getpid():
            # python-socketio logs two errors per event while Redis is down; this class says
            # it once when the outage starts and once when it ends.
            quiet = logging.getLogger(__name__ + ".socketio")
            quiet.setLevel(logging.CRITICAL)
            self._emitter = _Emitter(self._settings.redis_url,
                                     channel=self._settings.socketio_channel,
                                     write_only=True, logger=quiet)
            self._pid = os.getpid()
        return self._emitter

    def publish(self, ev: Event) -> None:
        """One stored event to its run's viewers."""
        self._send([(EVENT_MESSAGE, ev, ev["run_id"])])

    def publish_queue(self, positions: dict[str, int | None]) -> None:
        """Each queued run's place in the queue to its viewers."""
        self._send([(QUEUE_MESSAGE, {"run_id": run_id, "queue_position": position}, run_id)
                    for run_id, position in positions.items()])

    def _send(self, messages: list[tuple[str, dict, str]]) -> None:
        now = time.monotonic()
        if now < self._skip_until or not messages:
            return
        ok = True
        try:
            with self._lock:
                emitter = self._client()
                for name, data, run_id in messages:
                    emitter.emit(name, data, room=room_of(run_id))
                    ok = ok and emitter.ok
        except Exception as exc:  # never let the live channel break a run
            log.debug("publish failed: %s", exc)
            ok = False
        if not ok:
            self._skip_until = now + RETRY_AFTER_S
            if self._down_since is None:
                self._down_since = now
                log.warning("live events not published: Redis is not reachable; viewers "
                            "catch up from the run store, and publishing resumes when it is")
        elif self._down_since is not None:
            log.info("live events published again after %.0f s", now - self._down_since)
            self._down_since = None
