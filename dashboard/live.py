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

import json
import logging
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from flask import Flask, request

from core.bus import EVENT_MESSAGE, QUEUE_MESSAGE
from core.run_service import RunService
from core.settings import Settings
from core.store import RunStore
from ml.events import Event

log = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any]], None]  # (sid, message name, data)

# Joins allowed in JOIN_WINDOW_S: one connection (a page joins once, rejoins on reconnect),
# and one address (a whole class behind one school router).
JOINS_PER_CONNECTION = 20
JOINS_PER_ADDRESS = 600
JOIN_WINDOW_S = 60.0
# How often queued runs are checked for a lost task: a lost one waits at most this long.
HEAL_EVERY_S = 20.0
# A shortfall of tasks must still be there this much later: a worker may be between taking
# a task and claiming its run.
HEAL_CONFIRM_S = 3.0


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
                 reap_every_s: float = 15.0, heal_every_s: float = HEAL_EVERY_S,
                 waiting_tasks: Callable[[], int] | None = None) -> None:
    """Background loop: catch viewers up from the store; fail runs of vanished workers; put
    queued runs whose task was lost back on the queue."""

    def loop() -> None:
        last_reap = last_heal = time.monotonic()
        while True:
            server.sleep(every_s)
            now = time.monotonic()
            try:
                relay.poll()
                if now - last_reap >= reap_every_s:
                    last_reap = now
                    service.reap_lost()
            except Exception as exc:  # the store is briefly unreachable: next round
                log.warning("live poll failed: %s", exc)
            if waiting_tasks is not None and now - last_heal >= heal_every_s:
                last_heal = now
                try:
                    service.heal_queue(waiting_tasks, confirm_after_s=HEAL_CONFIRM_S,
                                       sleep=server.sleep)
                except Exception as exc:  # Redis is away: nothing can be queued anyway
                    log.debug("queue check skipped: %s", exc)

    server.start_background_task(loop)


class _TolerantJSON:
    """The JSON codec of Socket.IO packets, refusing what cannot be read with a value the
    handlers answer, instead of a RecursionError traceback in the log (deeply nested
    payloads) and no reply."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(text, **kwargs)
        except RecursionError:
            # The event's name leads the packet's array: keep it so the handler replies.
            head = _EVENT_NAME.match(text if isinstance(text, str) else text.decode("utf-8",
                                                                                   "replace"))
            return [json.loads(head.group(1)) if head else "message", MALFORMED]


_EVENT_NAME = re.compile(r'\s*\[\s*("(?:[^"\\]|\\.){0,64}")')
MALFORMED = {"malformed": "the message is nested too deeply to read"}


class JoinLimits:
    """How often one connection, and one address, may join runs: each join replays the
    run's stored events, so a client joining in a loop could keep the server busy."""

    def __init__(self, per_connection: int = JOINS_PER_CONNECTION,
                 per_address: int = JOINS_PER_ADDRESS, window_s: float = JOIN_WINDOW_S):
        self.per_connection, self.per_address, self.window_s = (per_connection, per_address,
                                                                window_s)
        self._joins: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def refusal(self, sid: str, address: str) -> str | None:
        """Count a join; a sentence when it is one too many, else None."""
        now = time.monotonic()
        with self._lock:
            for key, cap in ((f"sid:{sid}", self.per_connection),
                             (f"addr:{address}", self.per_address)):
                recent = self._joins[key]
                while recent and now - recent[0] > self.window_s:
                    recent.popleft()
                if len(recent) >= cap:
                    who = "this connection" if key.startswith("sid:") else "this address"
                    return (f"too many joins from {who} (at most {cap} a minute); wait a "
                            f"minute, then reload the page")
            for key in (f"sid:{sid}", f"addr:{address}"):
                self._joins[key].append(now)
        return None

    def forget(self, sid: str) -> None:
        with self._lock:
            self._joins.pop(f"sid:{sid}", None)


def init_app(app: Flask, server: Any, service: RunService, settings: Settings, *,
             start_background: bool = True) -> RunRelay:
    """Wire the Socket.IO server to Redis and the relay, and register its handlers."""
    from dashboard.security import origin_allowed

    manager = RelayRedisManager(settings.redis_url, channel=settings.socketio_channel)

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        with app.app_context():  # origin_allowed reads the lab's settings
            return origin_allowed(origin, environ)

    server.init_app(app, async_mode="threading", client_manager=manager,
                    cors_allowed_origins=allowed, json=_TolerantJSON)
    relay = RunRelay(service.store, lambda sid, name, data: server.emit(
        name, data, to=sid, ignore_queue=True))
    manager.relay = relay
    app.extensions["lab_relay"] = relay
    _register_handlers(server, service, relay, JoinLimits())
    if start_background:
        from worker.celery_app import waiting_tasks

        start_poller(server, relay, service, reap_every_s=min(15.0, settings.lost_after_s / 2),
                     waiting_tasks=waiting_tasks)
    return relay


def _register_handlers(server: Any, service: RunService, relay: RunRelay,
                       limits: JoinLimits) -> None:
    @server.on("join")
    def on_join(data: Any = None):
        """``join`` {run_id, after?}: stored events after ``after``, then live ones."""
        if data == MALFORMED:
            return {"ok": False, "error": MALFORMED["malformed"]}
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            return {"ok": False, "error": 'send {"run_id": "..."} to watch a run'}
        after = data.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            return {"ok": False, "error": "after must be a sequence number (0 or more)"}
        run_id = data["run_id"][:64]
        refusal = limits.refusal(request.sid, request.remote_addr or "unknown")
        if refusal:
            return {"ok": False, "error": refusal}
        run = service.store.get_run(run_id)
        if run is None:
            return {"ok": False, "error": f"there is no run {run_id!r}"}
        # Past the run's last event there is nothing to send (and no number too big to ask
        # the store with).
        after = min(after, run["last_seq"])
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
        limits.forget(request.sid)
