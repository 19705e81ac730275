"""A run store that another process keeps write-locked: the web's writes give up within a
few seconds with a 503, a Retry-After and a sentence, keep nothing and send no task; reads
go on working (SQLite's WAL). Workers keep their long wait.

SQLite only: PostgreSQL's row locks and timeouts are another matter (not mapped here)."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from core.store import STORE_BUSY, RunStore, StoreBusy, is_busy
from dashboard.app import create_app
from ml.config import TrainConfig

RUN = {"recipe": "fast_cnn", "epochs": 1}
TRAIN_FORM = {k: "" if v is None else str(v) for k, v in TrainConfig().to_dict().items()}
# Another process that takes the store's write lock as a competing writer would (BEGIN
# IMMEDIATE and a write), holds it until told to let go, then rolls back.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO lab_flags (name, value, changed) VALUES ('locker', '1', 0)")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def _db_path(settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


@contextmanager
def write_locked(settings) -> Iterator[None]:
    """The store's write lock held by another process for the block."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(_db_path(settings))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.communicate("\n", timeout=10)
    assert locker.returncode == 0


def _counting_queue(app) -> list[int]:
    """The app's own runs service (its store as the app made it), its tasks counted."""
    sent: list[int] = []
    app.extensions["lab_runs"]._enqueue = lambda: sent.append(1)
    return sent


def _busy(resp) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert resp.headers["Retry-After"] == "5"


def test_a_launch_into_a_locked_store_is_a_quick_503_that_keeps_nothing(app, client,
                                                                       lab_settings):
    sent = _counting_queue(app)
    store = app.extensions["lab_runs"].store
    with write_locked(lab_settings):
        start = time.monotonic()
        resp = client.post("/api/runs", json=RUN)
        took = time.monotonic() - start
        _busy(resp)
        assert took < 10, f"the launch waited {took:.1f} s"
        assert resp.json["error"] == STORE_BUSY
        reads = client.get("/api/runs")
        assert reads.status_code == 200 and reads.json["runs"] == []
    assert store.list_runs() == [] and sent == []  # no run behind, no task sent
    again = client.post("/api/runs", json=RUN)
    assert again.status_code == 202 and sent == [1]


@pytest.fixture
def quick_app(lab_settings):
    """An app whose writes wait half a second (LAB_STORE_BUSY_S), so each refusal is quick."""
    return create_app(dataclasses.replace(lab_settings, store_busy_s=0.5),
                      start_background=False)


def test_other_writes_are_a_503_too_and_reads_go_on(quick_app, lab_settings):
    client = quick_app.test_client()
    sent = _counting_queue(quick_app)
    run_id = client.post("/api/runs", json=RUN).json["id"]
    store = quick_app.extensions["lab_runs"].store
    with write_locked(lab_settings):
        cancel = client.post(f"/api/runs/{run_id}/cancel")
        _busy(cancel)
        assert cancel.json["error"] == STORE_BUSY
        _busy(client.post("/api/queue/pause"))
        _busy(client.post("/api/queue/resume"))  # not taken for Redis being away
        form = client.post("/train", data=TRAIN_FORM)
        _busy(form)
        assert "The lab&#39;s run store is busy" in form.get_data(as_text=True)
        assert client.get(f"/runs/{run_id}").status_code == 200
        assert client.get(f"/api/runs/{run_id}").json["status"] == "queued"
    assert [r["id"] for r in store.list_runs()] == [run_id] and sent == [1]
    assert store.get_run(run_id)["status"] == "queued"
    assert not quick_app.extensions["lab_runs"].flags.queue_paused()
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 202


def _busy_timeout_ms(store: RunStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())


def test_the_web_waits_briefly_and_workers_long(app, lab_settings):
    assert lab_settings.store_busy_s == 3.0  # LAB_STORE_BUSY_S's default
    assert _busy_timeout_ms(app.extensions["lab_runs"].store) == 3000
    assert _busy_timeout_ms(RunStore(lab_settings.database_url)) == 30000  # worker/runtime.py


def test_only_a_lock_is_busy(lab_settings):
    """Other database errors stay what they are: no 503 for a bug or a broken database."""
    store = RunStore(lab_settings.database_url, busy_s=0.2)
    with pytest.raises(OperationalError, match="no such table") as missing:
        with store._writing() as conn:
            conn.execute(text("INSERT INTO nowhere VALUES (1)"))
    assert not isinstance(missing.value, StoreBusy) and not is_busy(missing.value)
    with pytest.raises(IntegrityError) as duplicate:
        store.insert_run("r1", RUN, {"type": "run_queued", "config": RUN})
        store.insert_run("r1", RUN, {"type": "run_queued", "config": RUN})
    assert not is_busy(duplicate.value)
    assert not is_busy(RuntimeError("database is locked"))  # not SQLite's own error
    with write_locked(lab_settings), pytest.raises(StoreBusy) as busy:
        store.update_run("r1", status="running")
    assert is_busy(busy.value.__cause__)
    assert is_busy(sqlite3.OperationalError("database is locked"))
