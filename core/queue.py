"""The fair order of the queue: which queued run starts next, and each one's place.

Runs an instructor moved to the front go first, earliest moved first. Then owners take
turns: each owner's oldest queued run, owners in the order they last had a run started
(one who never had one first, then the longest ago), so nobody's second run starts before
everybody else's first. Runs without an owner (from before owners were kept) are each
their own owner.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import Any


def owner_key(run: Mapping[str, Any]) -> str:
    return run.get("owner") or f"run:{run['id']}"


def fair_order(queued: Iterable[Mapping[str, Any]], last_started: Mapping[str, float]
               ) -> list[str]:
    """Run ids in the order they will start.

    ``queued``: the queued runs (``id``, ``owner``, ``created``, ``promoted``);
    ``last_started``: when each owner last had a run started (owners absent never did).
    """
    runs = sorted(queued, key=lambda r: (r["created"], r["id"]))
    order = [r["id"] for r in sorted((r for r in runs if r.get("promoted")),
                                     key=lambda r: (r["promoted"], r["created"]))]
    waiting: dict[str, deque[Mapping[str, Any]]] = defaultdict(deque)
    for run in runs:
        if not run.get("promoted"):
            waiting[owner_key(run)].append(run)
    # (when the owner last started one, when its oldest queued run was made, owner)
    turns = [(last_started.get(owner, float("-inf")), line[0]["created"], owner)
             for owner, line in waiting.items()]
    heapq.heapify(turns)
    started = max(last_started.values(), default=0.0)
    while turns:
        _, _, owner = heapq.heappop(turns)
        line = waiting[owner]
        order.append(line.popleft()["id"])
        if line:
            started += 1  # as if it started now: this owner's turn comes round again last
            heapq.heappush(turns, (started, line[0]["created"], owner))
    return order
