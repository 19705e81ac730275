"""Schema migrations of the run store: old lab databases are upgraded in place, keeping rows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
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
    column,
    func,
    insert,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import Engine, make_url

import core.schema
import core.store
from core.schema import upgrade_to_head
from core.store import make_engine
from testkit.paths import ROOT
from testkit.postgres import STORES

HEAD = core.schema.head_revision()  # checked against core.store.metadata below

# The run store's tables as the lab made them before it had migrations (``metadata.create_all``
# in worker/store.py), frozen here: revision 0001_initial must be exactly this.
old_metadata = MetaData()
old_runs = Table(
    "runs", old_metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("config", Text, nullable=False),
    Column("summary", Text),
    Column("model_path", Text),
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
old_events = Table(
    "events", old_metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("data", Text, nullable=False),
)

# run id -> (status, the seqs of its events); seqs need not be dense, last_seq is the highest.
OLD_RUNS = {
    "a1queued0000": ("queued", [1]),
    "b2succeeded0": ("succeeded", [1, 2, 3, 4, 5, 6]),
    "c3failed0000": ("failed", [1, 2, 3, 7]),
    "d4cancelled0": ("cancelled", []),
}


@pytest.fixture(params=STORES)
def database_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file, or a fresh database on the tests' own
    PostgreSQL server (conftest.py's ``postgres_url``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lab.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _make_old_database(url: str) -> tuple[list[dict], list[dict]]:
    """A lab database as the code before migrations left it; returns its runs and events."""
    engine = make_engine(url)
    old_metadata.create_all(engine)
    t0 = 1_764_000_000.0
    with engine.begin() as conn:
        for n, (run_id, (status, seqs)) in enumerate(OLD_RUNS.items()):
            done = status in ("succeeded", "failed", "cancelled")
            conn.execute(insert(old_runs).values(
                id=run_id, created=t0 + n, status=status,
                config=json.dumps({"recipe": "fast_cnn", "epochs": 3 + n, "seed": n}),
                summary=(json.dumps({"metrics": {"best_val_accuracy": 0.75 + n / 100},
                                     "epochs": [{"epoch": 1, "loss": 0.5}]})
                         if status == "succeeded" else None),
                model_path=f"{run_id}/model.keras" if status == "succeeded" else None,
                error="boom: out of memory" if status == "failed" else None,
                started=t0 + n + 1 if status != "queued" else None,
                finished=t0 + n + 60 if done else None,
                worker="celery@gpu-1" if status != "queued" else None,
                heartbeat=t0 + n + 59 if status != "queued" else None,
                cancel_requested=status == "cancelled",
                best_val_accuracy=0.75 + n / 100 if status == "succeeded" else None,
                epochs_done=len(seqs),
                client="10.0.0.7/5f2a9c1e0b3d4a77" if n % 2 else None))
            for seq in seqs:
                ev = {"run_id": run_id, "seq": seq, "type": f"epoch_end_{seq}",
                      "ts": t0 + n + seq / 10, "metrics": {"loss": 1 / seq}}
                conn.execute(insert(old_events).values(
                    run_id=run_id, seq=seq, type=ev["type"], ts=ev["ts"], data=json.dumps(ev)))
    runs, events = _rows(engine)
    engine.dispose()
    assert len(runs) == len(OLD_RUNS) and len(events) == 11
    return runs, events


def _rows(engine: Engine) -> tuple[list[dict], list[dict]]:
    """Every run (old columns only: ``client`` read from ``launched_from`` since 0005) and
    every event, in a fixed order."""
    with engine.connect() as conn:
        renamed = "launched_from" in {c["name"] for c in inspect(conn).get_columns("runs")}
        columns = [column("launched_from" if renamed and c.name == "client" else c.name,
                          c.type).label(c.name) for c in old_runs.c]
        runs = [dict(r._mapping) for r in conn.execute(
            select(*columns).select_from(table("runs")).order_by(column("id")))]
        events = [dict(r._mapping) for r in conn.execute(
            select(old_events).order_by(old_events.c.run_id, old_events.c.seq))]
    return runs, events


def _revision(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _assert_schema_is_head(engine: Engine) -> None:
    """The database's tables are exactly core.store.metadata's (what the code expects)."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), core.store.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert tables == {"runs", "events", "lab_flags", "alembic_version"}


