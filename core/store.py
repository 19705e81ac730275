"""The run store: every run and every event it emitted, in SQL (SQLite file or PostgreSQL).

Data access only; the rules (who may move a run where, and when) are the runs service's
(:mod:`core.run_service`). The web process and the workers share it. Every change of a run that
tells viewers something is one transaction of two statements: a conditional UPDATE of the
run that also bumps its ``last_seq``, then the INSERT of the event with that seq. The UPDATE
takes the row's write lock (the database's, on SQLite) until the commit, so two writers can
never take the same seq, and a condition that no longer holds (the run was reaped, or
cancelled while queued) changes nothing and stores no event.

Run statuses: ``queued`` → ``running`` → ``succeeded`` | ``cancelled`` | ``failed``
(a queued run can go straight to ``cancelled``). The schema is versioned with Alembic
(:mod:`core.schema`): opening a store upgrades an older lab database in place.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from core.queue import fair_order
from ml.events import Body, Event, stamp

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "cancelled", "failed")
STATUSES = ACTIVE + FINISHED
# What the run list sorts by (RunStore.find_runs): launched, started, best accuracy, duration.
SORTS = ("created", "started", "accuracy", "duration")

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
    # "<address>/<owner>" ("<address>/~<owner>" without the session cookie): what the
    # per-address caps count (dashboard.access).
    Column("launched_from", String(64)),
    # The highest seq stored for this run: events are numbered by bumping it in the same
    # transaction that inserts the event, so two writers can never take the same seq.
    Column("last_seq", Integer, nullable=False, default=0, server_default="0"),
    Column("owner", String(32), index=True),  # the launching browser's id (its session)
    Column("owner_name", String(64)),  # the name it gave, plain text
    Column("cancelled_by", String(80)),  # "Ada", "the instructor", ...
    Column("promoted", Float),  # when an instructor moved it to the front of the queue
    Column("recipe", String(32), index=True),  # config["recipe"], for filters and sorts in SQL
    Column("archived", Float),  # when an instructor archived it: hidden, never deleted
)

# The lab's run-time switches (e.g. a paused queue), set by an instructor, seen by every
# process; the value is JSON.
lab_flags = Table(
    "lab_flags", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("changed", Float, nullable=False),
    Column("changed_by", String(80)),
)

events = Table(
    "events", metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("data", Text, nullable=False),
)


# How long a process's writes wait for another's write lock before giving up (seconds): a
# worker's writes are its run's progress, so by default they wait long; the web process
# passes its own short LAB_STORE_BUSY_S, so a caller hears "busy" instead of hanging.
DEFAULT_BUSY_S = 30.0
# SQLite's result codes for "another connection holds the lock" (the low byte of extended
# codes such as SQLITE_BUSY_SNAPSHOT): SQLITE_BUSY and SQLITE_LOCKED.
_SQLITE_BUSY_CODES = (5, 6)
_BUSY_MESSAGES = ("database is locked", "database table is locked")

STORE_BUSY = "the lab's run store is busy; nothing was saved — try again in a few seconds"


class StoreBusy(Exception):
    """A write gave up waiting for another process's lock on the run store; its transaction
    was rolled back, so nothing of it was kept."""

    def __init__(self, message: str = STORE_BUSY):
        super().__init__(message)


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means the store was locked by another writer (SQLite's
    SQLITE_BUSY/SQLITE_LOCKED), not any other failure."""
    orig = getattr(exc, "orig", exc)
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _SQLITE_BUSY_CODES
    return str(orig).strip().lower() in _BUSY_MESSAGES


def _sqlite_pragmas(busy_s: float) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection, _record) -> None:
        # WAL lets the web process read while a worker writes; the busy timeout makes
        # writers wait for each other (up to busy_s) instead of failing at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return set_pragmas


