"""Hardening, round two, on the real stack: cross-site requests, redirects, the passcode in
the cookie, proxies, the queue after Redis loses its data, Socket.IO abuse, side-by-side
labs. Each test is one finding of the probe and failed on the code before the fix."""

from __future__ import annotations

import http.cookiejar
import http.server
import threading
import time
from urllib.parse import urlsplit

import pytest

from launcher import processes as stack
from testkit.lab_stack import ENDLESS

# -- a second origin: another "site" on another port, as a sibling lab or subdomain is ----



class _Pages(http.server.BaseHTTPRequestHandler):
    pages: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = self.pages.get(self.path.split("?")[0], "").encode()
        self.send_response(200 if body else 204)  # 204: no favicon, and no console error
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture
def other_origin():
    """``(base_url, pages)``: put HTML into pages by path and it is served there."""
    port = stack.free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Pages.pages = {}
    yield f"http://127.0.0.1:{port}", _Pages.pages
    server.shutdown()


def _runs(lab) -> set[str]:
    return {r["id"] for r in lab.get("/api/runs").json()["runs"]}


def test_pages_on_another_origin_can_neither_launch_nor_cancel(idle_lab, watched,
                                                                other_origin):
    lab = idle_lab
    victim = lab.launch(ENDLESS)
    lab.wait_event(victim, "batch")
    before = _runs(lab)
    base, pages = other_origin
    pages["/form.html"] = f"""<form id=f method=post action="{lab.url}/train">
        <input name=recipe value=fast_cnn><input name=epochs value=1></form>
        <script>document.getElementById('f').submit()</script>"""
    pages["/cancel.html"] = f"""<form id=f method=post
        action="{lab.url}/api/runs/{victim}/cancel"></form>
        <script>document.getElementById('f').submit()</script>"""
    pages["/fetch.html"] = f"""<script>
        fetch("{lab.url}/api/runs", {{method: "POST", mode: "no-cors", credentials: "include"}})
          .then(() => document.title = "sent", () => document.title = "sent");
        </script>"""
    w = watched()
    page = w.page
    page.goto(lab.url + "/train")  # the browser has a session with the lab
    page.goto(base + "/form.html")
    page.wait_for_load_state()
    page.wait_for_url(lab.url + "/train")
    assert "came from a page on " + base in page.locator("main").inner_text()
    page.goto(base + "/cancel.html")
    page.wait_for_url(f"{lab.url}/api/runs/{victim}/cancel")
    assert "not from this lab's own pages" in page.content()
    page.goto(base + "/fetch.html")
    page.wait_for_function("document.title === 'sent'")
    time.sleep(1)
    assert _runs(lab) == before, "a page on another origin launched a run"
    assert lab.run(victim)["status"] == "running", "a page on another origin cancelled a run"
    # The lab's own form still launches (with its token), and scripts need none.
    page.goto(lab.url + "/train")
    page.fill("#f-epochs", "1")
    page.fill("#f-limit", "")
    page.click("#start")
    page.wait_for_url("**/runs/*")
    assert len(_runs(lab)) == len(before) + 1
    w.problems = [p for p in w.problems if "403" not in p]  # the refused pages' own status


def test_redirect_in_a_real_browser_stays_on_the_lab(idle_lab, watched):
    page = watched().page
    for target in ("////localhost:5399/phish.html", "/\\localhost:5399/x", "/%09/localhost/"):
        page.goto(f"{idle_lab.url}/unlock?next={target}")
        assert urlsplit(page.url).netloc == urlsplit(idle_lab.url).netloc, page.url
