"""The real stack over PostgreSQL: redis-server, TWO Celery workers and the web server, with
``DATABASE_URL`` on a database of the tests' own PostgreSQL server (conftest.py's
``postgres_server``). Runs train side by side, are cancelled, lose their worker (killed, or
frozen past ``LAB_RUN_LOST_AFTER_S``), and the web process restarts; the SQLite stack has the
same checks with one worker in test_live.py.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from core.store import events as store_events
from core.store import make_engine
from core.store import runs as store_runs
from testkit.lab_stack import TINY, LabStack, Viewer

SHORT = {**TINY, "epochs": 2}
# Runs that go on until stopped. Not lab_stack's ENDLESS: alone on a core a tiny epoch takes
# 0.1 s, and early stopping can end it, so it may succeed within the 10-20 s a reap takes
# here. A fixed schedule never stops early, and 2 photos a batch make 500 epochs minutes.
LONG = {**TINY, "epochs": 500, "schedule": "cosine", "batch_size": 2}
NAMES = ("lab", "lab2")


@pytest.fixture(scope="module")
def pg_lab(postgres_server, tiny_dataset, tmp_path_factory):
    url = postgres_server.create_database("lab_stack")
    # Two runs training side by side on 2 cores: a little more slack before a silent run
    # counts as lost than test_live.py's 6 s.
    stack = LabStack(tmp_path_factory.mktemp("pg_lab"), tiny_dataset,
                     {"DATABASE_URL": url, "LAB_RUN_LOST_AFTER_S": "10"}, workers=2)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        postgres_server.drop_database(url)


@pytest.fixture
def lab(pg_lab):
    """Both workers and the web server up, nothing queued or running, before and after."""
    if pg_lab.redis is None or not pg_lab.redis.alive():
        pg_lab.start_redis()
    for name in NAMES:
        if name not in pg_lab.workers or not pg_lab.workers[name].alive():
            pg_lab.start_worker(name=name)
    if pg_lab.web is None or not pg_lab.web.alive():
        pg_lab.start_web()
    pg_lab.cancel_active()
    yield pg_lab
    pg_lab.cancel_active()


def _assert_complete(events):
    """Every seq from 1 to the last exactly once, in order."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), (
        [(e["seq"], e["type"]) for e in events])


def _wait_both_running(lab: LabStack, run_ids: list[str]) -> dict[str, str]:
    """Wait until every run has a batch event; which worker trains each (run id → name)."""
    for run_id in run_ids:
        lab.wait_event(run_id, "batch")
    on = {run_id: lab.worker_named(lab.run(run_id)) for run_id in run_ids}
    assert sorted(on.values()) == sorted(NAMES), (on, lab.logs())
    return on


def test_two_runs_train_at_once_one_on_each_worker_and_both_succeed(lab):
    first, second = lab.launch(SHORT), lab.launch(SHORT)
    viewers = [Viewer(lab.url, first), Viewer(lab.url, second)]
    streamed = [v.wait_finished(timeout=240) for v in viewers]
    for v in viewers:
        v.disconnect()
    runs = [lab.wait_status(run_id, ("succeeded", "failed", "cancelled"))
            for run_id in (first, second)]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], lab.logs()
    assert {lab.worker_named(r) for r in runs} == set(NAMES)  # one on each worker
    # At once: each started before the other finished.
    assert max(r["started"] for r in runs) < min(r["finished"] for r in runs)
    for run, events in zip(runs, streamed, strict=True):
        _assert_complete(events)  # no seq taken twice with two writers on the database
        assert events[-1]["status"] == "succeeded" and events[-1]["type"] == "run_finished"
        assert [e["type"] for e in events].count("epoch") == 2 and run["epochs_done"] == 2
        assert lab.events(run["id"]) == events  # what was streamed is what was stored
        assert run["model_path"] == f"{run['id']}/model.keras"


def test_cancel_a_queued_run_and_a_running_one(lab):
    running = [lab.launch(LONG), lab.launch(LONG)]
    _wait_both_running(lab, running)  # both workers busy: the next one waits in the queue
    queued = lab.launch({**TINY, "epochs": 1})
    assert lab.run(queued)["queue_position"] == 1

    assert lab.post(f"/api/runs/{queued}/cancel").json()["outcome"] == "cancelled"
    run = lab.run(queued)
    assert run["status"] == "cancelled" and run["started"] is None and run["worker"] is None
    for run_id in running:
        assert lab.post(f"/api/runs/{run_id}/cancel").json()["outcome"] == "cancelling"
    for run_id in running:
        assert lab.wait_status(run_id, ("cancelled", "failed", "succeeded"))["status"] \
            == "cancelled"
    # The cancelled queued run's task found nothing to train; it never started anywhere.
    time.sleep(1)
    run = lab.run(queued)
    assert run["status"] == "cancelled" and run["started"] is None
    assert [e["type"] for e in lab.events(queued)] == ["run_queued", "run_finished"]


