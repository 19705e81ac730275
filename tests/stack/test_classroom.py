"""A class on the real stack: who is who behind one address, caps per student, the
instructor's passcode and controls, the fair queue."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from testkit.lab_stack import ENDLESS, ONE_EPOCH, Viewer


def _launch(s: requests.Session, config: dict = ONE_EPOCH) -> requests.Response:
    return s.post(s.base + "/api/runs", json=config, timeout=30)  # type: ignore[attr-defined]


def test_each_student_is_someone_with_a_name_behind_one_address(room):
    ada = room.student("Ada")  # an API client names itself with X-Lab-Name
    a = _launch(ada)
    assert a.status_code == 202, a.text
    assert a.json()["run"]["owner_name"] == "Ada" and a.json()["run"]["mine"] is True
    # A browser types its name into the Train form: markup, control characters, too long.
    grace = room.student(None)
    form = grace.post(room.url + "/train", allow_redirects=False, timeout=30, data={
        "name": "  <b>Grace</b>\x00\u202e Hopper  " + "x" * 60, "recipe": "fast_cnn",
        "epochs": "1", "image_size": "32", "batch_size": "8", "val_split": "0.15",
        "early_stopping_patience": "2", "lr_factor": "0.5", "lr_patience": "1", "seed": "1"})
    assert form.status_code == 302, form.text
    g_id = form.headers["Location"].rsplit("/", 1)[-1]
    g = grace.get(f"{room.url}/api/runs/{g_id}", timeout=30)
    assert g.json()["mine"] is True
    shown = g.json()["owner_name"]
    assert shown.startswith("<b>Grace</b> Hopper") and len(shown) == 40  # plain text, capped
    assert "\x00" not in shown and "\u202e" not in shown
    listed = {r["id"]: r for r in room.get("/api/runs").json()["runs"]}
    assert listed[a.json()["id"]]["owner_name"] == "Ada"
    assert listed[a.json()["id"]]["mine"] is False  # the test's own client launched neither
    assert not {"owner", "launched_from", "client"} & set(listed[a.json()["id"]])
    # The name is remembered for that browser; the page shows it as text, never markup.
    again = ada.post(room.url + "/api/runs", json=ONE_EPOCH, timeout=30, headers={
        "X-Lab-Name": ""})
    assert again.json()["run"]["owner_name"] == "Ada"
    page = room.get(f"/runs/{g_id}").text
    assert "&lt;b&gt;Grace&lt;/b&gt; Hopper" in page and "<b>Grace</b>" not in page
    assert 'value="&lt;b&gt;Grace' in grace.get(room.url + "/train", timeout=30).text


def test_thirty_students_behind_one_address_all_at_once_get_two_runs_each(room):
    students = [room.student(f"Student {i}") for i in range(30)]
    for s in students:  # each opened the lab's page first, as a browser does: its identity
        s.get(room.url + "/train", timeout=30)
    tries = [s for s in students for _ in range(3)]  # each sends three launches at once
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(_launch, tries))
    by_student: dict[str, list[int]] = {}
    for s, resp in zip(tries, answers, strict=True):
        by_student.setdefault(s.headers["X-Lab-Name"], []).append(resp.status_code)
    assert all(sorted(codes) == [202, 202, 429] for codes in by_student.values()), by_student
    refused = next(r for r in answers if r.status_code == 429).json()["error"]
    assert refused == ("you already have 2 runs queued or training (at most 2 each); wait for "
                       "one to finish or cancel one")


def test_the_instructor_is_exempt_and_a_guessing_student_locks_out_only_themselves(room):
    instructor = room.student("Ms Lovelace", passcode=True)
    assert all(_launch(instructor).status_code == 202 for _ in range(3))  # past the cap
    guesser = room.student("Bob")
    for i in range(9):
        wrong = guesser.post(f"{room.url}/api/runs/x/next", timeout=30,
                             headers={"X-Lab-Passcode": f"guess{i}"})
    assert wrong.status_code == 429 and "from this browser" in wrong.json()["error"]
    # The same address, another browser: the right passcode still works.
    late = room.student(None, passcode=True)
    assert _launch(late).status_code == 202
    # And watching or launching never needed it.
    assert _launch(room.student("Carol")).status_code == 202


def test_only_the_owner_or_the_instructor_cancels_and_the_run_says_who(room):
    ada, mallory = room.student("Ada"), room.student("Mallory")
    first = _launch(ada, ENDLESS).json()["id"]
    instructor = room.student(None, passcode=True)
    blocker = _launch(instructor, ENDLESS).json()["id"]  # the other worker busy too
    for run_id in (first, blocker):
        room.wait_status(run_id, "running")
    queued = _launch(ada).json()["id"]
    refused = mallory.post(f"{room.url}/api/runs/{first}/cancel", timeout=30)
    assert refused.status_code == 401 and room.run(first)["status"] in ("queued", "running")
    assert ada.post(f"{room.url}/api/runs/{queued}/cancel", timeout=30).status_code == 202
    run = room.run(queued)
    assert run["cancelled_by"] == "Ada" and run["started"] is None
    assert room.events(queued)[-1]["cancelled_by"] == "Ada"
    room.wait_event(first, "batch")
    assert instructor.post(f"{room.url}/api/runs/{first}/cancel", timeout=30).status_code == 202
    run = room.wait_status(first, "cancelled")
    assert run["cancelled_by"] == "the instructor"
    assert room.events(first)[-1]["cancelled_by"] == "the instructor"  # from the worker's end


def test_the_queue_is_fair_and_the_instructor_can_move_a_run_to_the_front(room):
    instructor = room.student(None, passcode=True)
    blockers = [_launch(instructor, ENDLESS).json()["id"] for _ in room.worker_names]
    for blocker in blockers:  # every worker busy
        room.wait_event(blocker, "batch")
    greedy, bea, cy = room.student("Greedy"), room.student("Bea"), room.student("Cy")
    g1, g2 = _launch(greedy).json()["id"], _launch(greedy).json()["id"]
    b1, c1 = _launch(bea).json()["id"], _launch(cy).json()["id"]
    positions = {r: room.run(r)["queue_position"] for r in (g1, g2, b1, c1)}
    # Nobody's second run before everybody's first: launched g1 g2 b1 c1, started g1 b1 c1 g2.
    assert positions == {g1: 1, b1: 2, c1: 3, g2: 4}
    watcher = Viewer(room.url, g2)
    assert watcher.join_reply["queue_position"] == 4
    assert greedy.post(f"{room.url}/api/runs/{g2}/next", timeout=30).status_code == 401
    moved = instructor.post(f"{room.url}/api/runs/{g2}/next", timeout=30)
    assert moved.status_code == 202 and moved.json()["run"]["queue_position"] == 1
    watcher.wait_position(1)  # pushed to the viewer as the queue moves
    for blocker in blockers:
        instructor.post(f"{room.url}/api/runs/{blocker}/cancel", timeout=30)
    for run_id in (g2, b1, c1, g1):
        room.wait_status(run_id, "succeeded", timeout=240)
    watcher.disconnect()
    started = sorted((g2, g1, b1, c1), key=lambda r: room.run(r)["started"])
    assert started == [g2, b1, c1, g1]  # after g2, Greedy's turn comes round last


def test_two_runs_train_at_once_both_succeed_and_the_photos_are_decoded_once(room):
    ada, bea = room.student("Ada"), room.student("Bea")
    config = {**ONE_EPOCH, "epochs": 3}
    runs = [_launch(s, config).json()["id"] for s in (ada, bea)]
    deadline = time.monotonic() + 120
    while not all(room.run(r)["status"] == "running" for r in runs):  # side by side
        assert time.monotonic() < deadline, room.logs()
        time.sleep(0.1)
    assert {room.worker_named(room.run(r)) for r in runs} == {"lab", "lab2"}
    runs += [_launch(s, config).json()["id"] for s in (ada, bea)]  # a second round
    for run_id in runs:
        room.wait_status(run_id, "succeeded", timeout=240)
    # Every run this lab trained at 32 px read its photos from one cache, built once
    # (archived runs too: earlier lessons' runs on this shared class lab).
    states = []
    for run in room.get("/api/runs", params={"archived": 1}).json()["runs"]:
        started = [e for e in room.events(run["id"]) if e["type"] == "run_started"]
        if started:
            states.append(started[0]["photo_cache"]["state"])
    assert states.count("built") == 1 and states.count("reused") >= 3, states
    # Four runs, two workers: two processes, each training run after run (TensorFlow loaded
    # once), not a fresh process per run.
    pids = set()
    for log in (w.log_text() for w in room.workers.values()):
        pids |= {line.split(" in process ")[1].split()[0] for line in log.splitlines()
                 if " in process " in line and any(f"run {r}:" in line for r in runs)}
    assert len(pids) == 2, pids
    for w in room.workers.values():  # new models trace anew: expected, so not warned about
        assert "retracing" not in w.log_text()
