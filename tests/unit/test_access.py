"""Who may launch, in-process (the flaskr way): the per-address cap is opt-in and holds."""

from __future__ import annotations

import dataclasses

from dashboard.app import create_app

RUN = {"epochs": 1, "image_size": 32}


def _app(settings, service):
    app = create_app(settings, start_background=False)
    app.extensions["lab_runs"] = service  # its queue only counts tasks: no Redis needed
    return app


def test_the_per_address_cap_is_opt_in_for_a_public_lab(lab_settings, service):
    public = _app(dataclasses.replace(lab_settings, max_active_per_address=2,
                                      max_runs_per_owner=0), service)
    students = [public.test_client() for _ in range(3)]  # three browsers, one address
    answers = [s.post("/api/runs", json=RUN) for s in students]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json["error"] == ("this address already has 2 runs queued or training "
                                        "(at most 2 at a time); wait for one to finish or "
                                        "cancel one")
    # Off by default: a class behind one router is many people.
    default = _app(lab_settings, service).test_client()
    default.get("/")  # a browser opens a page before it launches: it has its cookie
    assert default.post("/api/runs", json=RUN).status_code == 202


def test_the_per_student_cap_counts_browsers_not_addresses(lab_settings, service):
    app = _app(lab_settings, service)  # defaults: 2 runs a student
    ada, bea = app.test_client(), app.test_client()
    assert [ada.post("/api/runs", json=RUN).status_code for _ in range(3)] == [202, 202, 429]
    assert bea.post("/api/runs", json=RUN).status_code == 202
    assert len(service.tasks_sent) == 3  # the refused launch queued nothing


def test_scripts_without_cookies_count_as_one_student_per_address(lab_settings, service):
    app = _app(lab_settings, service)  # defaults: 2 runs a student
    curl = app.test_client(use_cookies=False)  # a new browser at every request
    answers = [curl.post("/api/runs", json=RUN) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 429, 429]
    assert "open a page first (GET /) and keep the cookie" in answers[2].json["error"]
    assert len(service.tasks_sent) == 2
    # A script that keeps its cookies is itself once it has one: a first launch without it
    # counts with the address's other cookie-less ones, a page opened first gives it its own.
    session = app.test_client()
    assert session.post("/api/runs", json=RUN).status_code == 429  # the address's two
    session.get("/")
    assert [session.post("/api/runs", json=RUN).status_code for _ in range(3)] \
        == [202, 202, 429]
    service.cancel(answers[0].json["id"])
    assert curl.post("/api/runs", json=RUN).status_code == 202  # a place came free
    # A browser behind the same address is not held back by the scripts.
    browser = app.test_client()
    browser.get("/")
    assert browser.post("/api/runs", json=RUN).status_code == 202
