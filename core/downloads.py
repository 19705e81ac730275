"""The dataset download as a worker job: its state lives in one Redis hash, read by the web.

One lab has one dataset folder, so there is at most one download at a time. The hash holds
``state`` (queued | running | succeeded | failed | cancelled), ``done``/``total`` bytes,
``error``, ``summary`` (JSON) and timestamps; the web page polls it for live progress.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from core.settings import Settings

KEY = "lab:dataset-download"
ACTIVE = ("queued", "running")
# Long enough to read the result after the page reloads, short enough not to linger.
KEEP_FINISHED_S = 24 * 3600


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=2,
                                decode_responses=True)


def read(settings: Settings) -> dict[str, Any] | None:
    """The current (or last) download, or None."""
    raw = _client(settings).hgetall(KEY)
    if not raw:
        return None
    state: dict[str, Any] = dict(raw)
    for name in ("done", "total"):
        state[name] = int(state[name]) if state.get(name) not in (None, "") else None
    for name in ("started", "updated"):
        state[name] = float(state[name]) if state.get(name) else None
    state["summary"] = json.loads(state["summary"]) if state.get("summary") else None
    state["cancel"] = state.get("cancel") == "1"
    return state


def start(settings: Settings, source: str) -> bool:
    """Mark a download queued; False when one is already queued or running."""
    client = _client(settings)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(KEY)
                if pipe.hget(KEY, "state") in ACTIVE:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(KEY)
                pipe.hset(KEY, mapping={"state": "queued", "source": source, "done": 0,
                                        "total": "", "started": time.time(),
                                        "updated": time.time(), "cancel": "0"})
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def update(settings: Settings, **fields: Any) -> None:
    values = {k: ("" if v is None else json.dumps(v) if isinstance(v, dict) else v)
              for k, v in fields.items()}
    values["updated"] = time.time()
    client = _client(settings)
    client.hset(KEY, mapping=values)
    if fields.get("state") not in (None, *ACTIVE):
        client.expire(KEY, KEEP_FINISHED_S)


def request_cancel(settings: Settings) -> bool:
    """Ask a queued or running download to stop; False when there is none."""
    client = _client(settings)
    if client.hget(KEY, "state") not in ACTIVE:
        return False
    client.hset(KEY, "cancel", "1")
    return True


def cancel_requested(settings: Settings) -> bool:
    return _client(settings).hget(KEY, "cancel") == "1"
