"""The class's Runs tab and the instructor's controls on the real stack (redis-server, a
Celery worker, the web server): a paused queue on a real worker, and real Chromium with two
students and the instructor."""

from __future__ import annotations

import time

import redis

from testkit.lab_stack import ONE_EPOCH, LabStack


def _tasks_left(lab: LabStack) -> int:
    """Training tasks waiting on the queue or taken by a worker and not yet done (kombu's
    Redis transport keeps a taken one in ``unacked`` until its task ends: ``acks_late``)."""
    client = redis.Redis(port=lab.redis_port, socket_timeout=5)
    return int(client.llen("celery")) + int(client.hlen("unacked"))


def test_a_paused_queue_starts_nothing_and_resuming_starts_the_queued_runs(room):
    assert room.post("/api/queue/pause").json()["queue_paused"] is True
    ada, bea = room.student("Ada"), room.student("Bea")
    runs = []
    for s in (ada, ada, bea):  # launched a1 a2 b1: fair order a1 b1 a2
        resp = s.post(room.url + "/api/runs", json=ONE_EPOCH, timeout=30)
        assert resp.status_code == 202, resp.text  # launches still queue
        runs.append(resp.json()["id"])
    # The worker takes each run's task and, the queue being paused, starts nothing: the
    # tasks are used up. (Its first may wait for the pool process to start: seconds.)
    deadline = time.monotonic() + 180
    while _tasks_left(room):
        assert time.monotonic() < deadline, room.logs()
        time.sleep(0.2)
    time.sleep(1.0)
    for run_id in runs:
        run = room.run(run_id)
        assert run["status"] == "queued" and run["started"] is None, run
    assert room.get("/api/lab").json()["queue_paused"] is True
    # Resuming sends the used-up tasks again, and the runs start in the fair order.
    assert room.post("/api/queue/resume").json()["queue_paused"] is False
    for run_id in runs:
        room.wait_status(run_id, "succeeded", timeout=240)
    started = sorted(runs, key=lambda r: room.run(r)["started"])
    assert started == [runs[0], runs[2], runs[1]]




