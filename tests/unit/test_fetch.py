"""Getting the data, against a small local HTTP server this test starts (no internet here)."""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.settings import load_ml_options
from launcher.processes import free_port
from ml.errors import DownloadError
from ml.fetch import download_dataset
from testkit.cli import run_cli
from testkit.synthetic import photo_bytes


def petimages_zip(per_class: int = 5, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for kind, folder in (("cat", "Cat"), ("dog", "Dog")):
            for i in range(per_class):
                archive.writestr(f"PetImages/{folder}/{i}.jpg", photo_bytes(kind, seed=i))
        archive.writestr("PetImages/Cat/666.jpg", b"")  # the real archive has empty files
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


def kaggle_zip(per_class: int = 4) -> bytes:
    """Kaggle's download-all: a zip holding train.zip (flat cat.N.jpg) and test1.zip."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as train:
        for kind in ("cat", "dog"):
            for i in range(per_class):
                train.writestr(f"train/{kind}.{i}.jpg", photo_bytes(kind, seed=i))
    test = io.BytesIO()
    with zipfile.ZipFile(test, "w") as t:
        t.writestr("test1/1.jpg", photo_bytes("cat"))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as archive:
        archive.writestr("train.zip", inner.getvalue())
        archive.writestr("test1.zip", test.getvalue())
        archive.writestr("sampleSubmission.csv", b"id,label\n")
    return outer.getvalue()


@pytest.fixture
def server():
    """Serves ``routes[path] = (body, headers, status, short_by)``."""
    routes: dict[str, tuple] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body, need_auth, status, short_by = routes.get(self.path, (b"", None, 404, 0))
            if need_auth and self.headers.get("Authorization") != need_auth:
                status, body = 401, b"unauthorised"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) - short_by])

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()


@pytest.fixture(autouse=True)
def no_kaggle(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default ~/.kaggle: none here


def from_env(dest, **kwargs):
    """download_dataset told the Kaggle settings of the environment, as the lab's callers
    (the worker, ``python -m ml download``) tell it theirs."""
    return download_dataset(dest, options=load_ml_options(), **kwargs)


def test_petimages_zip_downloads_with_progress_and_unpacks(server, tmp_path):
    base, routes = server
    body = petimages_zip()
    routes["/pets.zip"] = (body, None, 200, 0)
    seen = []
    summary = download_dataset(tmp_path / "data", url=base + "/pets.zip",
                               on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(body), len(body))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert (summary["total"], summary["cats"], summary["dogs"]) == (10, 5, 5)
    assert summary["skipped"] == 1  # the empty file, reported, not fatal
    assert not list(tmp_path.glob(".*"))  # no .part file, no unpack folder left
    with pytest.raises(DownloadError, match="already holds photos"):
        download_dataset(tmp_path / "data", url=base + "/pets.zip")
    again = download_dataset(tmp_path / "data", url=base + "/pets.zip", force=True)
    assert again["total"] == 10


def test_a_folder_with_other_files_is_never_replaced_without_force(server, tmp_path):
    base, routes = server
    routes["/pets.zip"] = (petimages_zip(), None, 200, 0)
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="already holds files"):
        download_dataset(target, url=base + "/pets.zip")
    assert (target / "notes.txt").read_text() == "mine"


def test_kaggle_credentials_are_not_sent_on_to_a_redirects_host(server, tmp_path,
                                                                 monkeypatch):
    base, routes = server
    seen = []

    class Storage(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            body = kaggle_zip()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    storage_url = f"http://127.0.0.1:{storage.server_address[1]}/signed.zip"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", storage_url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    kaggle = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=kaggle.serve_forever, daemon=True).start()
    monkeypatch.setenv("LAB_KAGGLE_API", f"http://127.0.0.1:{kaggle.server_address[1]}/api/v1")
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    try:
        assert from_env(tmp_path / "data")["total"] == 8
    finally:
        storage.shutdown()
        kaggle.shutdown()
    assert seen == [None]


def test_kaggle_files_with_credentials(server, tmp_path, monkeypatch):
    base, routes = server
    token = "Basic " + base64.b64encode(b"ada:s3cret").decode()
    routes["/api/v1/competitions/data/download-all/dogs-vs-cats"] = (kaggle_zip(), token,
                                                                     200, 0)
    monkeypatch.setenv("LAB_KAGGLE_API", base + "/api/v1")
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    summary = from_env(tmp_path / "data")
    assert (summary["total"], summary["cats"], summary["dogs"]) == (8, 4, 4)
    assert summary["source"] == "kaggle"
    assert not list((tmp_path / "data").rglob("*.zip"))  # nested zips unpacked or dropped
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(DownloadError, match="refused the Kaggle credentials"):
        from_env(tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_bad_downloads_leave_nothing_behind(server, tmp_path):
    base, routes = server
    body = petimages_zip()
    routes["/short.zip"] = (body, None, 200, 100)
    routes["/pets.zip"] = (body, None, 200, 0)
    routes["/slip.zip"] = (petimages_zip(extra={"../evil.jpg": b"x"}), None, 200, 0)
    routes["/notzip.zip"] = (b"<html>maintenance</html>", None, 200, 0)
    target = tmp_path / "data"
    for url, match in ((base + "/short.zip", "stopped early"),
                       (base + "/slip.zip", "unsafe path"),
                       (base + "/notzip.zip", "not a zip"),
                       (base + "/missing.zip", "HTTP 404")):
        with pytest.raises(DownloadError, match=match):
            download_dataset(target, url=url)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["no-kaggle"] or \
            sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert not (tmp_path.parent / "evil.jpg").exists()
    with pytest.raises(DownloadError, match="sha256"):
        download_dataset(target, url=base + "/pets.zip", sha256="0" * 64)
    with pytest.raises(DownloadError, match="cancelled"):
        download_dataset(target, url=base + "/pets.zip", should_stop=lambda: True)
    assert not target.exists()


def test_offline_is_one_clear_sentence(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/pets.zip"  # nothing listens there
    with pytest.raises(DownloadError, match="could not reach 127.0.0.1 .is this machine offline"):
        download_dataset(tmp_path / "data", url=url, timeout=5)
    result = run_cli("download", "--dest", str(tmp_path / "data"), "--url", url)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "offline" in result.stderr


def test_cli_downloads_and_summarises(server, tmp_path):
    base, routes = server
    routes["/pets.zip"] = (petimages_zip(), None, 200, 0)
    result = run_cli("download", "--dest", str(tmp_path / "data"), "--url", base + "/pets.zip")
    assert result.returncode == 0, result.stderr
    assert "unpacked 10 photos (5 cats, 5 dogs, 1 skipped)" in result.stdout
