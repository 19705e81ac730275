"""The run store's schema versions: Alembic migrations in ``core/migrations``.

``upgrade_to_head(engine)`` brings any lab database to the schema ``core.store.metadata``
describes, keeping every run and event:

- an empty database gets every migration from the start;
- a database the lab made before it had migrations (``runs`` and ``events``, no
  ``alembic_version``) is stamped ``0001_initial`` (exactly those tables), then upgraded;
- a database already at head costs one query and is left alone;
- a database of a newer lab (a revision this code does not know) is refused.

The web process and the workers all call it on start, possibly at the same moment against
the same database: the migration runs in one transaction that holds a lock (an advisory lock
on PostgreSQL, the write lock on SQLite), and whoever comes second finds the database at head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
BASELINE_REVISION = "0001_initial"  # the tables as the lab made them before migrations
LAB_TABLES = frozenset({"runs", "events"})

# PostgreSQL: the key of the advisory lock every lab process takes to migrate ("KPLabMig").
ADVISORY_LOCK_KEY = 0x4B504C61624D6967
# SQLite: another process holding the write lock longer than the busy timeout, or a race on
# the very first connection to a new file, shows as OperationalError; try again this often.
SQLITE_ATTEMPTS = 5
SQLITE_RETRY_SLEEP_S = 0.2


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the lab's migrations, with no ini file and no logging setup.

    With ``connection``, env.py migrates on that connection (in its transaction) instead of
    opening its own from ``DATABASE_URL``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows (the schema of ``core.store.metadata``)."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the versions folder ships with the code
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions stamped in the database's ``alembic_version`` (empty when none)."""
    return tuple(MigrationContext.configure(conn).get_current_heads())


def _describe(engine_or_conn: Engine | Connection) -> str:
    return engine_or_conn.engine.url.render_as_string(hide_password=True)


def _refuse_unknown(revisions: tuple[str, ...], where: str) -> None:
    unknown = [rev for rev in revisions if rev not in _known_revisions()]
    if unknown:
        raise RuntimeError(
            f"the lab database at {where} was made by a newer version of the lab (revision "
            f"{', '.join(unknown)}); upgrade the code or point DATABASE_URL at another database")


@contextmanager
def locked_transaction(conn: Connection) -> Iterator[Connection]:
    """One transaction on a fresh ``conn`` that no other lab process can migrate beside.

    PostgreSQL: ``pg_advisory_xact_lock``, released when the transaction ends. SQLite:
    ``BEGIN IMMEDIATE`` (the database's write lock, taken up front so that two processes do
    not both read an old schema and then both write), with foreign keys off for its length:
    a migration that copies a table (batch mode) drops the old ``runs``, which must not
    cascade to ``events``. SQLite's Python driver would commit DDL on its own, so the
    transaction is driven by hand with the driver in autocommit mode.
    """
    if conn.dialect.name != "sqlite":
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": ADVISORY_LOCK_KEY})
            yield conn
        return
    conn.execution_options(isolation_level="AUTOCOMMIT")
    # A transaction for SQLAlchemy's (and so Alembic's) bookkeeping only: in autocommit mode
    # it sends nothing to the database, and Alembic leaves an open one to its owner.
    with conn.begin():
        foreign_keys = bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
        if foreign_keys:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                if getattr(conn.connection.dbapi_connection, "in_transaction", True):
                    conn.exec_driver_sql("ROLLBACK")
                raise
        finally:
            if foreign_keys:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")


def _migrate(conn: Connection, head: str, where: str) -> None:
    """Upgrade to ``head`` inside the migration lock, first looking again at where it is."""
    current = current_revisions(conn)
    _refuse_unknown(current, where)
    if current == (head,):
        return  # another process did it while this one waited for the lock
    config = alembic_config(conn)
    if current:
        command.upgrade(config, "head")
        log.info("upgraded the lab database at %s from revision %s to %s",
                 where, ", ".join(current), head)
        return
    lab_tables = LAB_TABLES & set(inspect(conn).get_table_names())
    if not lab_tables:
        command.upgrade(config, "head")
        log.info("created the lab database at %s (revision %s)", where, head)
        return
    if lab_tables != LAB_TABLES:
        raise RuntimeError(
            f"the lab database at {where} has a {', '.join(sorted(lab_tables))} table but not "
            f"the rest of the lab's tables, and no schema version: it was not made by the "
            f"lab; point DATABASE_URL at another database")
    run_count = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    command.stamp(config, BASELINE_REVISION)
    command.upgrade(config, "head")
    log.info("upgraded an existing lab database at %s (made before schema versions) to "
             "revision %s; it holds %d runs", where, head, run_count)


def upgrade_to_head(engine: Engine) -> None:
    """Bring the lab database behind ``engine`` to the newest schema, keeping its rows.

    Cheap when it is already there (one query). Safe to call from several processes at once.
    Raises ``RuntimeError`` for a database made by a newer lab than this code.
    """
    head = head_revision()
    where = _describe(engine)
    attempts = SQLITE_ATTEMPTS if engine.dialect.name == "sqlite" else 1
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                current = current_revisions(conn)
            if current == (head,):
                return
            _refuse_unknown(current, where)
            with engine.connect() as conn, locked_transaction(conn):
                _migrate(conn, head, where)
            return
        except (OperationalError, IntegrityError) as exc:
            if attempt == attempts:
                raise
            log.warning("migrating the lab database at %s: %s; trying again (%d/%d)",
                        where, exc.orig if exc.orig is not None else exc, attempt, attempts)
            time.sleep(SQLITE_RETRY_SLEEP_S * attempt)