def test_a_database_from_before_migrations_is_upgraded_keeping_every_row(
        database_url, engine, caplog):
    runs_before, events_before = _make_old_database(database_url)

    with caplog.at_level(logging.INFO, logger="core.schema"):
        upgrade_to_head(engine)

    runs_after, events_after = _rows(engine)
    assert runs_after == runs_before
    assert events_after == events_before
    with engine.connect() as conn:
        last_seq = {run_id: seq for run_id, seq in conn.execute(
            select(core.store.runs.c.id, core.store.runs.c.last_seq))}
    assert last_seq == {run_id: max(seqs, default=0) for run_id, (_, seqs) in OLD_RUNS.items()}
    assert last_seq["d4cancelled0"] == 0 and last_seq["c3failed0000"] == 7
    with engine.connect() as conn:  # 0003: the owner is the browser part of the old client
        owners = dict(conn.execute(select(core.store.runs.c.id, core.store.runs.c.owner)).all())
    assert set(owners.values()) == {"5f2a9c1e0b3d4a77", None}
    assert all((owner is not None) == (n % 2 == 1)
               for n, owner in enumerate(owners[run_id] for run_id in OLD_RUNS))
    with engine.connect() as conn:  # 0004: the recipe comes from the config; nothing archived
        rows = conn.execute(select(core.store.runs.c.recipe, core.store.runs.c.archived)).all()
        flags = conn.execute(select(func.count()).select_from(core.store.lab_flags)).scalar_one()
    assert sorted(rows) == [("fast_cnn", None)] * len(OLD_RUNS) and flags == 0
    with engine.connect() as conn:  # 0005: client is launched_from, every value kept
        launched = dict(conn.execute(select(core.store.runs.c.id,
                                            core.store.runs.c.launched_from)).all())
    assert launched == {r["id"]: r["client"] for r in runs_before}
    assert _revision(engine) == [HEAD]
    _assert_schema_is_head(engine)
    said = [r.getMessage() for r in caplog.records
            if r.name == "core.schema" and r.levelno == logging.INFO]
    assert len(said) == 1, said
    assert "existing lab database" in said[0] and f"holds {len(OLD_RUNS)} runs" in said[0]

    # Foreign keys are back on for the engine's connections: deleting a run takes its events.
    with engine.begin() as conn:
        conn.execute(core.store.runs.delete().where(core.store.runs.c.id == "b2succeeded0"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(core.store.events).where(
            core.store.events.c.run_id == "b2succeeded0")).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(core.store.events)).scalar_one() \
            == len(events_before) - 6


def test_the_run_store_upgrades_an_old_database_when_it_opens_it(database_url):
    _make_old_database(database_url)
    store = core.store.RunStore(database_url)
    try:
        assert [e["seq"] for e in store.events("c3failed0000")] == [1, 2, 3, 7]
        assert store.last_seqs(list(OLD_RUNS)) == {
            run_id: max(seqs, default=0) for run_id, (_, seqs) in OLD_RUNS.items()}
        run = store.get_run("b2succeeded0")
        assert run["summary"]["metrics"]["best_val_accuracy"] == 0.76
        assert run["model_path"] == "b2succeeded0/model.keras"
    finally:
        store.engine.dispose()


