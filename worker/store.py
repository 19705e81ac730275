"""The run store: every run and every event it emitted, in SQL (SQLite file or PostgreSQL).

The web process and the workers share it. Status changes are single conditional UPDATEs so
that a worker claiming a run and a person cancelling it can never both win.

Run statuses: ``queued`` → ``running`` → ``succeeded`` | ``cancelled`` | ``failed``
(a queued run can go straight to ``cancelled``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError

from ml.events import Event

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "cancelled", "failed")
WORKER_LOST = "worker lost: the worker stopped while training this run (killed or crashed)"

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("config", Text, nullable=False),
    Column("summary", Text),
    Column("model_path", Text),  # relative to the models folder, which machines may mount anywhere
    Column("error", Text),
    Column("started", Float),
    Column("finished", Float),
    Column("worker", String(255)),
    Column("heartbeat", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("best_val_accuracy", Float),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("client", String(64)),
)

events = Table(
    "events", metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("data", Text, nullable=False),
)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web process read while a worker writes; the busy timeout makes writers
    # wait for each other instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; for SQLite the folder is created and the pragmas set."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _run_dict(row) -> dict[str, Any]:
    run = dict(row._mapping)
    run["config"] = json.loads(run["config"])
    run["summary"] = json.loads(run["summary"]) if run["summary"] else None
    run["cancel_requested"] = bool(run["cancel_requested"])
    end = run["finished"] or (time.time() if run["status"] == "running" else None)
    run["duration_s"] = (end - run["started"]) if run["started"] and end else None
    return run


class RunStore:
    """Runs and their events. Safe to share between threads; create one per process."""

    def __init__(self, database_url: str):
        self.url = database_url
        self.engine = make_engine(database_url)
        metadata.create_all(self.engine)

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, config: dict[str, Any], *, client: str | None = None
                   ) -> tuple[dict[str, Any], Event]:
        """A new queued run and its first event, ``run_queued`` (seq 1)."""
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        ev: Event = {"run_id": run_id, "seq": 1, "type": "run_queued", "ts": now,
                     "config": config}
        with self.engine.begin() as conn:
            conn.execute(insert(runs).values(
                id=run_id, created=now, status="queued", config=json.dumps(config),
                cancel_requested=False, epochs_done=0, client=client))
            conn.execute(insert(events).values(self._event_row(ev)))
        return self.get_run(run_id), ev

    def delete_run(self, run_id: str) -> None:
        """Remove a run that never reached the queue (the broker refused it)."""
        with self.engine.begin() as conn:
            conn.execute(events.delete().where(events.c.run_id == run_id))
            conn.execute(runs.delete().where(runs.c.id == run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                return None
            run = _run_dict(row)
            run["queue_position"] = None
            if run["status"] == "queued":
                ahead = conn.execute(select(func.count()).select_from(runs).where(
                    runs.c.status == "queued", runs.c.created < run["created"])).scalar_one()
                run["queue_position"] = int(ahead) + 1
        return run

    def list_runs(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        query = select(runs).order_by(runs.c.created.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            found = [_run_dict(row) for row in conn.execute(query)]
        queued = sorted((r for r in found if r["status"] == "queued"), key=lambda r: r["created"])
        for run in found:
            run["queue_position"] = None
        for position, run in enumerate(queued, start=1):
            run["queue_position"] = position
        return found

    def count_active(self, *, client_prefix: str) -> int:
        """Queued or running runs launched by clients whose id starts with this prefix."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(runs).where(
                runs.c.status.in_(("queued", "running")),
                runs.c.client.startswith(client_prefix, autoescape=True))).scalar_one())

    def queued_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(runs.c.id).where(runs.c.status == "queued")
                                     .order_by(runs.c.created)).scalars())

    def claim(self, run_id: str, worker: str) -> dict[str, Any] | None:
        """queued → running for this worker; None when the run is not queued any more."""
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "queued")
                                .values(status="running", started=now, heartbeat=now,
                                        worker=worker))
        return self.get_run(run_id) if done.rowcount == 1 else None

    def heartbeat(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running")
                         .values(heartbeat=time.time()))

    def record_progress(self, run_id: str, *, epochs_done: int | None = None,
                        best_val_accuracy: float | None = None) -> None:
        values: dict[str, Any] = {"heartbeat": time.time()}
        if epochs_done is not None:
            values["epochs_done"] = epochs_done
        if best_val_accuracy is not None:
            values["best_val_accuracy"] = best_val_accuracy
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    def finish(self, run_id: str, status: str, *, summary: dict[str, Any] | None = None,
               model_path: str | None = None, error: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"not a finished status: {status!r}")
        values: dict[str, Any] = {"status": status, "finished": time.time()}
        if error is not None or status != "cancelled":
            values["error"] = error  # a cancelled run keeps the reason it was stopped for
        if summary is not None:
            values["summary"] = json.dumps(summary)
            best = (summary.get("metrics") or {}).get("best_val_accuracy")
            if best is not None:
                values["best_val_accuracy"] = best
        if model_path is not None:
            values["model_path"] = model_path
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    def running_ids(self, *, worker: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(runs.c.id).where(
                runs.c.status == "running", runs.c.worker == worker)).scalars())

    def request_cancel(self, run_id: str, *, reason: str | None = None
                       ) -> tuple[str, Event | None]:
        """Cancel a run. Returns (outcome, event to publish):

        ``cancelled`` — it was queued and is now cancelled (with its ``run_finished`` event);
        ``cancelling`` — it is running; its worker stops at the next batch;
        ``finished`` — nothing to do; ``missing`` — no such run.
        ``reason`` (for a running run) is kept as the run's note when it ends cancelled.
        """
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "queued")
                                .values(status="cancelled", finished=now,
                                        cancel_requested=True))
        if done.rowcount == 1:
            return "cancelled", self.append_event(
                run_id, "run_finished", status="cancelled", best_val_accuracy=None,
                best_epoch=None, model_id=None, error=None)
        with self.engine.begin() as conn:
            done = conn.execute(update(runs).where(runs.c.id == run_id,
                                                   runs.c.status == "running")
                                .values(cancel_requested=True, error=reason))
        if done.rowcount == 1:
            return "cancelling", None
        return ("missing" if self.get_run(run_id) is None else "finished"), None

    def cancel_requested(self, run_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(runs.c.cancel_requested)
                                     .where(runs.c.id == run_id)).scalar())

    def reap_lost(self, *, worker: str | None = None, older_than_s: float | None = None
                  ) -> list[Event]:
        """Mark running runs as failed when their worker is gone.

        ``worker``: every running run of this worker name (it has just started, so whatever
        it was running died with its previous life). ``older_than_s``: any running run with
        no heartbeat for that long. Returns the ``run_finished`` events to publish.
        """
        conditions = [runs.c.status == "running"]
        if worker is not None:
            conditions.append(runs.c.worker == worker)
        if older_than_s is not None:
            conditions.append(runs.c.heartbeat < time.time() - older_than_s)
        with self.engine.connect() as conn:
            lost = list(conn.execute(select(runs.c.id).where(*conditions)).scalars())
        reaped = []
        for run_id in lost:
            with self.engine.begin() as conn:
                done = conn.execute(update(runs).where(runs.c.id == run_id, *conditions)
                                    .values(status="failed", finished=time.time(),
                                            error=WORKER_LOST))
            if done.rowcount == 1:
                log.warning("run %s: %s", run_id, WORKER_LOST)
                reaped.append(self.append_event(
                    run_id, "run_finished", status="failed", best_val_accuracy=None,
                    best_epoch=None, model_id=None, error=WORKER_LOST))
        return reaped

    # -- events -----------------------------------------------------------------------------

    @staticmethod
    def _event_row(ev: Event) -> dict[str, Any]:
        return {"run_id": ev["run_id"], "seq": int(ev["seq"]), "type": ev["type"],
                "ts": float(ev["ts"]), "data": json.dumps(ev)}

    def add_event(self, ev: Event) -> None:
        """Store an event whose seq is already set (the worker's emitter numbers them)."""
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(self._event_row(ev)))

    def append_event(self, run_id: str, type_: str, **fields: Any) -> Event:
        """Store an event with the next free seq (for events the web process emits)."""
        for _ in range(20):
            ev: Event = {"run_id": run_id, "seq": self.last_seq(run_id) + 1, "type": type_,
                         "ts": time.time(), **fields}
            try:
                self.add_event(ev)
                return ev
            except IntegrityError:  # a worker took that seq in between: take the next
                continue
        raise RuntimeError(f"could not store an event for run {run_id}")

    def last_seq(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))
                                    .where(events.c.run_id == run_id)).scalar_one())

    def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[Event]:
        query = (select(events.c.data).where(events.c.run_id == run_id, events.c.seq > after)
                 .order_by(events.c.seq))
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [json.loads(data) for data in conn.execute(query).scalars()]

    def last_seqs(self, run_ids: list[str]) -> dict[str, int]:
        """Highest stored seq of each run (0 for runs without events)."""
        if not run_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(events.c.run_id, func.max(events.c.seq))
                                .where(events.c.run_id.in_(run_ids))
                                .group_by(events.c.run_id))
            found = {run_id: int(seq) for run_id, seq in rows}
        return {run_id: found.get(run_id, 0) for run_id in run_ids}
