"""The live channel: each viewer of a run gets its stored events, then live ones, in order.

Workers publish every event to the run's room through Redis (``worker.live``). A plain room
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

import socketio

from ml.events import Event
from worker.live import EVENT_MESSAGE
from worker.store import RunStore

log = logging.getLogger(__name__)

Send = Callable[[str, Event], None]  # (sid, event)


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
        self._send(viewer.sid, ev)
        viewer.last_seq = ev["seq"]
        if ev["type"] == "run_finished":
            with self._lock:
                viewers = self._viewers.get(viewer.run_id, {})
                if all(v.last_seq >= ev["seq"] for v in viewers.values()):
                    self._finished.add(viewer.run_id)


class RelayRedisManager(socketio.RedisManager):
    """The Redis client manager, with run events routed through a :class:`RunRelay`."""

    relay: RunRelay | None = None

    def _handle_emit(self, message):
        room = message.get("room") or ""
        if (self.relay is not None and message.get("event") == EVENT_MESSAGE
                and isinstance(room, str) and room.startswith("run:")):
            data = message.get("data")
            ev = data[0] if isinstance(data, list) and data else data
            if isinstance(ev, dict) and "seq" in ev and "run_id" in ev:
                try:
                    self.relay.deliver(ev)
                except Exception:
                    log.exception("could not relay event %s/%s", ev.get("run_id"), ev.get("seq"))
                return
        super()._handle_emit(message)


def start_poller(socketio_server, relay: RunRelay, store: RunStore, *, every_s: float = 2.0,
                 reap_every_s: float = 15.0, lost_after_s: float = 60.0,
                 publish: Callable[[Event], None] | None = None) -> None:
    """Background loop: catch viewers up from the store; mark runs of vanished workers failed."""

    def loop() -> None:
        last_reap = 0.0
        while True:
            socketio_server.sleep(every_s)
            try:
                if time.monotonic() - last_reap >= reap_every_s:
                    last_reap = time.monotonic()
                    for ev in store.reap_lost(older_than_s=lost_after_s):
                        if publish is not None:
                            publish(ev)
                relay.poll()
            except Exception as exc:  # the store is briefly unreachable: try again next round
                log.warning("live poll failed: %s", exc)

    socketio_server.start_background_task(loop)
