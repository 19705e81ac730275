"""The Runs tab for a class and the instructor's controls, without the real stack: filters,
sorts and pages done in SQL (on SQLite and PostgreSQL), the paused queue and locked
launching in ``lab_flags``, archiving, and the passcode on every control.

The real-stack halves (a paused queue on a real worker, two browsers) are in
test_class_runs_stack.py."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from core.lab_flags import LAUNCH_LOCKED, QUEUE_PAUSED, LabFlags
from testkit.lab_stack import PASSCODE
from testkit.postgres import STORES

CONFIG = {"recipe": "fast_cnn", "epochs": 2}
INSTRUCTOR = {"X-Lab-Passcode": PASSCODE}


@pytest.fixture(params=STORES)
def lab_settings(request, lab_settings):
    """Every test twice, over SQLite and over PostgreSQL (as test_runs_service.py), in a lab
    with a passcode whose launching is open unless the instructor locks it."""
    settings = dataclasses.replace(lab_settings, passcode=PASSCODE, lock_launch=False)
    if request.param == "sqlite":
        return settings
    return dataclasses.replace(settings, database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def service(service):
    yield service
    service.store.engine.dispose()  # the database is dropped after the test


@pytest.fixture
def app_service(app):
    """The app's own runs service, its queue left out (nothing listens at its Redis): runs
    are stored and listed, never trained, in these tests."""
    svc = app.extensions["lab_runs"]
    svc._enqueue = None
    yield svc
    svc.store.engine.dispose()


def _finish(store, run_id: str, *, status: str = "succeeded", accuracy: float | None = None,
            started: float, seconds: float) -> None:
    store.update_run(run_id, status=status, started=started, finished=started + seconds,
                     best_val_accuracy=accuracy)


def _class(service) -> dict[str, str]:
    """Six runs of three people (one without a name), in a known order of everything."""
    made = {}
    people = (("a1", "A", "Ada", "fast_cnn"), ("b1", "B", "Bea", "sprint_cnn"),
              ("a2", "A", "Ada", "sprint_cnn"), ("n1", "N", None, "fast_cnn"),
              ("b2", "B", "Bea", "fast_cnn"), ("a3", "A", "Ada", "fast_cnn"))
    for key, owner, name, recipe in people:
        made[key] = service.create({**CONFIG, "recipe": recipe}, owner=owner,
                                   owner_name=name)["id"]
        time.sleep(0.002)  # distinct launch times
    t0 = time.time() - 1000
    store = service.store
    _finish(store, made["a1"], accuracy=0.70, started=t0, seconds=50)
    _finish(store, made["b1"], accuracy=0.90, started=t0 + 100, seconds=10)
    _finish(store, made["a2"], status="failed", started=t0 + 200, seconds=300)
    _finish(store, made["n1"], accuracy=0.80, started=t0 + 300, seconds=20)
    store.update_run(made["b2"], status="running", started=t0 + 400)  # still going: longest
    return made  # a3 stays queued: no start, no duration, no accuracy


def _ids(found: list[dict], made: dict[str, str]) -> list[str]:
    names = {v: k for k, v in made.items()}
    return [names[r["id"]] for r in found]


# -- the store: filters, sorts and pages in SQL ------------------------------------------------


def test_find_runs_filters_by_owner_name_status_and_recipe(service):
    made = _class(service)
    find = service.store.find_runs
    assert _ids(find()[0], made) == ["a3", "b2", "n1", "a2", "b1", "a1"]  # newest first
    assert _ids(find(owner="A")[0], made) == ["a3", "a2", "a1"]
    assert _ids(find(owner_name="Bea")[0], made) == ["b2", "b1"]
    assert _ids(find(owner_name="")[0], made) == ["n1"]  # runs without a name
    assert _ids(find(statuses=("succeeded", "failed"))[0], made) == ["n1", "a2", "b1", "a1"]
    assert _ids(find(recipe="sprint_cnn")[0], made) == ["a2", "b1"]
    rows, total = find(owner="A", recipe="fast_cnn", statuses=("succeeded",))
    assert _ids(rows, made) == ["a1"] and total == 1
    assert service.store.owner_names() == ["Ada", "Bea"]


def test_find_runs_sorts_with_missing_values_last_either_way(service):
    made = _class(service)
    find = service.store.find_runs
    assert _ids(find(sort="accuracy")[0], made)[:3] == ["b1", "n1", "a1"]
    assert _ids(find(sort="accuracy", descending=False)[0], made)[:3] == ["a1", "n1", "b1"]
    # No accuracy (failed, running, queued): last, newest first, in both orders.
    assert _ids(find(sort="accuracy")[0], made)[3:] == ["a3", "b2", "a2"]
    assert _ids(find(sort="accuracy", descending=False)[0], made)[3:] == ["a3", "b2", "a2"]
    assert _ids(find(sort="started")[0], made) == ["b2", "n1", "a2", "b1", "a1", "a3"]
    # The running run has gone ~600 s so far: the longest; the queued one has no duration.
    assert _ids(find(sort="duration")[0], made) == ["b2", "a2", "a1", "n1", "b1", "a3"]
    assert _ids(find(sort="duration", descending=False)[0], made) == [
        "b1", "n1", "a1", "a2", "b2", "a3"]
    with pytest.raises(ValueError, match="sort must be one of"):
        find(sort="name")


def test_find_runs_pages_and_counts_and_hides_archived_runs(service):
    made = _class(service)
    find = service.store.find_runs
    first, total = find(limit=4)
    second, again = find(offset=4, limit=4)
    assert total == again == 6 and len(first) == 4 and len(second) == 2
    assert _ids(first + second, made) == _ids(find()[0], made)  # no run twice, none left out
    assert service.archive(made["b1"]) == "archived"
    rows, total = find()
    assert made["b1"] not in {r["id"] for r in rows} and total == 5
    assert "Bea" in service.store.owner_names()  # b2 is not archived
    rows, total = find(include_archived=True)
    assert total == 6 and next(r for r in rows if r["id"] == made["b1"])["archived"]
    assert len(service.store.list_runs()) == 6  # the old callers (predict) see every run


# -- the service: archive, pause, lock --------------------------------------------------------


def test_only_finished_runs_are_archived_and_nothing_is_deleted(service):
    made = _class(service)
    assert service.archive(made["a3"]) == "active"  # queued: cancel it or let it finish
    assert service.archive(made["b2"]) == "active"  # running
    assert service.archive("nope") == "missing"
    assert service.archive(made["a1"]) == "archived"
    run = service.store.get_run(made["a1"])
    assert run["archived"] and run["status"] == "succeeded" and service.store.events(made["a1"])
    assert service.archive(made["a1"], False) == "unarchived"
    assert service.store.get_run(made["a1"])["archived"] is None


def test_a_paused_queue_starts_nothing_and_resuming_resends_the_lost_tasks(service):
    a1 = service.create(CONFIG, owner="A")["id"]
    a2 = service.create(CONFIG, owner="A")["id"]
    service.pause_queue(by="Ms L")
    b1 = service.create(CONFIG, owner="B")["id"]  # launches still queue while paused
    assert len(service.tasks_sent) == 3
    # Workers take the three tasks while paused: each claims nothing and ends.
    assert [service.claim_next("w1") for _ in range(3)] == [None, None, None]
    assert {r["status"] for r in service.store.list_runs()} == {"queued"}
    # The web's periodic check does not re-send tasks a paused queue would only drop.
    assert service.heal_queue(lambda: 0) == 0 and len(service.tasks_sent) == 3
    assert service.flags.state()["queue_paused_by"] == "Ms L"
    sent = service.resume_queue(lambda: 0, by="Ms L")
    assert sent == 3 and len(service.tasks_sent) == 6  # one for each queued run
    # And they start in the fair order: A's first, then B's first, then A's second.
    assert [service.claim_next("w1")["id"] for _ in range(3)] == [a1, b1, a2]


def test_resuming_sends_only_the_tasks_that_are_missing(service):
    for _ in range(3):
        service.create(CONFIG)
    service.pause_queue()
    assert service.resume_queue(lambda: 2) == 1  # two still wait on the queue
    assert len(service.tasks_sent) == 4


def test_the_lock_switch_defaults_to_the_setting_and_a_stored_value_wins(service):
    flags = LabFlags(service.store, launch_locked_default=True)
    assert flags.launch_locked() and not flags.queue_paused()
    assert flags.state()["launch_locked_by"] is None
    service.lock_launching(False, by="Ms L")
    assert not flags.launch_locked()  # the instructor's switch over LAB_LOCK_LAUNCH=1
    service.lock_launching(True)
    service.lock_launching(True)  # set twice: one row, updated
    assert flags.launch_locked() and set(service.store.flags()) == {LAUNCH_LOCKED}
    with pytest.raises(KeyError):
        flags.set("anything", True)
    assert QUEUE_PAUSED not in service.store.flags()


# -- GET /api/runs ------------------------------------------------------------------------------


def test_api_lists_every_run_without_paging_and_a_page_with_it(client, app_service):
    made = _class(app_service)
    every = client.get("/api/runs").json
    assert every["total"] == 6 and len(every["runs"]) == 6 and every["page"] == 1
    assert every["runs"][0]["owner_name"] == "Ada" and "owner" not in every["runs"][0]
    page = client.get("/api/runs?per_page=2&page=2&sort=accuracy&order=desc").json
    assert (page["total"], page["page"], page["per_page"]) == (6, 2, 2)
    assert _ids(page["runs"], made) == ["a1", "a3"]
    assert "history" not in (page["runs"][0]["summary"] or {})
    only = client.get("/api/runs?status=succeeded,failed&recipe=sprint_cnn&by=Ada").json
    assert _ids(only["runs"], made) == ["a2"] and only["total"] == 1
    assert client.get("/api/runs?mine=1").json == {"runs": [], "total": 0, "page": 1,
                                                   "per_page": 1}  # this client launched none


@pytest.mark.parametrize(("query", "sentence"), [
    ("status=done", "there is no status 'done': use queued, running, succeeded, cancelled or "
                    "failed"),
    ("recipe=resnet", "there is no recipe 'resnet': use "),
    ("sort=name", "sort must be created, started, accuracy or duration, got 'name'"),
    ("order=up", "order must be desc or asc, got 'up'"),
    ("page=0", "page must be between 1 and 1000000, got 0"),
    ("per_page=many", "per_page must be a whole number, got 'many'"),
    ("mine=perhaps", "mine must be 1 or 0, got 'perhaps'"),
])
def test_api_refuses_a_bad_value_with_one_sentence(client, query, sentence):
    resp = client.get(f"/api/runs?{query}")
    assert resp.status_code == 400 and resp.json["error"].startswith(sentence)


def test_archived_runs_are_listed_only_for_the_passcode(client, app_service):
    made = _class(app_service)
    assert client.post(f"/api/runs/{made['a1']}/archive").status_code == 401
    resp = client.post(f"/api/runs/{made['a1']}/archive", headers=INSTRUCTOR)
    assert resp.status_code == 200 and resp.json["outcome"] == "archived"
    assert resp.json["run"]["archived"]
    assert made["a1"] not in {r["id"] for r in client.get("/api/runs").json["runs"]}
    assert client.get("/api/runs?archived=1").status_code == 401
    listed = client.get("/api/runs?archived=1", headers=INSTRUCTOR).json
    assert listed["total"] == 6
    # Still there for whoever has the link: its page opens, its API answers.
    assert client.get(f"/runs/{made['a1']}").status_code == 200
    assert client.get(f"/api/runs/{made['a1']}").json["archived"]
    queued = client.post(f"/api/runs/{made['a3']}/archive", headers=INSTRUCTOR)
    assert queued.status_code == 409 and "has not ended yet" in queued.json["error"]
    assert client.post("/api/runs/nope/archive", headers=INSTRUCTOR).status_code == 404
    back = client.post(f"/api/runs/{made['a1']}/unarchive", headers=INSTRUCTOR)
    assert back.json["outcome"] == "unarchived" and client.get("/api/runs").json["total"] == 6


# -- the instructor's switches over the API ---------------------------------------------------

CONTROLS = ("/api/queue/pause", "/api/queue/resume", "/api/launching/lock",
            "/api/launching/unlock", "/api/runs/{run}/archive", "/api/runs/{run}/unarchive",
            "/api/runs/{run}/next", "/api/runs/{run}/cancel")


@pytest.mark.parametrize("path", CONTROLS)
def test_every_control_needs_the_passcode(app, app_service, path):
    run_id = app_service.create(CONFIG, owner="someone else")["id"]
    url = path.format(run=run_id)
    student = app.test_client()
    none = student.post(url)
    assert none.status_code == 401 and "needs the lab passcode" in none.json["error"]
    wrong = app.test_client().post(url, headers={"X-Lab-Passcode": "guess"})
    assert wrong.status_code == 403 and wrong.json["error"] == "that is not the lab passcode"
    assert app_service.flags.state()["queue_paused"] is False  # nothing changed
    assert not app_service.store.flags()
    assert app_service.store.get_run(run_id)["status"] == "queued"


def test_pause_and_lock_through_the_api_and_what_pages_show(app, client, app_service):
    assert client.get("/api/lab").json["queue_paused"] is False
    paused = client.post("/api/queue/pause", headers={**INSTRUCTOR, "X-Lab-Name": "Ms L"})
    assert paused.status_code == 200 and paused.json["queue_paused"] is True
    assert paused.json["queue_paused_by"] == "Ms L"
    student = app.test_client()
    student.get("/runs")
    run_id = student.post("/api/runs", json=CONFIG).json["id"]  # launches still queue
    assert app_service.claim_next("w1") is None
    assert "The queue is paused by the instructor" in student.get("/runs").text
    # Resuming while Redis is away: the switch is off; the web's check re-sends the tasks.
    resumed = client.post("/api/queue/resume", headers=INSTRUCTOR)
    assert resumed.status_code == 200 and resumed.json["queue_paused"] is False
    assert app_service.claim_next("w1")["id"] == run_id

    locked = client.post("/api/launching/lock", headers=INSTRUCTOR)
    assert locked.status_code == 200 and locked.json["launch_locked"] is True
    refused = student.post("/api/runs", json=CONFIG)
    assert refused.status_code == 401 and "launching a run needs the lab passcode" in \
        refused.json["error"]
    assert client.post("/api/runs", json=CONFIG, headers=INSTRUCTOR).status_code == 202
    assert 'id="f-passcode"' in student.get("/train").text  # the Train page says so
    assert client.post("/api/launching/unlock", headers=INSTRUCTOR).json["launch_locked"] is False
    assert student.post("/api/runs", json=CONFIG).status_code == 202
    assert 'id="f-passcode"' not in student.get("/train").text


def test_launching_cannot_be_locked_in_a_lab_without_a_passcode(lab_settings):
    from dashboard.app import create_app

    open_lab = create_app(dataclasses.replace(lab_settings, passcode=None),
                          start_background=False)
    resp = open_lab.test_client().post("/api/launching/lock")
    assert resp.status_code == 409 and "has no passcode" in resp.json["error"]
    open_lab.extensions["lab_runs"].store.engine.dispose()


# -- the Runs tab ------------------------------------------------------------------------------


def _browser_id(browser) -> str:
    browser.get("/runs")
    with browser.session_transaction() as session:
        return session["client"]


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-run-id="(\w+)"', page)


def test_the_runs_tab_shows_mine_first_once_i_have_launched(app, app_service):
    made = _class(app_service)
    me = app.test_client()
    mine = [app_service.create(CONFIG, owner=_browser_id(me), owner_name="Cy")["id"]
            for _ in range(2)]
    page = me.get("/runs").text
    assert _rows(page) == mine[::-1]  # "mine" is on by default for someone who launched
    assert '<option value="1" selected>Mine</option>' in page and "2 runs of yours" in page
    everyone = me.get("/runs?mine=0").text
    assert len(_rows(everyone)) == 8 and 'class="badge mine">you<' in everyone
    assert everyone.count('<span class="muted">no name</span>') == 1  # n1 has no name
    newcomer = app.test_client().get("/runs").text  # launched nothing: everyone's runs
    assert len(_rows(newcomer)) == 8 and "Mine</option>" in newcomer
    by_bea = me.get("/runs?mine=0&by=Bea&sort=accuracy&order=asc").text
    assert _rows(by_bea) == [made["b1"], made["b2"]]
    assert 'aria-sort="ascending"' in by_bea


def test_the_runs_tab_pages_on_the_server(app, app_service):
    from ml.events import run_queued

    for n in range(60):
        app_service.store.insert_run(f"r{n:03d}", CONFIG, run_queued(CONFIG))
    browser = app.test_client()
    first = browser.get("/runs").text
    assert len(_rows(first)) == 25 and "60 runs · page 1 of 3" in first
    third = browser.get("/runs?page=3").text
    assert len(_rows(third)) == 10 and set(_rows(third)).isdisjoint(_rows(first))
    assert 'href="/runs?mine=0&amp;sort=created&amp;order=desc&amp;page=2"' in third
    past = browser.get("/runs?page=99").text  # an old link: the last page
    assert _rows(past) == _rows(third)


def test_a_bad_filter_on_the_page_is_named_and_left_out(client, app_service):
    _class(app_service)
    page = client.get("/runs?status=done&sort=name")
    assert page.status_code == 200 and len(_rows(page.text)) == 6
    assert "There is no status &#39;done&#39;" in page.text
    assert "Sort must be created, started, accuracy or duration, got &#39;name&#39;." in page.text
    none = client.get("/runs?recipe=sprint_cnn&by=Nobody").text
    assert "No runs match these filters" in none and not _rows(none)


def test_the_instructor_bar_and_archived_runs_on_the_runs_tab(app, client, app_service):
    made = _class(app_service)
    student = app.test_client().get("/runs?archived=1").text
    assert 'id="instructor-bar"' not in student and "data-lab-action" not in student
    assert "shown only to the instructor" in student and made["a1"] in student
    client.post("/unlock", data={"passcode": PASSCODE, "next": "/runs"})
    page = client.get("/runs").text
    assert 'id="instructor-bar"' in page and "Pause the queue" in page
    assert f'data-lab-action="/api/runs/{made["a1"]}/archive"' in page
    assert f'data-lab-action="/api/runs/{made["a3"]}/next"' in page  # queued: run next
    client.post(f"/api/runs/{made['a1']}/archive")
    assert made["a1"] not in _rows(client.get("/runs").text)
    shown = client.get("/runs?archived=1").text
    assert made["a1"] in _rows(shown) and 'class="badge archived">archived<' in shown
    assert f'data-lab-action="/api/runs/{made["a1"]}/unarchive"' in shown


def test_a_run_page_partial_says_archived_and_paused(app, app_service):
    from flask import render_template

    made = _class(app_service)
    app_service.archive(made["a1"])
    app_service.pause_queue()
    with app.test_request_context("/"):
        archived = render_template("_run_lab_notes.html",
                                   run=app_service.store.get_run(made["a1"]))
        queued = render_template("_run_lab_notes.html",
                                 run=app_service.store.get_run(made["a3"]))
    assert "This run is archived" in archived and "paused" not in archived
    assert "The queue is paused by the instructor" in queued
    assert "archive-toggle" not in archived  # the button only for passcode holders