def test_a_killed_workers_run_is_reaped_and_the_other_workers_run_goes_on(lab):
    run_ids = [lab.launch(LONG), lab.launch(LONG)]
    on = _wait_both_running(lab, run_ids)
    lost = next(r for r in run_ids if on[r] == "lab2")
    kept = next(r for r in run_ids if on[r] == "lab")

    lab.workers["lab2"].kill()  # SIGKILL of its process group: a crash, the OOM killer
    # The web process's reaper finds no heartbeat for LAB_RUN_LOST_AFTER_S and fails the run.
    run = lab.wait_status(lost, ("failed", "cancelled", "succeeded"), timeout=90)
    assert run["status"] == "failed" and "worker lost" in run["error"], run
    assert lab.events(lost)[-1]["type"] == "run_finished"

    # The other worker's run was never touched, and it goes on training.
    other = lab.run(kept)
    assert other["status"] == "running" and other["error"] is None, (other, lab.logs())
    assert lab.worker_named(other) == "lab"
    seen = lab.events(kept)[-1]["seq"]
    deadline = time.monotonic() + 60
    while lab.events(kept)[-1]["seq"] <= seen:
        assert time.monotonic() < deadline, lab.logs()
        time.sleep(0.2)
    assert lab.post(f"/api/runs/{kept}/cancel").json()["outcome"] == "cancelling"
    assert lab.wait_status(kept, ("cancelled", "failed"))["status"] == "cancelled"
    _assert_complete(lab.events(kept))
    _assert_complete(lab.events(lost))

    # The killed worker starts again under its name and trains the next run it gets.
    lab.start_worker(name="lab2")
    assert lab.run(lost)["status"] == "failed"
    assert "IntegrityError" not in lab.all_logs()


def _freeze_outside_a_transaction(lab: LabStack, worker, attempts: int = 20) -> None:
    """SIGSTOP the worker's process group, at a moment it holds no transaction open.

    A worker frozen between the UPDATE of its run and the COMMIT (about 2 % of the time:
    each event is a short transaction) keeps that row locked on PostgreSQL, and the reaper's
    UPDATE waits for it until the worker wakes: that run is not reaped while it sleeps.
    This test is about the reap, so it freezes the worker again in that case.
    """
    import psycopg

    url = make_url(lab.env["DATABASE_URL"])
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        for _ in range(attempts):
            os.killpg(worker.pid, signal.SIGSTOP)
            time.sleep(0.2)  # what it sent before it stopped has reached the server
            open_transactions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if open_transactions == 0:
                return
            os.killpg(worker.pid, signal.SIGCONT)
            time.sleep(0.1)
    raise AssertionError(f"the worker was inside a transaction at each of {attempts} tries")


def test_a_run_reaped_while_its_worker_is_frozen_stays_failed_and_the_worker_stops(lab):
    run_id = lab.launch(LONG)
    viewer = Viewer(lab.url, run_id)
    viewer.wait_for("epoch")
    name = lab.worker_named(lab.run(run_id))
    frozen = lab.workers[name]
    # The worker freezes (a stopped VM): no heartbeat for longer than LAB_RUN_LOST_AFTER_S,
    # so the web process reaps the run as lost...
    _freeze_outside_a_transaction(lab, frozen)
    try:
        run = lab.wait_status(run_id, ("failed", "cancelled", "succeeded"), timeout=60)
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)  # ...then it wakes and trains on
    assert run["status"] == "failed" and "worker lost" in run["error"]
    events = viewer.wait_finished(timeout=30)
    viewer.disconnect()
    _assert_complete(events)
    assert events[-1]["status"] == "failed"
    # The worker learns at its next event that the run is no longer its own, and stops.
    deadline = time.monotonic() + 60
    while "no longer this worker's" not in frozen.log_text():
        assert time.monotonic() < deadline, lab.logs()
        time.sleep(0.2)
    time.sleep(2)  # time for anything further it might (wrongly) write
    assert lab.run(run_id)["status"] == "failed"
    assert lab.events(run_id) == events
    assert "IntegrityError" not in lab.all_logs()
    assert "Traceback" not in frozen.log_text()
    # ...and both workers are free for the next runs.
    nexts = [lab.launch({**TINY, "epochs": 1}), lab.launch({**TINY, "epochs": 1})]
    for next_id in nexts:
        assert lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_the_web_process_restarted_finds_every_run_and_event(lab):
    run_id = lab.launch({**TINY, "epochs": 1})
    assert lab.wait_status(run_id, ("succeeded", "failed"))["status"] == "succeeded"
    before = lab.get("/api/runs").json()["runs"]
    events = {run["id"]: lab.events(run["id"]) for run in before}
    assert len(before) >= 2 and all(events.values())

    lab.web.stop()
    lab.start_web()

    after = lab.get("/api/runs").json()["runs"]

    def stable(run):  # what does not move while the run stands still
        return {k: v for k, v in run.items() if k != "duration_s"}

    assert [stable(r) for r in after] == [stable(r) for r in before]
    assert {run["id"]: lab.events(run["id"]) for run in after} == events
    for stream in events.values():
        _assert_complete(stream)
    # ...from PostgreSQL: the rows are in the database DATABASE_URL names.
    engine = make_engine(lab.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            assert engine.dialect.name == "postgresql"
            stored = dict(conn.execute(select(store_runs.c.id, store_runs.c.last_seq)).all())
            count = conn.execute(select(func.count()).select_from(store_events)).scalar_one()
    finally:
        engine.dispose()
    assert stored == {run_id: len(stream) for run_id, stream in events.items()}
    assert count == sum(len(stream) for stream in events.values())
