"""The class's views: the home page, the leaderboard and what the class learned.

Fast tests over the app and a runs service sharing one store (tests/conftest.py); the
browser test on a real stack is in tests/test_class_browser.py.
"""

from __future__ import annotations

import time

import pytest

from ml.config import parse_config

HOSTILE = "<img src=x onerror=alert(1)>"
BASE = {"recipe": "fast_cnn", "epochs": 3, "image_size": 32, "batch_size": 8,
        "learning_rate": 0.01, "augment": False, "schedule": "plateau", "label_smoothing": 0.0}

_clock = [1_000_000.0]


def _tick() -> float:
    _clock[0] += 10
    return _clock[0]


def add_run(service, owner: str | None, name: str | None, accuracy: float | None = None, *,
            val: int | None = 100, status: str = "succeeded", archived: bool = False,
            **config) -> str:
    """A run as the store would hold it once it ended this way (each finishes after the
    last one added)."""
    run = service.create({**BASE, **config}, owner=owner, owner_name=name)
    if status == "queued":
        return run["id"]
    started = _tick()
    values = {"status": status, "started": started, "heartbeat": started, "worker": "w"}
    if status != "running":
        values.update(finished=_tick(), best_val_accuracy=accuracy,
                      summary={"counts": {"train": 400, "val": val}} if val else {})
    if archived:
        values["archived"] = time.time()
    assert service.store.update_run(run["id"], **values)
    return run["id"]


def board(client) -> list[dict]:
    resp = client.get("/api/leaderboard")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["entries"]


def test_leaderboard_keeps_each_persons_best_finished_run(client, service):
    add_run(service, "ada", "Ada", 0.80)
    ada_best = add_run(service, "ada", "Ada", 0.90, val=200, learning_rate=None,
                       image_size=None, recipe="res_cnn")
    add_run(service, "ada", "Ada", 0.90, val=100)  # as good, on fewer photos: not her best
    add_run(service, "ada", "Ada", 0.99, status="failed")  # failed runs never count
    add_run(service, "ada", "Ada", 0.97, archived=True)  # archived: hidden from the board
    add_run(service, "ada", "Ada", 0.98, status="cancelled")  # stopped early: left out
    add_run(service, "ada", None, status="running")
    add_run(service, "ada", None, status="queued")
    bob = add_run(service, "bob", "Bob", 0.90, val=400)
    nameless = add_run(service, "cy", None, 0.90, val=400)
    hostile = add_run(service, "eve", HOSTILE, 0.50, val=40)
    add_run(service, "dee", "Dee", 0.99, status="failed")  # only failed runs: not on the board

    entries = board(client)
    assert [(e["rank"], e["name"], e["run_id"]) for e in entries] == [
        (1, "Bob", bob),  # 90 % on 400 photos beats 90 % on 200
        (1, "no name", nameless),  # the same on as many photos: the same rank, later
        (3, "Ada", ada_best),
        (4, HOSTILE, hostile),  # a name is data, given back as typed
    ]
    ada = entries[2]
    assert ada["accuracy"] == pytest.approx(0.90) and ada["val_photos"] == 200
    assert ada["finished_runs"] == 3 and ada["named"] and not entries[1]["named"]
    # A run that left its size and rate to its recipe shows the recipe's, as numbers.
    from ml.recipes import RECIPES

    assert ada["recipe"] == "res_cnn"
    assert ada["image_px"] == RECIPES["res_cnn"].image_size
    assert ada["learning_rate"] == pytest.approx(RECIPES["res_cnn"].learning_rate)
    assert (ada["epochs"], ada["batch_size"]) == (3, 8)
    assert ada["url"] == f"/runs/{ada_best}"
    assert 0 < ada["accuracy_floor"] < entries[0]["accuracy_floor"] < 0.9
    assert not any(e["mine"] for e in entries)  # this browser launched none of them


def test_leaderboard_marks_the_viewers_row_uses_the_latest_name_and_is_empty_at_first(
        client, service):
    assert board(client) == []
    add_run(service, "me", "Sam", 0.7)
    add_run(service, "me", "Samira", 0.6)  # renamed since: the board says who they are now
    add_run(service, None, None, 0.8)  # runs from before owners: each its own entry
    add_run(service, None, None, 0.75)
    with client.session_transaction() as sess:
        sess["client"] = "me"
    entries = board(client)
    assert [(e["name"], e["mine"]) for e in entries] == [
        ("no name", False), ("no name", False), ("Samira", True)]


