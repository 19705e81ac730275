"""Hardening, round two, on the real stack: cross-site requests, redirects, the passcode in
the cookie, proxies, the queue after Redis loses its data, Socket.IO abuse, side-by-side
labs. Each test is one finding of the probe and failed on the code before the fix."""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import http.server
import json
import threading
import time
import zlib
from urllib.parse import urljoin, urlsplit

import pytest
import redis
import requests
import socketio

from testkit.lab_stack import ENDLESS, PASSCODE, TINY

# -- a second origin: another "site" on another port, as a sibling lab or subdomain is ----










OFF_SITE = ["////localhost:5399/phish.html", "//evil.example/x", "/\\evil.example/x",
            "/\\/evil.example/", "\\\\evil.example", "/\t/evil.example/", " //evil.example",
            "/%5Cevil.example", "https://evil.example/", "javascript:alert(1)",
            "/\n/evil.example"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_redirects_never_leave_the_site(idle_lab, idle_locked_lab, target):
    open_lab, locked = idle_lab, idle_locked_lab
    answers = [
        requests.get(open_lab.url + "/unlock", params={"next": target}, timeout=30,
                     allow_redirects=False),
        requests.post(open_lab.url + "/lock", data={"next": target}, timeout=30,
                      allow_redirects=False),
        requests.post(locked.url + "/lock", data={"next": target}, timeout=30,
                      allow_redirects=False),
        requests.post(locked.url + "/unlock", data={"passcode": PASSCODE, "next": target},
                      timeout=30, allow_redirects=False),
    ]
    for resp in answers:
        assert resp.status_code in (302, 303), resp.text
        location = resp.headers["Location"]
        landed = urlsplit(urljoin(resp.url, location))
        assert landed.netloc == urlsplit(resp.url).netloc, (target, location)
        assert not location.startswith("//") and "\\" not in location




def _session_payload(cookie: str) -> dict:
    """What a signed Flask session cookie says (it is readable, only signed)."""
    compressed = cookie.startswith(".")  # itsdangerous: "." + zlib data when it is shorter
    raw = cookie.lstrip(".").split(".")[0]
    raw += "=" * (-len(raw) % 4)
    decoded = base64.urlsafe_b64decode(raw)
    return json.loads(zlib.decompress(decoded) if compressed else decoded)


def test_the_session_cookie_does_not_give_the_passcode_away(idle_locked_lab):
    lab = idle_locked_lab
    browser_like = requests.Session()
    resp = browser_like.post(lab.url + "/unlock", data={"passcode": PASSCODE}, timeout=30,
                             allow_redirects=False)
    assert resp.status_code in (302, 303)
    cookie = next(c for c in browser_like.cookies if c.name.startswith("lab_session"))
    unlocked = _session_payload(cookie.value)["unlocked"]
    # The old cookie held sha256 of a fixed prefix + passcode: a dictionary found it offline.
    words = ["tabby", "kitten", PASSCODE, "tabby-42", "puppy"]
    guesses = {hashlib.sha256(b"kitten-puppy-lab:" + w.encode()).hexdigest()[:32]
               for w in words} | {hashlib.sha256(w.encode()).hexdigest() for w in words}
    assert unlocked not in guesses and PASSCODE not in cookie.value
    # It still unlocks this browser, and only while the passcode is the same.
    page = browser_like.get(lab.url + "/train", timeout=30).text
    assert 'name="passcode"' not in page


def test_behind_a_proxy_the_client_cannot_choose_its_address(proxied_lab):
    from dashboard.access import MAX_WRONG_PER_ADDRESS

    lab = proxied_lab
    guesses = requests.Session()  # no cookies kept: every try is a new browser
    guesses.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    for i in range(MAX_WRONG_PER_ADDRESS):  # each claiming another address first
        resp = guesses.post(lab.url + "/api/runs", json=TINY, timeout=30, headers={
            "X-Lab-Passcode": f"guess{i}", "X-Forwarded-For": f"10.9.{i % 250}.1, 203.0.113.7"})
        assert resp.status_code == 403, (i, resp.text)
    resp = requests.post(lab.url + "/api/runs", json=TINY, timeout=30, headers={
        "X-Lab-Passcode": "guess-9", "X-Forwarded-For": "10.9.99.1, 203.0.113.7"})
    assert resp.status_code == 429 and "from this address" in resp.json()["error"]
    # Another client behind the same proxy is a different address and is not throttled.
    resp = requests.post(lab.url + "/api/runs", json=TINY, timeout=30, headers={
        "X-Lab-Passcode": "guess", "X-Forwarded-For": "203.0.113.8"})
    assert resp.status_code == 403


@pytest.fixture(scope="module")
def proxied_lab(tiny_dataset, tmp_path_factory):
    """A locked stack behind one (pretend) reverse proxy: LAB_TRUSTED_PROXIES=1."""
    from testkit.lab_stack import LabStack

    lab = LabStack(tmp_path_factory.mktemp("proxied"), tiny_dataset,
                   {"LAB_PASSCODE": PASSCODE, "LAB_TRUSTED_PROXIES": "1",
                    "LAB_TRUST_PROXY": "1"}).start()  # the older switch too, as before
    yield lab
    lab.stop()


def test_queued_runs_whose_task_redis_lost_are_queued_again_once(idle_lab):
    lab = idle_lab
    busy = lab.launch(ENDLESS)
    lab.wait_event(busy, "batch")
    waiting = [lab.launch({**TINY, "epochs": 1}) for _ in range(2)]
    client = redis.Redis(port=lab.redis_port)
    assert client.llen("celery") == 2
    client.delete("celery")  # Redis lost its data (no persistence, a flush, a restore)
    lab.post(f"/api/runs/{busy}/cancel")
    lab.wait_status(busy, ("cancelled", "failed"))
    started = time.monotonic()
    for run_id in waiting:
        assert lab.wait_status(run_id, ("succeeded", "failed"), timeout=120)["status"] == \
            "succeeded"
    assert time.monotonic() - started < 90  # healed within the check interval (20 s)
    for run_id in waiting:  # each trained once
        assert [e["type"] for e in lab.events(run_id)].count("run_started") == 1
    assert "had no task on the queue" in lab.web.log_text()


def test_socketio_refuses_other_origins_and_abusive_joins(idle_lab):
    lab = idle_lab
    run_id = lab.launch({**TINY, "epochs": 1})
    lab.wait_status(run_id, "succeeded")
    # (Polling: the websocket client adds an Origin header of its own, the lab's.)
    stranger = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stranger.connect(lab.url, headers={"Origin": "http://127.0.0.1:5399"},
                         transports=["polling"], wait_timeout=10)
    same = socketio.Client(reconnection=False)
    same.connect(lab.url, headers={"Origin": lab.url}, transports=["polling"],
                 wait_timeout=10)
    last = lab.events(run_id)[-1]["seq"]
    # An `after` beyond any seq (it used to overflow SQLite's integers): nothing to send.
    reply = same.call("join", {"run_id": run_id, "after": 2**70}, timeout=10)
    assert reply["ok"] and reply["last_seq"] == last
    # Joining over and over replays the run each time: capped per connection.
    replies = [same.call("join", {"run_id": run_id, "after": last}, timeout=10)
               for _ in range(25)]
    refused = [r for r in replies if not r["ok"]]
    assert refused and "too many joins from this connection" in refused[0]["error"]
    same.disconnect()

    # A payload nested too deeply for the JSON parser gets an error reply, not a traceback.
    deep = socketio.Client(reconnection=False)
    deep.connect(lab.url, transports=["websocket"], wait_timeout=10)
    assert deep.call("join", {"run_id": run_id}, timeout=10)["ok"]
    got: list = []
    answered = threading.Event()
    deep.callbacks["/"][777] = lambda *a: (got.append(a), answered.set())  # its ack id
    deep.eio.send('2777["join",' + "[" * 20000 + "]" * 20000 + "]")
    assert answered.wait(10), "no reply to a deeply nested join"
    assert got[0][0]["ok"] is False and "nested too deeply" in got[0][0]["error"]
    assert deep.call("join", {"run_id": run_id}, timeout=10)["ok"]  # still served
    deep.disconnect()
    log = lab.web.log_text()
    assert "RecursionError" not in log and "OverflowError" not in log


def test_two_labs_on_one_host_keep_their_own_sessions(idle_lab, idle_locked_lab):
    one_browser = requests.Session()  # cookies ignore ports: both labs see each other's
    one_browser.post(idle_locked_lab.url + "/unlock", data={"passcode": PASSCODE},
                     timeout=30)
    assert 'name="passcode"' not in one_browser.get(idle_locked_lab.url + "/train",
                                                    timeout=30).text
    resp = one_browser.post(idle_lab.url + "/api/runs", json={**TINY, "epochs": 1},
                            timeout=30)  # the other lab writes its session cookie
    assert resp.status_code == 202
    names = {c.name for c in one_browser.cookies}
    assert len({n for n in names if n.startswith("lab_session")}) == 2, names
    assert 'name="passcode"' not in one_browser.get(idle_locked_lab.url + "/train",
                                                    timeout=30).text, "signed out"
