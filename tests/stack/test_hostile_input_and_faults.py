"""Hostile uploads, the lab passcode, queue caps, escaping, faults and load, on the real stack.

Every request goes over HTTP (or Socket.IO) to a real web process with a real redis-server
and Celery worker behind it.
"""

from __future__ import annotations

import html
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from testkit.hostile import HOSTILE_NAME, named_cases, random_upload
from testkit.lab_stack import ENDLESS, PASSCODE, TINY, Viewer
from testkit.synthetic import photo_bytes

# A run that lasts long enough to be cancelled, watched through an outage, or capped.
LONG = {**ENDLESS, "epochs": 500, "image_size": 128}
PAGES = ("/dataset", "/train", "/runs", "/predict", "/unlock")


def predict(url: str, *files: tuple[str, bytes, str], session=requests, **data):
    return session.post(url + "/api/predict", timeout=60, data=data,
                        files=[("photos", f) for f in files])


# -- uploads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", named_cases(), ids=lambda c: c.name)
def test_each_troublesome_upload_gets_a_clear_answer(idle_lab, case):
    idle_lab.finished_run()
    resp = predict(idle_lab.url, (case.filename, case.data, case.content_type))
    body = resp.json()
    assert resp.status_code == case.status, body
    result = body["results"][0]
    if case.status >= 400:
        assert re.search(case.expect, body["error"]), body["error"]
        assert result["status"] == case.status and "label" not in result
    elif case.expect.startswith("format:"):  # decided by the bytes, whatever the name says
        assert result["format"] == case.expect.split(":", 1)[1]
        assert result["label"] in ("cat", "dog")
    else:
        assert any(re.search(case.expect, note) for note in result["notes"]), result["notes"]
        assert result["label"] in ("cat", "dog")


def test_fuzzed_uploads_never_break_the_server(idle_lab):
    """A bounded fuzz run: 150 mutated uploads (bench/predict_load.py runs 1,000+)."""
    run_id = idle_lab.finished_run()
    rng = np.random.default_rng(2026)
    statuses = []
    for i in range(150):
        files = [random_upload(rng) for _ in range(1 if i % 5 else 3)]
        resp = predict(idle_lab.url, *files)
        statuses.append(resp.status_code)
        assert resp.status_code in (200, 413, 415, 422), (resp.status_code, resp.text[:300])
        assert "error" in resp.json() or resp.status_code == 200
    assert len(set(statuses)) >= 3  # the fuzz reached refusals of several kinds
    # Asked of the 3-epoch model: by default predict takes the best validation score, and a
    # 1-epoch run another test left can score as well on its few validation photos.
    good = predict(idle_lab.url, ("cat.jpg", photo_bytes("cat", size=64, seed=8), "image/jpeg"),
                   model=run_id)
    assert good.status_code == 200 and good.json()["results"][0]["label"] == "cat"
    assert idle_lab.web.alive() and idle_lab.get("/api/health").status_code == 200


def test_predict_holds_up_under_20_concurrent_clients(idle_lab):
    idle_lab.finished_run()

    def client(i: int) -> list[tuple[int, str]]:
        with requests.Session() as session:
            out = []
            for j in range(3):
                kind = "cat" if (i + j) % 2 else "dog"
                resp = predict(idle_lab.url, (f"{kind}.jpg", photo_bytes(
                    kind, size=64, seed=1000 + 10 * i + j), "image/jpeg"), session=session)
                label = resp.json()["results"][0].get("label") if resp.ok else resp.text
                out.append((resp.status_code, f"{kind}:{label}"))
            return out

    with ThreadPoolExecutor(20) as pool:
        answers = [a for batch in pool.map(client, range(20)) for a in batch]
    assert len(answers) == 60
    assert all(status == 200 for status, _ in answers), answers
    right = sum(want.split(":")[0] == want.split(":")[1] for _, want in answers)
    assert right >= 57, answers  # the tiny model tells the colours apart
    assert idle_lab.get("/api/health").status_code == 200


# -- launching: passcode, owners and the queue cap ----------------------------------------------