def test_a_fresh_database_gets_exactly_the_head_schema(engine):
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    upgrade_to_head(engine)
    assert _revision(engine) == [HEAD]
    _assert_schema_is_head(engine)
    with engine.connect() as conn:
        columns = {c["name"]: c for c in inspect(conn).get_columns("runs")}
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("runs")}
        fks = inspect(conn).get_foreign_keys("events")
    assert columns["last_seq"]["nullable"] is False
    assert "0" in str(columns["last_seq"]["default"])
    assert indexes == {"ix_runs_created": ["created"], "ix_runs_status": ["status"],
                       "ix_runs_owner": ["owner"], "ix_runs_recipe": ["recipe"]}
    assert [(fk["referred_table"], fk["options"].get("ondelete")) for fk in fks] \
        == [("runs", "CASCADE")]


def test_migration_0001_is_the_schema_the_old_code_made(engine):
    # Stamping an old database 0001_initial is only right if 0001 makes exactly its tables.
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(core.schema.alembic_config(conn), "0001_initial")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), old_metadata) == []


def test_upgrading_twice_keeps_the_rows_and_does_no_migration_work(
        database_url, engine, monkeypatch):
    _make_old_database(database_url)
    upgrade_to_head(engine)
    rows = _rows(engine)

    def refuse(*args, **kwargs):
        raise AssertionError("an Alembic command ran on a database already at head")

    monkeypatch.setattr(core.schema.command, "upgrade", refuse)
    monkeypatch.setattr(core.schema.command, "stamp", refuse)
    monkeypatch.setattr(core.schema, "locked_transaction", refuse)  # not even the lock
    started = time.perf_counter()
    upgrade_to_head(engine)
    upgrade_to_head(make_engine(database_url))
    assert time.perf_counter() - started < 2.0
    assert _rows(engine) == rows
    assert _revision(engine) == [HEAD]


# The runs table as revision 0004 left it, frozen: what a lab database of that code holds.
runs_0004 = table("runs", *(column(name) for name in (
    "id", "created", "status", "config", "cancel_requested", "epochs_done", "client",
    "last_seq", "owner", "owner_name", "recipe")))


def test_a_database_at_0004_opens_at_head_keeping_where_each_run_came_from(database_url,
                                                                            engine):
    from alembic import command

    client = {"r1": "10.0.0.7/5f2a9c1e0b3d4a77", "r2": "10.0.0.7/~0b3d4a775f2a9c1e",
              "r3": "192.168.1.20/aa11bb22cc33dd44", "r4": None}  # r4: from before caps
    with engine.begin() as conn:
        command.upgrade(core.schema.alembic_config(conn), "0004_class_view")
        for n, (run_id, value) in enumerate(client.items()):
            conn.execute(insert(runs_0004).values(
                id=run_id, created=1.0 + n, status="queued" if n < 3 else "succeeded",
                config=json.dumps({"recipe": "fast_cnn"}), cancel_requested=False,
                epochs_done=0, client=value, last_seq=1,
                owner=value.rsplit("/", 1)[-1].lstrip("~") if value else None,
                owner_name=f"Student {n}", recipe="fast_cnn"))
            conn.execute(insert(old_events).values(run_id=run_id, seq=1, type="run_queued",
                                                   ts=1.0 + n, data="{}"))
    store = core.store.RunStore(database_url)  # opening it upgrades it
    try:
        assert _revision(store.engine) == [HEAD]
        runs = {run_id: store.get_run(run_id) for run_id in client}
        assert {run_id: run["launched_from"] for run_id, run in runs.items()} == client
        assert all("client" not in run for run in runs.values())
        assert [runs[r]["owner_name"] for r in client] == [f"Student {n}" for n in range(4)]
        assert store.last_seqs(list(client)) == dict.fromkeys(client, 1)
        assert [len(store.events(run_id)) for run_id in client] == [1] * 4  # none dropped
        # The per-address caps count the kept values.
        assert store.count_active(launched_from_prefix="10.0.0.7/") == 2
        assert store.count_active(launched_from_prefix="10.0.0.7/~") == 1
        assert store.count_active(launched_from_prefix="192.168.1.20/") == 1
    finally:
        store.engine.dispose()
    _assert_schema_is_head(engine)


