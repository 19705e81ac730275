"""Runs through the real stack: HTTP API → Redis → Celery worker → run store → Socket.IO."""

from __future__ import annotations

import os
import signal
import time

import pytest

from testkit.lab_stack import ENDLESS, TINY, LabStack, Viewer


def _types(events):
    return [e["type"] for e in events]


def _assert_complete(events):
    """Every seq from 1 to the last exactly once, in order."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), (
        [(e["seq"], e["type"]) for e in events])


def test_run_streams_every_event_in_order(idle_lab, tmp_path):
    run_id = idle_lab.launch({**TINY, "epochs": 2})
    viewer = Viewer(idle_lab.url, run_id)
    assert viewer.join_reply["ok"] is True
    events = viewer.wait_finished()
    viewer.disconnect()

    _assert_complete(events)
    types = _types(events)
    assert types[0] == "run_queued" and types[1] == "run_started" and types[-1] == "run_finished"
    first_epoch = types.index("epoch")
    assert "batch" in types[2:first_epoch]
    assert types.count("epoch") == 2
    batch = events[types.index("batch")]
    assert batch["aggregation"] == "running_mean" and batch["epoch"] == 1
    assert events[-1]["status"] == "succeeded" and events[-1]["model_id"] == run_id
    # What the viewer got live is exactly what the store keeps for replay.
    assert idle_lab.events(run_id) == events

    run = idle_lab.run(run_id)
    assert run["status"] == "succeeded" and run["epochs_done"] == 2
    assert run["best_val_accuracy"] == events[-1]["best_val_accuracy"]
    assert run["summary"]["metrics"]["epochs_run"] == 2
    model = idle_lab.workdir / "models" / run["model_path"]
    assert model.is_file() and model.name == "model.keras"
    assert run["worker"].startswith("lab@")
    listed = {r["id"]: r for r in idle_lab.get("/api/runs").json()["runs"]}
    assert listed[run_id]["status"] == "succeeded"


def test_late_and_reconnecting_viewers_get_each_event_once(idle_lab):
    run_id = idle_lab.launch({**TINY, "epochs": 6})
    early = Viewer(idle_lab.url, run_id)
    early.wait_for("epoch")
    late = Viewer(idle_lab.url, run_id)  # joins mid-run: replay, then live
    flaky = Viewer(idle_lab.url, run_id, transport="polling")
    flaky.wait_for("epoch")
    flaky.disconnect()
    time.sleep(1.5)  # events go by while it is away
    flaky.reconnect()
    assert flaky.join_reply["ok"] is True

    stored = None
    for viewer in (early, late, flaky):
        events = viewer.wait_finished()
        viewer.disconnect()
        _assert_complete(events)
        stored = stored or idle_lab.events(run_id)
        assert events == stored
    assert _types(stored).count("epoch") == 6


def test_join_of_unknown_run_is_refused(idle_lab):
    viewer = Viewer(idle_lab.url, "no-such-run")
    try:
        assert viewer.join_reply["ok"] is False
        assert "no-such-run" in viewer.join_reply["error"]
    finally:
        viewer.disconnect()


def test_lr_reduction_and_early_stop_are_streamed(idle_lab):
    # A learning rate so small nothing improves: plateau and early stop act at epoch 2.
    run_id = idle_lab.launch({**TINY, "recipe": "seed_cnn", "image_size": 48, "epochs": 6,
                              "learning_rate": 1e-7, "lr_patience": 0, "lr_factor": 0.5,
                              "early_stopping_patience": 1})
    viewer = Viewer(idle_lab.url, run_id)
    events = viewer.wait_finished()
    viewer.disconnect()
    _assert_complete(events)
    reduced = [e for e in events if e["type"] == "lr_reduced"]
    assert reduced and reduced[0]["epoch"] == 2
    assert reduced[0]["new_lr"] == pytest.approx(reduced[0]["old_lr"] * 0.5, rel=1e-3)
    stopped = [e for e in events if e["type"] == "early_stopped"]
    assert [(e["epoch"], e["best_epoch"]) for e in stopped] == [(2, 1)]
    types = _types(events)
    assert types.index("lr_reduced") < types.index("early_stopped") < types.index("run_finished")
    run = idle_lab.run(run_id)
    assert run["status"] == "succeeded"
    assert run["summary"]["metrics"]["early_stopped_epoch"] == 2


def test_a_failing_run_ends_failed_with_its_message(idle_lab):
    run_id = idle_lab.launch({**TINY, "recipe": "mobilenet_v2", "epochs": 1})
    viewer = Viewer(idle_lab.url, run_id)
    events = viewer.wait_finished()
    viewer.disconnect()
    _assert_complete(events)
    assert events[-1]["status"] == "failed"
    assert "could not download the ImageNet weights" in events[-1]["error"]
    run = idle_lab.run(run_id)
    assert run["status"] == "failed" and run["error"] == events[-1]["error"]
    assert run["model_path"] is None
    # The worker is fine afterwards.
    next_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_bad_settings_are_422_naming_each_field(idle_lab):
    before = len(idle_lab.get("/api/runs").json()["runs"])
    resp = idle_lab.post("/api/runs", json={"epochs": 0, "learning_rate": -0.1,
                                            "batch_size": 2.5, "colour": "tabby",
                                            "recipe": "resnet9000"})
    assert resp.status_code == 422
    body = resp.json()
    assert set(body["fields"]) == {"epochs", "learning_rate", "batch_size", "colour", "recipe"}
    assert "at least" in body["fields"]["learning_rate"]
    assert "unknown setting" in body["fields"]["colour"]
    assert len(idle_lab.get("/api/runs").json()["runs"]) == before  # nothing was queued

    not_json = idle_lab.post("/api/runs", data="epochs=3",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    assert idle_lab.post("/api/runs", json=[1, 2]).status_code == 422
    assert idle_lab.get("/api/runs/nope").status_code == 404
    assert idle_lab.get("/api/runs/nope/events").status_code == 404
    assert idle_lab.post("/api/runs/nope/cancel").status_code == 404
    assert idle_lab.get("/api/nothing-here").json()["error"]


def test_events_endpoint_pages_with_after(idle_lab):
    run_id = idle_lab.launch({**TINY, "epochs": 1})
    idle_lab.wait_status(run_id, "succeeded")
    everything = idle_lab.events(run_id)
    _assert_complete(everything)
    assert idle_lab.events(run_id, after=3) == everything[3:]
    page = idle_lab.get(f"/api/runs/{run_id}/events", params={"after": 0, "limit": 2}).json()
    assert [e["seq"] for e in page["events"]] == [1, 2] and page["more"] is True
    assert idle_lab.get(f"/api/runs/{run_id}/events", params={"after": "x"}).status_code == 400
    assert idle_lab.get(f"/api/runs/{run_id}/events", params={"after": -1}).status_code == 400


def test_cancel_a_queued_and_a_running_run(idle_lab):
    running = idle_lab.launch(ENDLESS)
    viewer = Viewer(idle_lab.url, running)
    viewer.wait_for("epoch")
    queued = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.run(queued)["status"] == "queued"
    assert idle_lab.run(queued)["queue_position"] == 1

    resp = idle_lab.post(f"/api/runs/{queued}/cancel")
    assert resp.status_code == 202 and resp.json()["outcome"] == "cancelled"
    assert idle_lab.run(queued)["status"] == "cancelled"
    assert _types(idle_lab.events(queued)) == ["run_queued", "run_finished"]

    resp = idle_lab.post(f"/api/runs/{running}/cancel")
    assert resp.status_code == 202 and resp.json()["outcome"] == "cancelling"
    events = viewer.wait_finished(timeout=60)
    viewer.disconnect()
    _assert_complete(events)
    assert events[-1]["status"] == "cancelled"
    run = idle_lab.run(running)
    assert run["status"] == "cancelled"
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) < ENDLESS["epochs"]
    # The best weights so far are kept as the run's model.
    assert run["summary"]["metrics"]["best_epoch"] >= 1
    assert (idle_lab.workdir / "models" / run["model_path"]).is_file()
    assert idle_lab.post(f"/api/runs/{running}/cancel").status_code == 409

    # The cancelled run's message reaches the worker before this one's, and is skipped.
    after = idle_lab.launch({**TINY, "epochs": 1})
    idle_lab.wait_status(after, "succeeded")
    assert _types(idle_lab.events(queued)) == ["run_queued", "run_finished"]
    assert idle_lab.run(queued)["status"] == "cancelled"


def test_killed_worker_leaves_run_failed_and_next_run_succeeds(idle_lab):
    run_id = idle_lab.launch(ENDLESS)
    viewer = Viewer(idle_lab.url, run_id)
    viewer.wait_for("batch")
    idle_lab.worker.kill()  # SIGKILL to the worker and its pool process
    # No worker is left: the web process notices the missing heartbeat.
    run = idle_lab.wait_status(run_id, "failed", timeout=60)
    assert "worker lost" in run["error"]
    events = viewer.wait_finished(timeout=30)
    viewer.disconnect()
    _assert_complete(events)
    assert events[-1]["status"] == "failed" and "worker lost" in events[-1]["error"]

    idle_lab.start_worker()
    next_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"
    assert idle_lab.run(run_id)["status"] == "failed"  # the lost run is not retried


def test_a_run_reaped_while_its_worker_still_trains_stays_reaped_and_the_worker_stops(
        idle_lab):
    run_id = idle_lab.launch(ENDLESS)
    viewer = Viewer(idle_lab.url, run_id)
    viewer.wait_for("epoch")
    # The worker freezes (a swapping laptop, a stopped VM): no heartbeat for longer than
    # LAB_RUN_LOST_AFTER_S (6 s here), so the web process reaps the run as lost...
    os.killpg(idle_lab.worker.pid, signal.SIGSTOP)
    try:
        run = idle_lab.wait_status(run_id, "failed", timeout=60)
    finally:
        os.killpg(idle_lab.worker.pid, signal.SIGCONT)  # ...then it wakes and trains on
    assert "worker lost" in run["error"]
    events = viewer.wait_finished(timeout=30)
    viewer.disconnect()
    _assert_complete(events)
    assert events[-1]["status"] == "failed"
    # The worker learns at its next event that the run is no longer its own and stops,
    # with one sentence; the run keeps the status the reaper gave it.
    deadline = time.monotonic() + 60
    while "no longer this worker's" not in idle_lab.worker.log_text():
        assert time.monotonic() < deadline, idle_lab.logs()
        time.sleep(0.2)
    time.sleep(2)  # time for anything further it might (wrongly) write
    assert idle_lab.run(run_id)["status"] == "failed"
    assert idle_lab.events(run_id) == events
    log = idle_lab.worker.log_text() + idle_lab.web.log_text()
    assert "IntegrityError" not in log and "Traceback" not in idle_lab.worker.log_text()
    # ...and is free for the next run.
    next_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_queue_positions_are_pushed_as_the_queue_moves(idle_lab):
    running = idle_lab.launch(ENDLESS)
    idle_lab.wait_event(running, "batch")
    first = idle_lab.launch({**TINY, "epochs": 1})
    second = idle_lab.launch({**TINY, "epochs": 1})
    watcher = Viewer(idle_lab.url, second)
    assert watcher.join_reply["queue_position"] == 2
    idle_lab.post(f"/api/runs/{first}/cancel")
    watcher.wait_position(1)  # pushed, not asked for
    idle_lab.post(f"/api/runs/{running}/cancel")
    watcher.wait_position(None)  # it left the queue: the worker took it
    watcher.wait_finished(timeout=120)
    watcher.disconnect()
    assert idle_lab.run(second)["status"] == "succeeded"


def test_restarted_worker_marks_its_lost_run_at_once(idle_lab):
    run_id = idle_lab.launch(ENDLESS)
    idle_lab.wait_event(run_id, "batch")
    idle_lab.worker.kill()
    started = time.monotonic()
    idle_lab.start_worker()  # same name: what it was running died with it
    run = idle_lab.wait_status(run_id, "failed", timeout=30)
    assert "worker lost" in run["error"]
    assert time.monotonic() - started < 30
    next_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_stopping_the_worker_ends_its_run_cancelled_with_its_best_weights(idle_lab):
    run_id = idle_lab.launch(ENDLESS)
    idle_lab.wait_event(run_id, "checkpoint")
    started = time.monotonic()
    idle_lab.worker.stop()  # SIGTERM: Celery's warm shutdown
    assert time.monotonic() - started < 30 and not idle_lab.worker.alive()
    run = idle_lab.run(run_id)
    assert run["status"] == "cancelled" and "worker was shut down" in run["error"]
    assert (idle_lab.workdir / "models" / run["model_path"]).is_file()
    assert idle_lab.events(run_id)[-1]["status"] == "cancelled"
    idle_lab.start_worker()


def test_runs_survive_restarts_and_redis_outage(idle_lab):
    run_id = idle_lab.launch({**TINY, "epochs": 1})
    idle_lab.wait_status(run_id, "succeeded")
    stored = idle_lab.events(run_id)

    idle_lab.redis.stop()
    resp = idle_lab.post("/api/runs", json={**TINY, "epochs": 1})
    assert resp.status_code == 503 and "Redis" in resp.json()["error"]
    assert idle_lab.get("/api/runs").status_code == 200  # reading needs no Redis
    assert idle_lab.get("/api/health").status_code == 503

    idle_lab.web.stop()
    idle_lab.worker.stop()
    idle_lab.start_redis()
    idle_lab.start_web()
    idle_lab.start_worker()
    assert idle_lab.run(run_id)["status"] == "succeeded"
    assert idle_lab.events(run_id) == stored
    replay = Viewer(idle_lab.url, run_id)
    assert replay.wait_finished(timeout=30) == stored
    replay.disconnect()
    next_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(next_id, ("succeeded", "failed"))["status"] == "succeeded"


# Imported by every Python process of the stack: TensorFlow's import (which only a run's
# pool process does) takes LAB_TEST_SLOW_TF_S seconds longer, as on a busy machine.
SLOW_TF_IMPORT = """
import os, sys, time

class _SlowTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            sys.meta_path.remove(self)
            time.sleep(float(os.environ["LAB_TEST_SLOW_TF_S"]))
        return None

sys.meta_path.insert(0, _SlowTensorFlow())
"""


def test_a_run_whose_tensorflow_import_outlasts_the_loss_timeout_is_not_reaped(
        tiny_dataset, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_TF_IMPORT)
    (tmp_path / "lab").mkdir()
    lab = LabStack(tmp_path / "lab", tiny_dataset, extra_env={
        "PYTHONPATH": str(hook), "LAB_TEST_SLOW_TF_S": "7",
        "LAB_HEARTBEAT_S": "1", "LAB_RUN_LOST_AFTER_S": "3"})
    try:
        lab.start()
        run_id = lab.launch({**TINY, "epochs": 1})
        # Reaped as lost (no heartbeat for 3 s) when the heartbeat waited for the import.
        run = lab.wait_status(run_id, ("succeeded", "failed"), timeout=120)
        assert run["status"] == "succeeded", run["error"]
        assert "worker lost" not in lab.web.log_text()
        assert "Traceback" not in lab.worker.log_text()
    finally:
        lab.stop()