def test_a_locked_lab_needs_the_passcode_to_launch(idle_locked_lab):
    lab = idle_locked_lab
    before = len(lab.get("/api/runs").json()["runs"])
    anon = requests.post(lab.url + "/api/runs", json={**TINY, "epochs": 1}, timeout=30)
    assert anon.status_code == 401 and "needs the lab passcode" in anon.json()["error"]
    wrong = requests.post(lab.url + "/api/runs", json={**TINY, "epochs": 1}, timeout=30,
                          headers={"X-Lab-Passcode": "nope"})
    assert wrong.status_code == 403 and "not the lab passcode" in wrong.json()["error"]
    form = requests.post(lab.url + "/train", timeout=30, data={
        "recipe": "fast_cnn", "epochs": "1", "batch_size": "8", "val_split": "0.15",
        "early_stopping_patience": "2", "lr_factor": "0.5", "lr_patience": "1", "seed": "1"})
    assert form.status_code == 200 and "Starting a run needs the lab passcode" in form.text
    download = requests.post(lab.url + "/api/dataset/download", json={}, timeout=30)
    assert download.status_code == 401
    assert len(lab.get("/api/runs").json()["runs"]) == before  # nothing was queued

    run_id = lab.launch({**TINY, "epochs": 1})  # the test client sends X-Lab-Passcode
    assert lab.wait_status(run_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_visitors_watch_and_predict_on_a_locked_lab(idle_locked_lab):
    lab = idle_locked_lab
    run_id = lab.finished_run()
    visitor = requests.Session()
    for path in (*PAGES, f"/runs/{run_id}", f"/runs/compare?ids={run_id}"):
        resp = visitor.get(lab.url + path, timeout=30)
        assert resp.status_code == 200, (path, resp.status_code)
    assert 'id="unlock-link"' in visitor.get(lab.url + "/runs", timeout=30).text
    resp = predict(lab.url, ("c.png", photo_bytes("cat", "PNG", size=64), "image/png"),
                   session=visitor, model=run_id)  # not whichever run scored best
    assert resp.status_code == 200 and resp.json()["results"][0]["label"] == "cat"
    viewer = Viewer(lab.url, run_id)
    assert viewer.join_reply["ok"] and viewer.wait_finished(30) == lab.events(run_id)
    viewer.disconnect()


def test_cancelling_someone_elses_run_needs_the_passcode(idle_locked_lab):
    lab = idle_locked_lab
    run_id = lab.launch(LONG)
    lab.wait_event(run_id, "batch")
    visitor = requests.Session()
    page = visitor.get(f"{lab.url}/runs/{run_id}", timeout=30).text
    assert 'id="unlock-to-cancel"' in page and 'id="cancel"' not in page
    refused = visitor.post(f"{lab.url}/api/runs/{run_id}/cancel", timeout=30)
    assert refused.status_code == 401 and "passcode" in refused.json()["error"]
    assert lab.run(run_id)["status"] == "running" and not lab.run(run_id)["cancel_requested"]

    # The one who launched it may cancel it without sending the passcode again.
    owner = requests.Session()
    owner.cookies.update(lab.session.cookies)
    assert 'id="cancel"' in owner.get(f"{lab.url}/runs/{run_id}", timeout=30).text
    assert owner.post(f"{lab.url}/api/runs/{run_id}/cancel", timeout=30).status_code == 202
    assert lab.wait_status(run_id, ("cancelled", "failed"))["status"] == "cancelled"

    other = lab.launch(LONG)
    # Anyone with the passcode may cancel any run: once unlocked, the browser remembers.
    unlocked = requests.Session()
    resp = unlocked.post(lab.url + "/unlock", data={"passcode": PASSCODE, "next": "/runs"},
                         timeout=30, allow_redirects=False)
    assert resp.status_code == 302 and resp.headers["Location"] == "/runs"
    assert "Unlocked · Lock" in unlocked.get(lab.url + "/runs", timeout=30).text
    assert unlocked.post(f"{lab.url}/api/runs/{other}/cancel", timeout=30).status_code == 202
    lab.wait_status(other, ("cancelled", "failed"))


def test_the_passcode_holder_is_not_held_to_the_per_address_cap(idle_locked_lab):
    # The locked lab caps each address at 2 runs; the instructor's demo always gets in.
    # (The cap itself, for those without the passcode: tests/test_classroom.py.)
    lab = idle_locked_lab
    runs = [lab.launch(LONG) for _ in range(3)]
    assert all(lab.run(r)["status"] in ("queued", "running") for r in runs)


def test_wrong_passcodes_are_throttled_and_unlock_never_leaves_the_site(idle_locked_lab):
    lab = idle_locked_lab
    lab.web.stop()  # wrong tries are counted in the web process: start from none
    lab.start_web()
    guesser = requests.Session()
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)",
                   "/\\evil.example/x"):
        resp = guesser.post(lab.url + "/unlock", data={"passcode": PASSCODE, "next": target},
                            timeout=30, allow_redirects=False)
        assert resp.headers["Location"] == "/runs", target
    guesser.post(lab.url + "/lock", timeout=30)
    for i in range(8):
        resp = guesser.post(lab.url + "/unlock", data={"passcode": f"guess{i}"}, timeout=30)
        assert "That is not the lab passcode" in resp.text
    blocked = guesser.post(lab.url + "/unlock", data={"passcode": PASSCODE}, timeout=30)
    assert "too many wrong passcodes from this browser" in blocked.text
    api = guesser.post(lab.url + "/api/runs", json=TINY, timeout=30,
                       headers={"X-Lab-Passcode": PASSCODE})
    assert api.status_code == 429 and "try again in" in api.json()["error"]
    # Only that browser: the instructor behind the same address gets in (issue 18; the
    # address is throttled only after many more tries, see test_hardening_round2).
    instructor = requests.post(lab.url + "/api/runs", json=TINY, timeout=30,
                               headers={"X-Lab-Passcode": PASSCODE})
    assert instructor.status_code == 202
    lab.post(f"/api/runs/{instructor.json()['id']}/cancel")
    lab.web.stop()  # the count lives in the web process; a restart clears it for the others
    lab.start_web()