def test_unchanged_board_answers_304(client, service):
    add_run(service, "ada", "Ada", 0.8)
    first = client.get("/api/leaderboard")
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["ETag"]
    again = client.get("/api/leaderboard", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    add_run(service, "bob", "Bob", 0.9)
    changed = client.get("/api/leaderboard", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and len(changed.get_json()["entries"]) == 2


def test_class_api_gives_one_row_per_finished_run_with_its_settings(client, service):
    assert client.get("/api/class").get_json() == {"runs": []}
    first = add_run(service, "ada", "Ada", 0.8, learning_rate=0.003, batch_size=16,
                    schedule="cosine", label_smoothing=0.1, augment=True, epochs=5)
    add_run(service, "ada", "Ada", 0.9, status="failed")
    add_run(service, "bob", "Bob", 0.9, status="cancelled")
    add_run(service, "bob", "Bob", 0.95, archived=True)
    second = add_run(service, "bob", HOSTILE, 0.7, val=None, learning_rate=None,
                     image_size=None, recipe="seed_cnn")
    rows = client.get("/api/class").get_json()["runs"]
    assert [r["run_id"] for r in rows] == [first, second]  # first finished first
    a, b = rows
    assert a == {"run_id": first, "name": "Ada", "url": f"/runs/{first}", "accuracy": 0.8,
                 "val_photos": 100, "recipe": "fast_cnn", "image_px": 32,
                 "learning_rate": 0.003, "epochs": 5, "batch_size": 16, "augment": True,
                 "schedule": "cosine", "label_smoothing": 0.1, "small_image_px": None,
                 "small_epochs": 0}
    from ml.recipes import RECIPES

    assert b["name"] == HOSTILE and b["val_photos"] is None
    assert (b["recipe"], b["image_px"], b["learning_rate"]) == (
        "seed_cnn", RECIPES["seed_cnn"].image_size, RECIPES["seed_cnn"].learning_rate)


def test_class_rows_say_which_epochs_trained_on_small_photos(client, service):
    # as the API stores them: parsed, with the recipe's own settings filled in
    add_run(service, "ada", "Ada", 0.9, **parse_config(
        {"recipe": "flash_cnn", "epochs": 12, "image_size": None}).to_dict())
    # the recipe's own small epochs turned off by the person's choice of schedule
    add_run(service, "bob", "Bob", 0.8, **parse_config(
        {"recipe": "flash_cnn", "schedule": "plateau"}).to_dict())
    ada, bob = client.get("/api/class").get_json()["runs"]
    assert (ada["image_px"], ada["small_image_px"], ada["small_epochs"]) == (96, 64, 8)
    assert (bob["small_image_px"], bob["small_epochs"]) == (None, 0)


def test_home_state_live_run_queue_and_empty_states(client, service):
    home = client.get("/api/home").get_json()
    assert home["empty"] == "no_runs" and home["live"] is None
    assert home["queue"] == {"waiting": 0, "next": [], "paused": False} and home["top"] == []

    failed = add_run(service, "ada", "Ada", status="failed")
    home = client.get("/api/home").get_json()
    assert home["empty"] == "all_failed" and home["last_failed_url"] == f"/runs/{failed}"

    mine = add_run(service, "me", "Sam", status="running")
    newest = add_run(service, "bob", "Bob", status="running")
    queued = [add_run(service, f"s{i}", f"Student {i}", status="queued") for i in range(7)]
    home = client.get("/api/home").get_json()
    assert home["empty"] is None and home["running"] == 2
    assert home["live"]["run_id"] == newest  # a stranger sees the latest started run
    assert home["live"]["name"] == "Bob" and home["live"]["status"] == "running"
    assert home["live"]["named"] is True
    assert home["queue"]["waiting"] == 7
    assert [(r["run_id"], r["queue_position"]) for r in home["queue"]["next"]] == [
        (run_id, n) for n, run_id in enumerate(queued[:5], start=1)]
    with client.session_transaction() as sess:
        sess["client"] = "me"
    # The instructor's own browser (the projector) shows the run it is demoing.
    assert client.get("/api/home").get_json()["live"]["run_id"] == mine

    for n in range(7):
        add_run(service, f"w{n}", f"Winner {n}", 0.5 + n / 20)
    top = client.get("/api/home").get_json()["top"]
    assert [e["name"] for e in top] == [f"Winner {n}" for n in (6, 5, 4, 3, 2)]

    service.flags.set("queue_paused", True, by="the instructor")  # the home page says so
    assert client.get("/api/home").get_json()["queue"]["paused"] is True


def test_pages_render_with_nav_and_projector_mode(client, service):
    add_run(service, "eve", HOSTILE, 0.6)
    for path, marker, script in (("/", 'id="home"', "home.js"),
                                 ("/leaderboard", 'id="leaderboard-page"', "leaderboard.js"),
                                 ("/class", 'id="class-page"', "class.js")):
        page = client.get(path)
        assert page.status_code == 200, path  # "/" is the home page, not a redirect
        html = page.get_data(as_text=True)
        # Each page loads its own script (and the board's shared one), not the others'.
        assert marker in html and 'class="topbar"' in html and f"/static/{script}" in html
        assert "/static/board_common.js" in html
        others = {"home.js", "leaderboard.js", "class.js"} - {script}
        assert not any(f"/static/{other}" in html for other in others), path
        assert 'class="present"' not in html and HOSTILE not in html
        present = client.get(path + "?present=1").get_data(as_text=True)
        assert '<body data-tab="' in present and 'class="present"' in present
        assert 'id="present-exit"' in present
    # Every page of the lab can be projected, the run page too.
    run_page = client.get("/runs?present=1").get_data(as_text=True)
    assert 'class="present"' in run_page and "board.css" in run_page
    nav = client.get("/runs").get_data(as_text=True)
    assert 'href="/leaderboard"' in nav and 'href="/class"' in nav


def test_board_follows_archiving_and_new_finishes_though_it_is_cached(client, service):
    ada = add_run(service, "ada", "Ada", 0.9)
    add_run(service, "ada", "Ada", 0.8)
    assert [e["run_id"] for e in board(client)] == [ada]
    service.store.update_run(ada, archived=time.time())  # an instructor archives her best
    entries = board(client)
    assert len(entries) == 1 and entries[0]["accuracy"] == pytest.approx(0.8)
    service.store.update_run(ada, archived=None)  # and brings it back
    assert [e["run_id"] for e in board(client)] == [ada]
    later = add_run(service, "ada", "Ada", 0.95)
    assert [e["run_id"] for e in board(client)] == [later]
    assert [r["run_id"] for r in client.get("/api/class").get_json()["runs"]][-1] == later
    from core import class_view

    # Unchanged, the finished runs are not read (and their model cards parsed) again.
    store = service.store
    assert class_view.finished_runs(store) is class_view.finished_runs(store)
    assert class_view.finished_runs(store)[-1]["summary"] == {
        "counts": {"train": 400, "val": 100}}  # only what the views need of the card
