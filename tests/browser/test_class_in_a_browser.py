"""The class's views in real Chromium on a real stack of their own (redis-server, a Celery
worker, the web server): the leaderboard updates without a reload when a run finishes, the
class view draws one line per finished run, projector mode hides the chrome, names stay
text, and no page logs an error. Screenshots go to tests/artifacts/screenshots/ (the README
shows copies from docs/screenshots/).
"""

from __future__ import annotations

import re

import pytest
import requests

from testkit.lab_stack import ENDLESS, PASSCODE, TINY, LabStack
from tests.browser.pages import ARTIFACTS, fill_train_form, shot

HOSTILE = '<img src=x onerror="window.__xss=1">'
# Four people, each a browser of their own (its own session cookie) with a name.
STUDENTS = ("Ada", "Bob", HOSTILE, "Dee")
ROWS = "() => document.querySelectorAll('#leaderboard-page tbody tr').length"


def launch(lab: LabStack, who: requests.Session, **config) -> str:
    resp = who.post(lab.url + "/api/runs", json={**TINY, "epochs": 1, **config}, timeout=30)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def test_before_any_run_each_board_page_says_so_and_what_to_do(empty_lab, watched):
    page = watched().page
    page.goto(empty_lab.url + "/")
    page.wait_for_selector("#home-empty:not([hidden])")
    assert page.locator("#home-empty-title").text_content() == "No runs yet"
    assert page.locator("#live-none").is_visible() and page.locator("#top-empty").is_visible()
    assert page.locator("#queue-empty").is_visible()
    for path, box in (("/leaderboard", "#board-empty"), ("/class", "#class-empty")):
        page.goto(empty_lab.url + path)
        page.wait_for_selector(box + ":not([hidden])")
        assert "No finished runs yet" in page.locator(box).text_content()