# -- markup ---------------------------------------------------------------------------------

def test_file_names_and_user_text_are_escaped_in_every_page(idle_locked_lab):
    lab = idle_locked_lab
    raw = HOSTILE_NAME

    def shown_escaped(page: str) -> bool:
        """The name is on the page, as text: escaped in the source, intact once decoded."""
        return raw not in page and raw in html.unescape(page)

    for query in ("?sort=image_path&order=desc", "?label=cat&sort=image_path&order=desc"):
        assert shown_escaped(lab.get("/dataset" + query).text), query
    skipped = lab.get("/dataset").text.split('id="skipped"', 1)[-1]
    assert shown_escaped(skipped) and "dog." in html.unescape(skipped)
    missing = lab.get("/runs/<script>alert(1)</script>")
    assert missing.status_code == 404 and "<script>alert(1)" not in missing.text
    typed = lab.post("/train", data={"recipe": "fast_cnn", "epochs": "<b>1</b>"})
    assert "&lt;b&gt;1&lt;/b&gt;" in typed.text and "<b>1</b>" not in typed.text
    # A local path, so it is kept and written into the page (the form's hidden field).
    sneaky = lab.get("/unlock", params={"next": '/runs"><script>alert(1)</script>'}).text
    assert 'value="/runs&#34;&gt;&lt;script&gt;' in sneaky and "<script>alert(1)" not in sneaky
    lab.finished_run()
    resp = predict(lab.url, (raw + ".jpg", photo_bytes("cat"), "image/jpeg"))
    assert resp.json()["results"][0]["filename"] == raw + ".jpg"  # JSON as sent; shown as text


# -- faults ---------------------------------------------------------------------------------

def test_every_page_serves_while_redis_is_down(idle_lab):
    run_id = idle_lab.finished_run()
    idle_lab.redis.stop()
    try:
        for path in (*PAGES, f"/runs/{run_id}", f"/runs/compare?ids={run_id}",
                     "/api/runs", f"/api/runs/{run_id}/events"):
            assert idle_lab.get(path).status_code == 200, path
        resp = predict(idle_lab.url, ("d.jpg", photo_bytes("dog", size=64), "image/jpeg"))
        assert resp.status_code == 200 and resp.json()["results"][0]["label"] == "dog"
        api = idle_lab.post("/api/runs", json=TINY)
        assert api.status_code == 503 and "Redis" in api.json()["error"]
        form = idle_lab.post("/train", data={
            "recipe": "fast_cnn", "epochs": "1", "batch_size": "8", "val_split": "0.15",
            "early_stopping_patience": "2", "lr_factor": "0.5", "lr_patience": "1",
            "seed": "1"})
        assert form.status_code == 503 and "Redis" in form.text
        assert idle_lab.get("/api/health").json()["redis"].startswith("unreachable")
    finally:
        idle_lab.start_redis()
    run_id = idle_lab.launch({**TINY, "epochs": 1})
    assert idle_lab.wait_status(run_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_a_run_keeps_streaming_through_a_redis_outage(idle_lab):
    """Redis stops mid-run: the worker trains on, viewers keep getting events (from the
    store), and when Redis is back the run can still be cancelled and a new one queued."""
    run_id = idle_lab.launch(LONG)
    viewer = Viewer(idle_lab.url, run_id)
    viewer.wait_for("batch")
    idle_lab.redis.stop()
    seen = viewer.last_seq
    _wait(lambda: viewer.last_seq >= seen + 10, "events during the outage")
    idle_lab.start_redis()
    seen = viewer.last_seq
    _wait(lambda: viewer.last_seq >= seen + 10, "events after Redis came back")
    assert idle_lab.post(f"/api/runs/{run_id}/cancel").status_code == 202
    events = viewer.wait_finished(60)
    viewer.disconnect()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == "cancelled" and events == idle_lab.events(run_id)


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


# -- load -----------------------------------------------------------------------------------

def test_fifty_viewers_on_one_run_each_get_every_event(idle_lab):
    run_id = idle_lab.launch({**TINY, "epochs": 2})
    with ThreadPoolExecutor(10) as pool:
        viewers = list(pool.map(lambda _: Viewer(idle_lab.url, run_id), range(50)))
    stored = None
    for viewer in viewers:
        events = viewer.wait_finished(120)
        viewer.disconnect()
        stored = stored or idle_lab.events(run_id)
        assert events == stored
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
