"""Request bodies the API cannot read: nested too deeply, malformed, too large. Every JSON
write under /api answers with a 400 (413 for too large) and a sentence, never a 500.

The routes are taken from the app's url_map, so a new route is covered as it is added."""

from __future__ import annotations

import dataclasses

import pytest

from testkit.lab_stack import PASSCODE

DEPTH = 100_000
# A run's settings whose one value is nested 100,000 deep: json.loads raises RecursionError.
TOO_DEEP = '{"epochs": ' + "[" * DEPTH + "]" * DEPTH + "}"
MALFORMED = '{"epochs": 3, "recipe": '
INSTRUCTOR = {"X-Lab-Passcode": PASSCODE}


@pytest.fixture
def lab_settings(lab_settings):
    """A lab with a passcode: the instructor's routes get it, so they would read the body."""
    return dataclasses.replace(lab_settings, passcode=PASSCODE, lock_launch=False)


@pytest.fixture
def run_id(app) -> str:
    """A queued run, for the routes that take one (stored only: nothing listens at Redis)."""
    service = app.extensions["lab_runs"]
    service._enqueue = None
    return service.create({"recipe": "fast_cnn", "epochs": 1})["id"]


def _json_writes(app, run_id: str) -> list[str]:
    """The URL of every POST route under /api, its arguments filled in with a real run."""
    urls = []
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and "POST" in (rule.methods or ()):
            urls.append(adapter.build(rule.endpoint, {name: run_id for name in rule.arguments}))
    return sorted(urls)


def test_the_routes_are_found(app, run_id):
    urls = _json_writes(app, run_id)
    assert "/api/runs" in urls and f"/api/runs/{run_id}/cancel" in urls
    assert "/api/dataset/download" in urls and len(urls) >= 10


@pytest.mark.parametrize("body", [TOO_DEEP, MALFORMED], ids=["too_deep", "malformed"])
def test_an_unreadable_json_body_is_a_400_with_a_sentence_on_every_write(app, client, run_id,
                                                                          body):
    store = app.extensions["lab_runs"].store
    answers = {url: client.post(url, data=body, content_type="application/json",
                                headers=INSTRUCTOR)
               for url in _json_writes(app, run_id)}
    assert {url: r.status_code for url, r in answers.items()} == dict.fromkeys(answers, 400)
    for url, resp in answers.items():
        assert resp.is_json, url
        assert resp.json["error"] == "the request body is not valid JSON (or it is nested " \
                                     "too deeply to read)", url
    assert [r["id"] for r in store.list_runs()] == [run_id]  # nothing launched
    assert store.get_run(run_id)["status"] == "queued"  # nor cancelled


def test_a_launch_still_reads_its_settings(app, client):
    """The body is read once before the view and again by it: the same settings arrive."""
    app.extensions["lab_runs"]._enqueue = None  # stored only: nothing listens at Redis
    resp = client.post("/api/runs", json={"recipe": "fast_cnn", "epochs": 2})
    assert resp.status_code == 202, resp.json
    assert resp.json["run"]["config"]["epochs"] == 2
    empty = client.post("/api/runs", data="", content_type="application/json")
    assert empty.status_code == 202, empty.json  # no body: the defaults
    assert client.post("/api/runs", data='{"epochs": 0}', content_type="application/json"
                       ).status_code == 422
    not_json = client.post("/api/runs", data=TOO_DEEP, content_type="text/plain")
    assert not_json.status_code == 400 and "JSON object" in not_json.json["error"]


def test_a_body_over_the_limit_is_a_413_in_json(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = '{"epochs": "' + "x" * limit + '"}'
    for url in ("/api/runs", "/api/dataset/download"):
        resp = client.post(url, data=body, content_type="application/json",
                           headers=INSTRUCTOR)
        assert resp.status_code == 413, url
        assert resp.is_json and resp.json["error"].startswith("the upload is too large")
