"""Read-only queries for the class's views (home, leaderboard, what the class learned).

Only reads of the ``runs`` table: which runs finished well, which train now, which wait
and in what order. The ranking is ``core.ranking``'s, the wording the dashboard's
(``dashboard.class_board``).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select

from core.store import RunStore, run_dict, runs

# The columns the class views read: never the error text or the worker's bookkeeping.
_COLUMNS = (runs.c.id, runs.c.status, runs.c.owner, runs.c.owner_name, runs.c.recipe,
            runs.c.config, runs.c.summary, runs.c.best_val_accuracy, runs.c.created,
            runs.c.started, runs.c.finished, runs.c.epochs_done)


# The finished runs, read again only when one more finished or one was (un)archived: every
# open leaderboard and home page polls them, and each run's summary is a whole model card.
_finished: dict[str, tuple[tuple, list[dict[str, Any]]]] = {}
_finished_lock = threading.Lock()


def _finished_version(conn) -> tuple:
    """Changes whenever a run succeeds or a succeeded run is archived or brought back."""
    return tuple(conn.execute(
        select(func.count(), func.max(runs.c.finished), func.count(runs.c.archived),
               func.sum(runs.c.archived)).where(runs.c.status == "succeeded")).one())


def finished_runs(store: RunStore) -> list[dict[str, Any]]:
    """Every run that trained to the end with a validation accuracy and is not archived,
    first finished first. Cancelled runs are left out: their accuracy is of a shorter run
    than their settings say. Each summary keeps only its ``counts`` (photos used).

    The list is shared between callers: read it, do not change it.
    """
    query = (select(*_COLUMNS)
             .where(runs.c.status == "succeeded", runs.c.archived.is_(None),
                    runs.c.best_val_accuracy.is_not(None))
             .order_by(runs.c.finished, runs.c.id))
    with store.engine.connect() as conn:
        version = _finished_version(conn)
        with _finished_lock:
            cached = _finished.get(store.url)
        if cached and cached[0] == version:
            return cached[1]
        found = []
        for row in conn.execute(query):
            run = run_dict(row)
            run["summary"] = {"counts": (run["summary"] or {}).get("counts") or {}}
            found.append(run)
    with _finished_lock:
        _finished[store.url] = (version, found)
    return found


def running_runs(store: RunStore) -> list[dict[str, Any]]:
    """Runs training now, the most recently started first."""
    query = (select(*_COLUMNS).where(runs.c.status == "running")
             .order_by(runs.c.started.desc(), runs.c.id))
    with store.engine.connect() as conn:
        return [run_dict(row) for row in conn.execute(query)]


def next_in_queue(store: RunStore, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` queued runs in the order they will start (``core.queue``), each
    with its ``queue_position``, and how many wait in all."""
    order = list(store.queue_positions())  # run ids, next first
    wanted = order[:limit]
    if not wanted:
        return [], len(order)
    with store.engine.connect() as conn:
        found = {row.id: run_dict(row) for row in conn.execute(
            select(*_COLUMNS).where(runs.c.id.in_(wanted)))}
    upcoming = []
    for position, run_id in enumerate(wanted, start=1):
        if run_id in found:  # started or cancelled between the two reads: skip it
            upcoming.append({**found[run_id], "queue_position": position})
    return upcoming, len(order)


def status_counts(store: RunStore) -> dict[str, int]:
    """How many runs are in each status (archived ones included: they did happen)."""
    with store.engine.connect() as conn:
        return {status: int(n) for status, n in conn.execute(
            select(runs.c.status, func.count()).group_by(runs.c.status))}


def latest_run(store: RunStore, status: str) -> dict[str, Any] | None:
    """The most recently created run in this status, if any."""
    query = (select(*_COLUMNS).where(runs.c.status == status)
             .order_by(runs.c.created.desc()).limit(1))
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    return run_dict(row) if row is not None else None