def test_a_database_at_an_older_revision_is_upgraded(engine):
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(core.schema.alembic_config(conn), "0001_initial")
        conn.execute(insert(old_runs).values(id="r1", created=1.0, status="queued", config="{}",
                                             cancel_requested=False, epochs_done=0))
        conn.execute(insert(old_events).values(run_id="r1", seq=4, type="x", ts=1.0, data="{}"))
    upgrade_to_head(engine)
    assert _revision(engine) == [HEAD]
    with engine.connect() as conn:
        assert conn.execute(select(core.store.runs.c.last_seq)).scalar_one() == 4


def test_two_processes_starting_at_once_both_succeed(database_url, tmp_path):
    go = tmp_path / "go"
    code = (
        "import logging, os, sys, time\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "from core.schema import upgrade_to_head\n"
        "from core.store import make_engine\n"
        "url, ready, go = sys.argv[1:]\n"
        "open(ready, 'w').close()\n"
        "deadline = time.time() + 60\n"
        "while not os.path.exists(go) and time.time() < deadline:\n"
        "    time.sleep(0.001)\n"
        "upgrade_to_head(make_engine(url))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, database_url,
                               str(tmp_path / f"ready{n}"), str(go)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for n in range(3)]
    try:
        deadline = time.time() + 60
        while not all((tmp_path / f"ready{n}").exists() for n in range(3)):
            assert time.time() < deadline, "the processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for _out, err, rc in results:
        assert rc == 0, err
    assert sum(err.count("created the lab database") for _, err, _ in results) == 1, results
    engine = make_engine(database_url)
    assert _revision(engine) == [HEAD]
    _assert_schema_is_head(engine)
    engine.dispose()


def test_a_database_from_a_newer_lab_is_refused_clearly(database_url, engine):
    upgrade_to_head(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    with pytest.raises(RuntimeError) as raised:
        upgrade_to_head(make_engine(database_url))
    message = str(raised.value)
    assert "was made by a newer version of the lab (revision 0042_from_the_future)" in message
    # It names the database (the SQLite file, or PostgreSQL's host, port and database), never
    # the password.
    url = make_url(database_url)
    assert url.render_as_string(hide_password=True) in message
    assert url.database in message and "point DATABASE_URL at another database" in message
    assert not url.password or url.password not in message
    assert _revision(engine) == ["0042_from_the_future"]


def test_a_database_with_only_some_lab_tables_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match="not made by the lab"):
        upgrade_to_head(engine)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"runs"}  # rolled back, untouched


def test_upgrading_does_not_touch_the_apps_logging(engine):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    mine = logging.getLogger("kitten.lab.test")
    upgrade_to_head(engine)
    assert (list(root.handlers), root.level) == before
    assert not mine.disabled


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "alembic"), "-c", "core/migrations/alembic.ini", *args],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True,
        timeout=120)


def test_the_alembic_command_line_upgrades_the_database_in_database_url(database_url):
    current = _alembic("current", url=database_url)
    assert current.returncode == 0, current.stderr
    assert HEAD not in current.stdout

    upgraded = _alembic("upgrade", "head", url=database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade 0001_initial -> 0002_run_last_seq" in upgraded.stderr

    current = _alembic("current", url=database_url)
    assert current.returncode == 0, current.stderr
    assert f"{HEAD} (head)" in current.stdout
    engine = make_engine(database_url)
    _assert_schema_is_head(engine)
    engine.dispose()


def test_the_command_line_downgrade_keeps_the_events(database_url, engine):
    # On SQLite, dropping last_seq copies ``runs``; with foreign keys on, dropping the old copy
    # would cascade to every event.
    runs_before, events_before = _make_old_database(database_url)
    upgrade_to_head(engine)
    down = _alembic("downgrade", "0001_initial", url=database_url)
    assert down.returncode == 0, down.stderr
    assert _rows(engine) == (runs_before, events_before)
    assert _revision(engine) == ["0001_initial"]
    upgrade_to_head(engine)
    assert _rows(engine) == (runs_before, events_before)
    _assert_schema_is_head(engine)
