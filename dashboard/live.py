"""The live channel: each viewer of a run gets its stored events, then live ones, in order.

Workers publish every event to the run's room through Redis (``core.bus``). A plain room
broadcast cannot promise a joining viewer "no gap and no duplicate": an event can be both
in the store when the viewer's replay reads it and in flight on Redis. So this process's
client manager takes those room messages and hands them to :class:`RunRelay`, which keeps
the last seq sent to each viewer and, under a per-viewer lock, sends exactly the next one,
filling any gap from the run store. A background poll does the same from the store alone,
so viewers also catch up when Redis drops messages (restarts, outages).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from flask import Flask, request

from core.bus import EVENT_MESSAGE, QUEUE_MESSAGE
from core.runs import RunService
from core.settings import Settings
from core.store import RunStore
from ml.events import Event

log = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any]], None]  # (sid, message name, data)


@dataclass
class _Viewer:
    sid: str
    run_id: str
    last_seq: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class RunRelay:
    """Per-viewer, in-order, exactly-once delivery of one run's events."""

    def __init__(self, store: RunStore, send: Send):
        self._store = store
        self._send = send
        self._viewers: dict[str, dict[str, _Viewer]] = {}  # run_id -> sid -> viewer
        self._finished: set[str] = set()  # runs whose run_finished every viewer has
        self._lock = threading.Lock()

    def join(self, sid: str, run_id: str, after: int = 0) -> int:
        """Send the stored events after ``after``, then keep the viewer for live ones.

        Returns the last seq sent. The viewer is registered (locked) before the store is
        read, so a live event arriving meanwhile waits and is then sent or dropped by seq.
        """
        viewer = _Viewer(sid, run_id, after)
        with viewer.lock:
            with self._lock:
                self._viewers.setdefault(run_id, {})[sid] = viewer
            self._catch_up(viewer)
            return viewer.last_seq

    def leave(self, sid: str, run_id: str | None = None) -> None:
        with self._lock:
            for rid in [run_id] if run_id else list(self._viewers):
                viewers = self._viewers.get(rid)
                if viewers is not None:
                    viewers.pop(sid, None)
                    if not viewers:
                        del self._viewers[rid]
                        self._finished.discard(rid)

    def deliver(self, ev: Event) -> None:
        """A live event: send it to each viewer that needs it next."""
        with self._lock:
            viewers = list(self._viewers.get(ev["run_id"], {}).values())
        for viewer in viewers:
            with viewer.lock:
                if ev["seq"] <= viewer.last_seq:
                    continue  # already sent by the replay or the poll
                if ev["seq"] > viewer.last_seq + 1:
                    self._catch_up(viewer, upto=ev["seq"] - 1)
                if ev["seq"] == viewer.last_seq + 1:
                    self._send_one(viewer, ev)

    def notify(self, run_id: str, message: str, data: dict[str, Any]) -> None:
        """A message that is not an event (a queue position) to each viewer of the run."""
        with self._lock:
            sids = list(self._viewers.get(run_id, {}))
        for sid in sids:
            self._send(sid, message, data)

    def poll(self) -> None:
        """Send viewers whatever the store has that they have not got (missed live events)."""
        with self._lock:
            watched = {rid: list(v.values()) for rid, v in self._viewers.items()
                       if rid not in self._finished}
        if not watched:
            return
        latest = self._store.last_seqs(list(watched))
        for run_id, viewers in watched.items():
            behind = [v for v in viewers if v.last_seq < latest[run_id]]
            for viewer in behind:
                with viewer.lock:
                    self._catch_up(viewer, upto=latest[run_id])

    def _catch_up(self, viewer: _Viewer, upto: int | None = None) -> None:
        for ev in self._store.events(viewer.run_id, after=viewer.last_seq):
            if upto is not None and ev["seq"] > upto:
                break
            self._send_one(viewer, ev)

    def _send_one(self, viewer: _Viewer, ev: Event) -> None:
        self._send(viewer.sid, EVENT_MESSAGE, ev)
        viewer.last_seq = ev["seq"]
        if ev["type"] == "run_finished":
            with self._lock:
                viewers = self._viewers.get(viewer.run_id, {})
                if all(v.last_seq >= ev["seq"] for v in viewers.values()):
                    self._finished.add(viewer.run_id)


class RelayRedisManager(socketio.RedisManager):
    """The Redis client manager, with messages to run rooms routed through a
    :class:`RunRelay` (viewers are the relay's, not Socket.IO room members)."""

    relay: RunRelay | None = None

    def _handle_emit(self, message):
        room = message.get("room") or ""
        name = message.get("event")
        if (self.relay is not None and name in (EVENT_MESSAGE, QUEUE_MESSAGE)
                and isinstance(room, str) and room.startswith("run:")):
            data = message.get("data")
            data = data[0] if isinstance(data, list) and data else data
            if not isinstance(data, dict) or "run_id" not in data:
                return
            try:
                if name == QUEUE_MESSAGE:
                    self.relay.notify(data["run_id"], QUEUE_MESSAGE, data)
                elif "seq" in data:
                    self.relay.deliver(data)
            except Exception:
                log.exception("could not relay %s for run %s", name, data.get("run_id"))
            return
        super()._handle_emit(message)


def start_poller(server: Any, relay: RunRelay, service: RunService, *, every_s: float = 2.0,
                 reap_every_s: float = 15.0) -> None:
    """Background loop: catch viewers up from the store; fail runs of vanished workers."""

    def loop() -> None:
        last_reap = 0.0
        while True:
            server.sleep(every_s)
            try:
                if time.monotonic() - last_reap >= reap_every_s:
                    last_reap = time.monotonic()
                    service.reap_lost()
                relay.poll()
            except Exception as exc:  # the store is briefly unreachable: try again next round
                log.warning("live poll failed: %s", exc)

    server.start_background_task(loop)


def init_app(app: Flask, server: Any, service: RunService, settings: Settings, *,
             start_background: bool = True) -> RunRelay:
    """Wire the Socket.IO server to Redis and the relay, and register its handlers."""
    manager = RelayRedisManager(settings.redis_url, channel=settings.socketio_channel)
    server.init_app(app, async_mode="threading", client_manager=manager,
                    cors_allowed_origins=[])
    relay = RunRelay(service.store, lambda sid, name, data: server.emit(
        name, data, to=sid, ignore_queue=True))
    manager.relay = relay
    app.extensions["lab_relay"] = relay
    _register_handlers(server, service, relay)
    if start_background:
        start_poller(server, relay, service,
                     reap_every_s=min(15.0, settings.lost_after_s / 2))
    return relay


def _register_handlers(server: Any, service: RunService, relay: RunRelay) -> None:
    @server.on("join")
    def on_join(data: Any = None):
        """``join`` {run_id, after?}: stored events after ``after``, then live ones."""
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            return {"ok": False, "error": 'send {"run_id": "..."} to watch a run'}
        after = data.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            return {"ok": False, "error": "after must be a sequence number (0 or more)"}
        run_id = data["run_id"]
        run = service.store.get_run(run_id)
        if run is None:
            return {"ok": False, "error": f"there is no run {run_id!r}"}
        last = relay.join(request.sid, run_id, after)
        return {"ok": True, "run_id": run_id, "last_seq": last,
                "queue_position": run["queue_position"]}

    @server.on("leave")
    def on_leave(data: Any = None):
        run_id = data.get("run_id") if isinstance(data, dict) else None
        relay.leave(request.sid, run_id if isinstance(run_id, str) else None)
        return {"ok": True}

    @server.on("disconnect")
    def on_disconnect(*_args):
        relay.leave(request.sid)
