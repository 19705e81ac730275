"""The class's Runs tab and the instructor's controls on the real stack (redis-server, a
Celery worker, the web server): a paused queue on a real worker, and real Chromium with two
students and the instructor."""

from __future__ import annotations

import re
import time

import pytest
import redis
import requests

from tests.conftest import PASSCODE
from tests.lab_stack import TINY, LabStack
from tests.test_browser import browser, fill_train_form, shot, watched  # noqa: F401

ONE_EPOCH = {**TINY, "epochs": 1}


@pytest.fixture(scope="module")
def class_lab(tiny_dataset, tmp_path_factory):
    """A class's lab: the instructor's passcode, launching open to everyone."""
    lab = LabStack(tmp_path_factory.mktemp("class-runs"), tiny_dataset, {
        "LAB_PASSCODE": PASSCODE, "LAB_LOCK_LAUNCH": "0"}).start()
    yield lab
    lab.stop()


@pytest.fixture
def room(class_lab):
    """The lab with nothing queued or running and the queue running, before and after."""
    class_lab.post("/api/queue/resume")
    class_lab.cancel_active()
    yield class_lab
    class_lab.post("/api/queue/resume")
    class_lab.post("/api/launching/unlock")
    class_lab.cancel_active()


def _student(lab: LabStack, name: str) -> requests.Session:
    s = requests.Session()
    s.headers["X-Lab-Name"] = name
    return s


def _tasks_left(lab: LabStack) -> int:
    """Training tasks waiting on the queue or taken by a worker and not yet done (kombu's
    Redis transport keeps a taken one in ``unacked`` until its task ends: ``acks_late``)."""
    client = redis.Redis(port=lab.redis_port, socket_timeout=5)
    return int(client.llen("celery")) + int(client.hlen("unacked"))


def test_a_paused_queue_starts_nothing_and_resuming_starts_the_queued_runs(room):
    assert room.post("/api/queue/pause").json()["queue_paused"] is True
    ada, bea = _student(room, "Ada"), _student(room, "Bea")
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


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("#runs-table tbody tr",
                                     "rows => rows.map(r => r.dataset.runId)")


def test_two_students_see_their_own_runs_and_the_instructor_pauses_the_queue(room, watched):  # noqa: F811
    lab = room
    instructor = watched().page
    instructor.goto(lab.url + "/unlock?next=/runs")
    instructor.fill("#passcode", PASSCODE)
    instructor.click("#unlock")
    instructor.wait_for_url("**/runs")
    assert instructor.locator("#instructor-bar").is_visible()
    instructor.click("#queue-toggle")  # "Pause the queue": the page reloads with the state
    instructor.wait_for_selector("#queue-state[data-paused='1']")
    assert "paused" in instructor.locator("#queue-state").inner_text()
    assert instructor.locator("#queue-toggle").inner_text().strip() == "Resume the queue"
    assert lab.get("/api/lab").json()["queue_paused"] is True

    launched = {}
    students = {}
    for name in ("Ada", "Bea"):
        page = watched().page
        page.goto(lab.url + "/train")
        page.fill("#f-name", name)
        fill_train_form(page, epochs=1, image_size=32, batch_size=8)
        page.click("#start")
        page.wait_for_url(re.compile(r".*/runs/\w+$"))
        launched[name] = page.url.rsplit("/", 1)[-1]
        students[name] = page
    for name, page in students.items():
        page.goto(lab.url + "/runs")  # "mine" is on: only this student's run
        assert _rows(page) == [launched[name]]
        assert page.locator("#filter-mine").input_value() == "1"
        assert page.locator("#runs-table td.owner").inner_text() == name
        assert "The queue is paused by the instructor" in page.locator("#queue-paused").inner_text()
        assert page.locator("#instructor-bar").count() == 0
    shot(students["Ada"], "runs-mine")
    for run_id in launched.values():
        assert lab.run(run_id)["status"] == "queued"

    instructor.reload()
    assert set(launched.values()) <= set(_rows(instructor))  # everyone's, for the instructor
    shot(instructor, "runs-instructor")
    instructor.click("#queue-toggle")  # "Resume the queue"
    instructor.wait_for_selector("#queue-state[data-paused='0']")
    for run_id in launched.values():
        lab.wait_status(run_id, "succeeded", timeout=240)

    ada = students["Ada"]
    ada.select_option("#filter-mine", "0")  # everyone's: both runs, names as text
    ada.click("#apply-filters")
    ada.wait_for_url("**/runs?mine=0*")
    assert set(launched.values()) <= set(_rows(ada))
    ada.go_back()  # the filters are the URL: back is "mine" again
    ada.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 1")
    assert _rows(ada) == [launched["Ada"]]

    instructor.reload()
    instructor.click("#launch-toggle")  # "Lock launching"
    instructor.wait_for_selector("#launch-state[data-locked='1']")
    bea = students["Bea"]
    bea.goto(lab.url + "/train")
    assert bea.locator("#f-passcode").is_visible()  # the Train page says launching is locked
    assert "needs the passcode" in bea.locator("#h-passcode").inner_text()
    archive = instructor.locator(f"tr[data-run-id='{launched['Bea']}'] button", has_text="Archive")
    archive.click()
    instructor.wait_for_load_state()
    instructor.wait_for_function(
        f"() => !document.querySelector(\"tr[data-run-id='{launched['Bea']}']\")")
    assert lab.run(launched["Bea"])["archived"]
