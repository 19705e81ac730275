"""The runs service and the relay, without the real stack: fast unit tests beside the
real-stack ones (test_live.py). One owner of the lifecycle, one numbering of events."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from core.run_service import WORKER_LOST, QueueDown, RunGone, RunService
from core.store import RunStore
from dashboard.live import RunRelay
from ml import events
from ml.model_io import CARD_FILE, MODEL_FILE
from testkit.postgres import STORES

CONFIG = {"recipe": "fast_cnn", "epochs": 2}


@pytest.fixture(params=STORES)
def lab_settings(request, lab_settings):
    """Every test here twice: over a SQLite file and over a fresh PostgreSQL database (the
    tests' own server), so the concurrency rules hold on both stores. conftest.py's
    ``service``, ``app`` and ``client`` are built over these settings."""
    if request.param == "sqlite":
        return lab_settings
    return dataclasses.replace(lab_settings,
                               database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def service(service):
    yield service
    service.store.engine.dispose()  # the database is dropped after the test


def _epoch(n: int) -> dict:
    return events.epoch(epoch=n, loss=0.5, accuracy=0.8, val_loss=0.6, val_accuracy=0.7,
                        lr=0.001, seconds=1.0, images_per_s=10.0)


def _batch(step: int) -> dict:
    return events.batch(epoch=1, step=step, steps=1000, loss=0.5, accuracy=0.8, lr=0.001,
                        images_per_s=10.0)


def test_launch_queues_and_the_oldest_run_starts_first(service, bus):
    first = service.create(CONFIG)
    second = service.create(CONFIG)
    assert len(service.tasks_sent) == 2  # one "train the next run" task per launch
    assert (first["queue_position"], second["queue_position"]) == (1, 2)
    assert bus.events[0]["type"] == "run_queued" and bus.events[0]["seq"] == 1
    assert bus.queues[-1] == {first["id"]: 1, second["id"]: 2}

    claimed = service.claim_next("w1")
    assert claimed["id"] == first["id"] and claimed["status"] == "running"
    # Pushed to viewers: the started run left the queue, the other moved up.
    assert bus.queues[-1] == {second["id"]: 1, first["id"]: None}


def test_a_broker_that_refuses_the_task_leaves_no_run(lab_settings, bus):
    def refuse():
        raise ConnectionError("redis is down")

    svc = RunService(RunStore(lab_settings.database_url), models_dir=lab_settings.models_dir,
                     bus=bus, enqueue=refuse)
    try:
        with pytest.raises(QueueDown):
            svc.create(CONFIG)
        assert svc.store.list_runs() == [] and bus.events == []
    finally:
        svc.store.engine.dispose()


def test_workers_claim_in_the_fair_order_and_promoted_runs_first(service):
    a1 = service.create(CONFIG, owner="A", owner_name="Ada")["id"]
    a2 = service.create(CONFIG, owner="A", owner_name="Ada")["id"]
    b1 = service.create(CONFIG, owner="B", owner_name="Bea")["id"]
    c1 = service.create(CONFIG, owner="C", owner_name="Cy")["id"]
    assert service.queue_positions() == {a1: 1, b1: 2, c1: 3, a2: 4}
    assert service.claim_next("w1")["id"] == a1
    assert service.promote(a2) and service.claim_next("w2")["id"] == a2  # run next
    assert [service.claim_next("w1")["id"], service.claim_next("w2")["id"]] == [b1, c1]
    assert service.claim_next("w1") is None and not service.promote(a1)  # not queued now


def test_concurrent_claims_start_each_run_once(service):
    ids = {service.create(CONFIG)["id"] for _ in range(3)}
    claims: list = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        claims.append(service.claim_next(f"w{n}"))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [c["id"] for c in claims if c is not None]
    assert sorted(started) == sorted(ids)  # every run once, no run twice
    assert claims.count(None) == 5


def test_many_writers_never_take_the_same_seq(service):
    run_id = service.create(CONFIG)["id"]
    service.claim_next("w1")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        barrier.wait()
        try:
            for step in range(25):
                service.record(run_id, "w1", _batch(100 * k + step))
        except BaseException as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = [e["seq"] for e in service.store.events(run_id)]
    assert seqs == list(range(1, 102))  # run_queued + 100 batches, no gap, no repeat


def test_a_run_reaped_while_its_worker_trains_stays_failed_and_the_worker_is_told(
        service, bus):
    service.lost_after_s = 0.05
    run_id = service.create(CONFIG)["id"]
    service.claim_next("w1")
    service.record(run_id, "w1", _epoch(1))
    time.sleep(0.1)  # the worker froze: no heartbeat

    reaped = service.reap_lost()
    assert [(e["run_id"], e["type"], e["status"]) for e in reaped] == [
        (run_id, "run_finished", "failed")]

    # The worker wakes up and reports its next epoch, then tries to finish.
    with pytest.raises(RunGone, match="is failed .*worker lost.* no longer this worker's"):
        service.record(run_id, "w1", _epoch(2))
    with pytest.raises(RunGone):
        service.record(run_id, "w1", events.run_finished("succeeded"))
    assert not service.heartbeat(run_id, "w1")

    run = service.store.get_run(run_id)
    assert run["status"] == "failed" and run["error"] == WORKER_LOST
    stored = service.store.events(run_id)
    assert [e["type"] for e in stored] == ["run_queued", "epoch", "run_finished"]
    assert [e["seq"] for e in stored] == [1, 2, 3]
    assert service.reap_lost() == []  # reaped once


def test_a_run_that_beats_is_not_reaped(service):
    service.lost_after_s = 0.2
    run_id = service.create(CONFIG)["id"]
    service.claim_next("w1")
    for _ in range(4):
        time.sleep(0.1)
        assert service.heartbeat(run_id, "w1")
    assert service.reap_lost() == []
    assert service.store.get_run(run_id)["status"] == "running"


def test_restarted_worker_fails_what_its_previous_life_ran(service):
    run_id = service.create(CONFIG)["id"]
    other = service.create(CONFIG)["id"]
    service.claim_next("w1")
    service.claim_next("w2")
    assert [e["run_id"] for e in service.reap_lost(worker="w1")] == [run_id]
    assert service.store.get_run(other)["status"] == "running"


def test_cancel_a_queued_run_and_a_running_one(service, bus):
    running = service.create(CONFIG)["id"]
    queued = service.create(CONFIG)["id"]
    service.claim_next("w1")

    assert service.cancel(queued) == "cancelled"
    assert bus.events[-1]["run_id"] == queued and bus.events[-1]["status"] == "cancelled"
    assert bus.queues[-1] == {queued: None}
    assert service.claim_next("w2") is None  # nothing left to start

    assert service.cancel(running, reason="stopped by the test") == "cancelling"
    assert service.cancel_requested(running)
    assert service.store.get_run(running)["status"] == "running"  # until its worker stops
    assert service.cancel(queued) == "finished" and service.cancel("nope") == "missing"


def test_finishing_keeps_the_card_with_its_epoch_history(service, app, client):
    run_id = service.create(CONFIG)["id"]
    service.claim_next("w1")
    out = service.out_dir(run_id)
    out.mkdir(parents=True)
    history = [{"epoch": 1, "val_accuracy": 0.6}, {"epoch": 2, "val_accuracy": 0.75}]
    (out / CARD_FILE).write_text(json.dumps({"metrics": {"best_val_accuracy": 0.75},
                                             "history": history}))
    (out / MODEL_FILE).write_bytes(b"PK")
    ev = service.record(run_id, "w1", events.run_finished("succeeded", best_val_accuracy=0.75))
    assert ev["seq"] == 2

    run = service.store.get_run(run_id)
    assert run["status"] == "succeeded" and run["best_val_accuracy"] == 0.75
    assert run["model_path"] == f"{run_id}/{MODEL_FILE}" and run["summary"]["history"] == history

    # The app's API over the same store: one run carries its history, the list does not.
    app.extensions["lab_runs"].store = service.store
    one = client.get(f"/api/runs/{run_id}").json
    assert one["summary"]["history"] == history
    listed = client.get("/api/runs").json["runs"][0]
    assert listed["id"] == run_id and "history" not in listed["summary"]


def test_no_event_is_made_without_its_builder():
    with pytest.raises(ValueError, match="unknown event type"):
        events.stamp({"type": "made_up"}, "r", 1)
    with pytest.raises(ValueError, match="not a finished status"):
        events.run_finished("paused")


def test_the_relay_sends_each_viewer_every_event_once_in_order(service):
    run_id = service.create(CONFIG)["id"]
    service.claim_next("w1")
    sent: list[tuple[str, str, dict]] = []
    relay = RunRelay(service.store, lambda sid, name, data: sent.append((sid, name, data)))
    stored = [service.record(run_id, "w1", _batch(n)) for n in range(1, 4)]  # seq 2..4

    assert relay.join("a", run_id) == 4  # replayed 1..4
    later = [service.record(run_id, "w1", _batch(n)) for n in range(4, 7)]  # seq 5..7
    relay.deliver(later[2])  # arrives first: 5 and 6 are filled in from the store
    relay.deliver(later[0])  # already sent: dropped
    relay.deliver(stored[0])
    relay.notify(run_id, "queue_position", {"run_id": run_id, "queue_position": None})
    relay.join("b", run_id, after=6)
    relay.poll()
    seqs_a = [d["seq"] for sid, name, d in sent if sid == "a" and name == "run_event"]
    seqs_b = [d["seq"] for sid, name, d in sent if sid == "b" and name == "run_event"]
    assert seqs_a == [1, 2, 3, 4, 5, 6, 7] and seqs_b == [7]
    assert [name for sid, name, _ in sent if sid == "a"].count("queue_position") == 1


def test_a_task_in_a_workers_hands_is_not_taken_for_a_lost_one(service):
    first = service.create({"epochs": 1}, owner="a")["id"]
    service.create({"epochs": 1}, owner="b")
    assert service.tasks_sent == [1, 1]
    # A worker has taken the first task off the queue (one left) and claims its run during
    # the confirming look: nothing is missing, nothing is sent, nothing is logged.
    looks = []
    assert service.heal_queue(lambda: 1, confirm_after_s=3,
                              sleep=lambda s: looks.append(service.claim_next("w1"))) == 0
    assert looks[0]["id"] == first and service.tasks_sent == [1, 1]
    # Redis lost the last task: the second look still sees it missing, so one is sent.
    assert service.heal_queue(lambda: 0, confirm_after_s=3, sleep=lambda s: None) == 1
    assert service.tasks_sent == [1, 1, 1]
    # Without the confirming look (a restarting worker), the first look decides.
    service.create({"epochs": 1}, owner="c")
    assert service.heal_queue(lambda: 0) == 2
