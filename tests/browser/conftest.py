"""The browser tests' fixtures: one headless Chromium for the session, and pages that fail
the test on any console error or uncaught page error."""

from __future__ import annotations

import pytest

from testkit.synthetic import photo_bytes
from tests.browser.pages import ARTIFACTS, CHROMIUM, Watched


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def watched(browser):
    """Makes pages (``watched(**context options)``), each checked for errors when closed."""
    pages: list[Watched] = []

    def make(**kw) -> Watched:
        pages.append(Watched(browser, **kw))
        return pages[-1]

    yield make
    for page in pages:
        page.close()


def _petimages_zip(per_class: int = 12) -> bytes:
    """A small archive in Microsoft's PetImages layout, padded so a download takes a moment."""
    import io
    import os as _os
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for kind, folder in (("cat", "Cat"), ("dog", "Dog")):
            for i in range(per_class):
                archive.writestr(f"PetImages/{folder}/{i}.jpg",
                                 photo_bytes(kind, size=64, seed=i + (0 if kind == "cat" else 99)))
        archive.writestr("PetImages/Cat/666.jpg", b"")  # like the real archive's empty file
        archive.writestr("readme[1].txt", _os.urandom(1_500_000))
    return buf.getvalue()


@pytest.fixture(scope="session")
def empty_lab(tmp_path_factory):
    """A lab with no dataset and no runs, whose download URL is a slow local server."""
    import threading
    import time as _time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from testkit.lab_stack import LabStack

    body = _petimages_zip()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 64 * 1024):  # about 3 s in all
                self.wfile.write(body[start:start + 64 * 1024])
                _time.sleep(0.12)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("empty-lab")
    url = f"http://127.0.0.1:{server.server_address[1]}/kagglecatsanddogs.zip"
    lab = LabStack(work, work / "data" / "PetImages-here", extra_env={
        "LAB_DATASET_URL": url, "HOME": str(work)}).start()  # HOME: no ~/.kaggle here
    yield lab
    lab.stop()
    server.shutdown()