def test_leaderboard_class_view_and_projector_mode(room, watched):
    lab = room
    w = watched()
    page = w.page
    people = {name: lab.student(name) for name in STUDENTS}
    # One finished run (alone: the class lab has two workers): every axis has a single
    # value, and is still drawn.
    runs = [launch(lab, people["Ada"])]
    lab.wait_status(runs[0], "succeeded")
    page.goto(lab.url + "/class")
    page.wait_for_function("() => { const el = document.getElementById('class-parcoords');"
                           " return el.data && el.data[0].dimensions.every("
                           "d => d.values.length === 1); }")
    assert page.locator("#class-parcoords .axis").count() >= 9
    # Different settings, so the class view has something to show.
    runs += [launch(lab, people["Ada"], learning_rate=0.003, batch_size=16),
             launch(lab, people["Bob"], image_size=40, schedule="cosine", epochs=2),
             launch(lab, people[HOSTILE], label_smoothing=0.1, learning_rate=0.001)]
    for run_id in runs:
        lab.wait_status(run_id, "succeeded")

    page.goto(lab.url + "/leaderboard")
    page.wait_for_function(f"({ROWS})() === 3")
    names = page.locator("#leaderboard-page tbody .name").all_text_contents()
    assert sorted(names) == sorted(["Ada", "Bob", HOSTILE])  # shown as typed: text
    assert page.locator("#leaderboard-page tbody img").count() == 0
    ranks = [int(r) for r in page.locator("#leaderboard-page tbody .rank").all_text_contents()]
    assert ranks == sorted(ranks) and ranks[0] == 1
    api = lab.get("/api/leaderboard").json()["entries"]
    assert [e["name"] for e in api] == names  # the page's order is the server's
    assert all("on " in t and "photo" in t for t in
               page.locator("#leaderboard-page tbody .photos").all_text_contents())

    # A run finishes while the page is open: its owner appears without a reload.
    page.evaluate("window.__same_page = true")
    launch(lab, people["Dee"], learning_rate=0.02)
    page.wait_for_function(f"({ROWS})() === 4", timeout=180_000)
    assert page.evaluate("window.__same_page") is True
    assert "Dee" in page.locator("#leaderboard-page tbody .name").all_text_contents()
    board = watched().page  # the board on the projector
    board.goto(lab.url + "/leaderboard?present=1")
    board.wait_for_function(f"({ROWS})() === 4")
    assert board.evaluate("document.body.classList.contains('present')")
    assert not board.locator(".topbar").is_visible()
    assert "present=1" in board.locator("#leaderboard-page tbody a").first.get_attribute("href")
    page.wait_for_timeout(3000)  # the new row's highlight fades before the screenshot
    shot(page, "leaderboard")
    assert page.evaluate("window.__xss") is None  # the name stayed text

    # What the class learned: one line per finished run, one dot per run.
    finished = [r for r in lab.get("/api/runs").json()["runs"] if r["status"] == "succeeded"]
    assert len(finished) == 5
    page.goto(lab.url + "/class")
    page.wait_for_function("() => { const el = document.getElementById('class-parcoords');"
                           " return el.data && el.data.length === 1; }")
    dims = page.evaluate("() => document.getElementById('class-parcoords').data[0].dimensions"
                         ".map(d => [d.label, d.values.length])")
    assert [n for _, n in dims] == [5] * 9
    assert dims[1][0] == "learning rate" and dims[-1][0] == "accuracy"
    # Learning rates are drawn as log10 and labelled as the rates themselves.
    rate_axis = page.evaluate("() => document.getElementById('class-parcoords').data[0]"
                              ".dimensions[1]")
    assert min(rate_axis["values"]) == pytest.approx(-3) and "0.001" in rate_axis["ticktext"]
    assert page.evaluate("() => document.getElementById('class-scatter').data[0].x.length") == 5
    page.select_option("#class-setting", "batch_size")
    page.wait_for_function("() => document.getElementById('class-scatter').layout.xaxis"
                           ".title.text === 'batch size'")
    assert sorted(page.evaluate("() => document.getElementById('class-scatter').data[0].x")) \
        == [8, 8, 8, 8, 16]
    shot(page, "class-view")
    assert page.evaluate("window.__xss") is None
    # Clicking a dot opens its run.
    page.locator("#class-scatter").scroll_into_view_if_needed()  # the mouse reaches only the view
    box = page.locator("#class-scatter .scatterlayer .point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#class-scatter .hoverlayer .hovertext")  # Plotly clicks what it hovers
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(lab.url + "/runs/*", timeout=15_000)
    assert page.locator("#run").get_attribute("data-run-id") in {r["id"] for r in finished}

    # Projector mode on the home page: the live run and the queue on one screen, no chrome.
    # The class lab has two workers: Dee's long run keeps the other one busy, and the demo
    # starts last, so it is the live run a viewer with no run of its own sees.
    busy = launch(lab, people["Dee"], **{**ENDLESS, "epochs": 300})
    lab.wait_status(busy, "running")
    demo = launch(lab, people["Ada"], **{**ENDLESS, "epochs": 300})
    lab.wait_status(demo, "running")
    waiting = launch(lab, people["Bob"])  # behind both
    projector = watched(viewport={"width": 1280, "height": 800})
    screen = projector.page
    screen.goto(lab.url + "/?present=1")
    assert screen.evaluate("document.body.classList.contains('present')")
    assert not screen.locator(".topbar").is_visible()
    assert not screen.locator(".footer").is_visible()
    screen.wait_for_function("() => !document.getElementById('live-run').hidden &&"
                             " document.getElementById('live-text').textContent === 'live'")
    screen.wait_for_function("() => document.getElementById('live-epoch').textContent"
                             " !== '–'", timeout=120_000)
    assert screen.locator("#live-name").text_content() == "Ada"
    assert screen.locator("#queue-list li").count() == 1
    assert "Bob" in screen.locator("#queue-list").text_content()
    for part in ("#live-run", "#queue-list"):  # both inside the first screen
        box = screen.locator(part).bounding_box()
        assert box["y"] + box["height"] <= 800 + 1, part
    # Links keep projector mode; the run page takes it too.
    assert "present=1" in screen.locator("#live-link").get_attribute("href")
    screen.wait_for_function("() => document.getElementById('live-chart').data[1].x.length"
                             " > 0", timeout=120_000)
    screen.wait_for_function("() => document.getElementById('live-best').textContent"
                             " !== '–'", timeout=60_000)
    screen.screenshot(path=str(ARTIFACTS / "present.png"))  # what the room sees: one screen
    page.goto(lab.url + "/")  # the same home page with its chrome, for a look
    page.wait_for_function("() => document.getElementById('live-text').textContent === 'live'")
    assert page.locator(".topbar").is_visible() and page.locator("#top-empty").is_hidden()
    assert page.locator("table.leaderboard tbody tr").count() == 4
    shot(page, "home")
    screen.click("#live-link")
    screen.wait_for_url("**/runs/*present=1*")
    assert screen.evaluate("document.body.classList.contains('present')")
    assert not screen.locator(".topbar").is_visible()
    assert screen.evaluate("window.__xss") is None
    phone = watched(viewport={"width": 390, "height": 844}, is_mobile=True).page
    for path in ("/", "/leaderboard", "/class", "/?present=1"):
        phone.goto(lab.url + path)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} is {overflow}px wider than a phone screen"
    for run_id in (waiting, demo):
        people["Ada"].post(f"{lab.url}/api/runs/{run_id}/cancel", timeout=30)
    lab.cancel_active()


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("#runs-table tbody tr",
                                     "rows => rows.map(r => r.dataset.runId)")


def test_two_students_see_their_own_runs_and_the_instructor_pauses_the_queue(room, watched):
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