def make_engine(database_url: str, *, busy_s: float = DEFAULT_BUSY_S) -> Engine:
    """An engine for the URL; for SQLite the folder is created and the pragmas set, and a
    write waits at most ``busy_s`` for another connection's write lock."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_s,
                                                  "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(busy_s))
        return engine
    return create_engine(url, pool_pre_ping=True)


def run_dict(row) -> dict[str, Any]:
    """A ``runs`` row as the store hands it out: JSON columns decoded, its duration so far,
    no queue position yet. A row of some columns only (the class views') works too."""
    run = dict(row._mapping)
    run["config"] = json.loads(run["config"])
    run["summary"] = json.loads(run["summary"]) if run.get("summary") else None
    if "cancel_requested" in run:
        run["cancel_requested"] = bool(run["cancel_requested"])
    end = run["finished"] or (time.time() if run["status"] == "running" else None)
    run["duration_s"] = (end - run["started"]) if run["started"] and end else None
    run["queue_position"] = None
    return run


def _event_row(ev: Event) -> dict[str, Any]:
    return {"run_id": ev["run_id"], "seq": ev["seq"], "type": ev["type"], "ts": ev["ts"],
            "data": json.dumps(ev)}


class RunStore:
    """Runs and their events. Safe to share between threads; create one per process."""

    def __init__(self, database_url: str, *, busy_s: float = DEFAULT_BUSY_S):
        """``busy_s``: how long a write waits for another process's write lock (SQLite)
        before it raises :class:`StoreBusy`."""
        from core.schema import upgrade_to_head

        self.url = database_url
        self.engine = make_engine(database_url, busy_s=busy_s)
        upgrade_to_head(self.engine)

    # -- writes -----------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction; a lock held past the busy wait is StoreBusy (rolled back)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            if is_busy(exc):
                log.warning("the run store stayed locked by another writer: %s", exc.orig)
                raise StoreBusy() from exc
            raise

    def insert_run(self, run_id: str, config: dict[str, Any], first: Body, *,
                   launched_from: str | None = None, owner: str | None = None,
                   owner_name: str | None = None) -> Event:
        """A new queued run with its first event (seq 1), in one transaction."""
        now = time.time()
        ev = stamp(first, run_id, 1, now)
        with self._writing() as conn:
            conn.execute(insert(runs).values(
                id=run_id, created=now, status="queued", config=json.dumps(config),
                cancel_requested=False, epochs_done=0, launched_from=launched_from,
                last_seq=1, owner=owner, owner_name=owner_name, recipe=config.get("recipe")))
            conn.execute(insert(events).values(_event_row(ev)))
        return ev

    def delete_run(self, run_id: str) -> None:
        """Remove a run that never reached the queue (the broker refused it)."""
        with self._writing() as conn:
            conn.execute(events.delete().where(events.c.run_id == run_id))
            conn.execute(runs.delete().where(runs.c.id == run_id))

    def update_run(self, run_id: str, *, where: dict[str, Any] | None = None,
                   **values: Any) -> bool:
        """Set columns of a run if it still matches ``where`` (column → value); whether it did."""
        with self._writing() as conn:
            done = conn.execute(update(runs).where(runs.c.id == run_id, *self._match(where))
                                .values(**self._encode(values)))
        return done.rowcount == 1

    def transition(self, run_id: str, body: Body, *, where: dict[str, Any] | None = None,
                   **values: Any) -> Event | None:
        """Store one event with the run's next seq, and set ``values`` on the run, together
        and only if the run still matches ``where``; the stamped event, or None (nothing
        changed) when it does not."""
        with self._writing() as conn:
            row = conn.execute(update(runs).where(runs.c.id == run_id, *self._match(where))
                               .values(last_seq=runs.c.last_seq + 1, **self._encode(values))
                               .returning(runs.c.last_seq)).first()
            if row is None:
                return None
            ev = stamp(body, run_id, row.last_seq)
            conn.execute(insert(events).values(_event_row(ev)))
        return ev

    @staticmethod
    def _encode(values: dict[str, Any]) -> dict[str, Any]:
        # The JSON columns take dicts; everything else goes in as it is.
        return {k: json.dumps(v) if k in ("config", "summary") and v is not None else v
                for k, v in values.items()}

    @staticmethod
    def _match(where: dict[str, Any] | None) -> list[Any]:
        conditions = []
        for name, wanted in (where or {}).items():
            column = runs.c[name]
            conditions.append(column.in_(wanted) if isinstance(wanted, (tuple, list, set))
                              else column == wanted)
        return conditions

    # -- reads ------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                return None
            run = run_dict(row)
        if run["status"] == "queued":
            run["queue_position"] = self.queue_positions().get(run_id)
        return run

    def list_runs(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every run (archived ones too), newest first, with queue positions."""
        return self.find_runs(limit=limit, include_archived=True)[0]

    def find_runs(self, *, owner: str | None = None, owner_name: str | None = None,
                  statuses: tuple[str, ...] | None = None, recipe: str | None = None,
                  sort: str = "created", descending: bool = True, offset: int = 0,
                  limit: int | None = None, include_archived: bool = False
                  ) -> tuple[list[dict[str, Any]], int]:
        """One page of runs and how many match in all, filtered, sorted and paged in SQL.

        ``owner``: a browser's id; ``owner_name``: the name shown ("" for runs without
        one); ``sort``: one of SORTS. Runs without the sorted value (not started, no
        accuracy yet) come last either way; ties go newest first. Archived runs only with
        ``include_archived``.
        """
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        conditions: list[ColumnElement[bool]] = []
        if owner is not None:
            conditions.append(runs.c.owner == owner)
        if owner_name is not None:
            conditions.append(runs.c.owner_name == owner_name if owner_name
                              else func.coalesce(runs.c.owner_name, "") == "")
        if statuses:
            conditions.append(runs.c.status.in_(statuses))
        if recipe is not None:
            conditions.append(runs.c.recipe == recipe)
        if not include_archived:
            conditions.append(runs.c.archived.is_(None))
        key = self._sort_key(sort)
        query = (select(runs).where(*conditions)
                 .order_by(key.is_(None), key.desc() if descending else key.asc(),
                           runs.c.created.desc(), runs.c.id)
                 .offset(offset))
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            found = [run_dict(row) for row in conn.execute(query)]
            total = len(found) if not limit and not offset else int(conn.execute(
                select(func.count()).select_from(runs).where(*conditions)).scalar_one())
        if any(r["status"] == "queued" for r in found):
            positions = self.queue_positions()
            for run in found:
                run["queue_position"] = positions.get(run["id"])
        return found, total

    @staticmethod
    def _sort_key(sort: str) -> ColumnElement[Any]:
        if sort == "duration":
            # A running run's duration grows until now; a queued one has none.
            return case((runs.c.started.is_(None), None),
                        else_=func.coalesce(runs.c.finished, time.time()) - runs.c.started)
        return {"created": runs.c.created, "started": runs.c.started,
                "accuracy": runs.c.best_val_accuracy}[sort]

    def owner_names(self, *, include_archived: bool = False) -> list[str]:
        """The names runs were launched under, A to Z (runs without a name: left out)."""
        query = (select(runs.c.owner_name).distinct()
                 .where(runs.c.owner_name.is_not(None), runs.c.owner_name != ""))
        if not include_archived:
            query = query.where(runs.c.archived.is_(None))
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars(), key=str.casefold)

    def queue_positions(self) -> dict[str, int]:
        """Each queued run's place in the fair order (1 = next; see core.queue)."""
        queued = self.queued_runs()
        last = self.last_started(sorted({r["owner"] for r in queued if r["owner"]}))
        return {run_id: n for n, run_id in enumerate(fair_order(queued, last), start=1)}

    def count_active(self, *, launched_from_prefix: str) -> int:
        """Queued or running runs whose ``launched_from`` starts with this prefix."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(runs).where(
                runs.c.status.in_(ACTIVE),
                runs.c.launched_from.startswith(launched_from_prefix, autoescape=True))
            ).scalar_one())

    def run_ids(self, *, status: str, worker: str | None = None,
                heartbeat_before: float | None = None) -> list[str]:
        """Ids of runs in one status, oldest first (optionally of one worker, or silent)."""
        query = select(runs.c.id).where(runs.c.status == status).order_by(runs.c.created)
        if worker is not None:
            query = query.where(runs.c.worker == worker)
        if heartbeat_before is not None:
            query = query.where(runs.c.heartbeat < heartbeat_before)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def queued_runs(self) -> list[dict[str, Any]]:
        """What the queue's order needs of each queued run: id, owner, created, promoted."""
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(
                select(runs.c.id, runs.c.owner, runs.c.created, runs.c.promoted)
                .where(runs.c.status == "queued"))]

    def last_started(self, owners: list[str]) -> dict[str, float]:
        """When each of these owners last had a run started (owners who never did: absent)."""
        if not owners:
            return {}
        with self.engine.connect() as conn:
            return {owner: started for owner, started in conn.execute(
                select(runs.c.owner, func.max(runs.c.started))
                .where(runs.c.owner.in_(owners), runs.c.started.is_not(None))
                .group_by(runs.c.owner))}

    def count_runs(self, *, statuses: tuple[str, ...], owner: str | None = None) -> int:
        """Runs in these statuses (of one owner)."""
        query = select(func.count()).select_from(runs).where(runs.c.status.in_(statuses))
        if owner is not None:
            query = query.where(runs.c.owner == owner)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def cancel_requested(self, run_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(runs.c.cancel_requested)
                                     .where(runs.c.id == run_id)).scalar())

    def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[Event]:
        query = (select(events.c.data).where(events.c.run_id == run_id, events.c.seq > after)
                 .order_by(events.c.seq))
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [json.loads(data) for data in conn.execute(query).scalars()]

    def last_seqs(self, run_ids: list[str]) -> dict[str, int]:
        """Highest stored seq of each run (0 for runs it does not have)."""
        if not run_ids:
            return {}
        with self.engine.connect() as conn:
            found = dict(conn.execute(select(runs.c.id, runs.c.last_seq)
                                      .where(runs.c.id.in_(run_ids))).all())
        return {run_id: int(found.get(run_id) or 0) for run_id in run_ids}

    # -- the lab's switches ------------------------------------------------------------------

    def flags(self) -> dict[str, dict[str, Any]]:
        """Every switch an instructor has set: name → {value, changed, changed_by}."""
        with self.engine.connect() as conn:
            return {row.name: {"value": json.loads(row.value), "changed": row.changed,
                               "changed_by": row.changed_by}
                    for row in conn.execute(select(lab_flags))}

    def set_flag(self, name: str, value: Any, *, by: str | None = None) -> None:
        """Set one switch (an update, or the first insert; two at once: the last one wins)."""
        values = {"value": json.dumps(value), "changed": time.time(), "changed_by": by}
        for attempt in (1, 2):
            try:
                with self._writing() as conn:
                    if not conn.execute(update(lab_flags).where(lab_flags.c.name == name)
                                        .values(**values)).rowcount:
                        conn.execute(insert(lab_flags).values(name=name, **values))
                return
            except IntegrityError:  # another process inserted it first: now it updates
                if attempt == 2:
                    raise

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1))
