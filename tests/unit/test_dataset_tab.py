"""Dataset tab: counts, server-side paging and sorting, charts, thumbnails, and photo routes
that never serve a file outside the dataset folder."""

from __future__ import annotations

import html
import io
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from PIL import Image

import dashboard.scan_cache as scan_cache
from core.settings import load_settings
from dashboard import paths
from dashboard.app import create_app
from ml.data import ScanResult
from testkit.synthetic import make_flat_dataset, photo_bytes

SCRIPT_NAME = "cat.<script>alert(1)<.jpg"  # legal on Linux: only "/" and NUL are not
BAD_SKIPPED_NAME = "dog.<img src=x onerror=alert(2)>.jpg"


def make_client(tmp_path: Path, data_dir: Path):
    settings = load_settings({
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
        "LAB_DATA_DIR": str(data_dir),
        "LAB_MODELS_DIR": str(tmp_path / "models"),
    })
    app = create_app(settings, start_background=False)
    return app, app.test_client()


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """30 photos per class, one more cat with HTML in its name, a corrupt and an empty file."""
    base = tmp_path_factory.mktemp("flat")
    data = make_flat_dataset(base / "train", per_class=30)
    (data / "cat.999.jpg").write_bytes(b"not an image")
    (data / "dog.998.jpg").write_bytes(b"")
    (data / SCRIPT_NAME).write_bytes(photo_bytes("cat", seed=77))
    (data / BAD_SKIPPED_NAME).write_bytes(b"<html>nope</html>")
    app, client = make_client(base, data)
    return data, app, client


def table_rows(page: str, table_id: str = "photos-table") -> list[str]:
    """The (unescaped) file names shown in a table, in order."""
    body = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r'<td class="ds-path">(?:<a href="[^"]*">)?(.*?)(?:</a>)?</td>', body)
    return [html.unescape(c) for c in cells]


def get_page(client, query: str = "") -> str:
    resp = client.get("/dataset" + query)
    assert resp.status_code == 200, query
    return resp.get_data(as_text=True)


# ------------------------------------------------------------------------- the page


def test_page_shows_counts_and_first_rows_in_natural_order(flat):
    _, _, client = flat
    page = get_page(client, "?per_page=10")
    summary = page.split('class="stats ds-stats"', 1)[1].split("</section>", 1)[0]
    assert re.findall(r"<b>([\d,]+)</b>", summary) == ["61", "31", "30", "3"]
    assert "Dataset · Kitten-and-Puppy Lab" in page
    assert 'class="tab active"' in page and 'href="/dataset"' in page
    assert table_rows(page) == [f"cat.{i}.jpg" for i in range(10)]
    assert "Page <b>1</b> of 7" in page
    # Relative paths only: the absolute folder appears once, in the header.
    data_dir = str(flat[0])
    assert data_dir not in page.split('id="photos"', 1)[1]
    # The Plotly chart gets its counts and colours; plotly.js comes from the app itself.
    assert 'data-dogs="30" data-cats="31"' in page
    assert "#2f6db5" in page and "#d9622b" in page
    assert '<script src="/vendor/plotly.min.js"></script>' in page
    assert "cdn" not in page.lower()


def test_sorting_filtering_and_paging(flat):
    _, _, client = flat
    by_label_desc = table_rows(get_page(client, "?sort=label&order=desc&per_page=10"))
    assert all(name.startswith("cat.") for name in by_label_desc)
    by_label_asc = table_rows(get_page(client, "?sort=label&order=asc&per_page=10"))
    assert by_label_asc == [f"dog.{i}.jpg" for i in range(10)]
    # Page 2 continues where page 1 stopped.
    page2 = table_rows(get_page(client, "?sort=label&order=asc&per_page=10&page=2"))
    assert page2 == [f"dog.{i}.jpg" for i in range(10, 20)]
    # Newest order first on the path column, natural order (cat.29 before cat.3 reversed).
    desc = table_rows(get_page(client, "?sort=image_path&order=desc&per_page=10"))
    assert desc[:3] == ["dog.29.jpg", "dog.28.jpg", "dog.27.jpg"]
    # Only dogs.
    dogs_page = get_page(client, "?label=dog&per_page=200")
    dogs = table_rows(dogs_page)
    assert len(dogs) == 30 and all(name.startswith("dog.") for name in dogs)
    # Bigger files first.
    sizes = [p.stat().st_size for p in (flat[0] / n for n in
             table_rows(get_page(client, "?sort=bytes&order=desc&per_page=200")))]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 61
    # Sort links keep the filter and flip the order of the active column.
    page = get_page(client, "?sort=label&order=asc&label=dog")
    assert 'href="/dataset?sort=label&amp;order=desc&amp;label=dog#photos"' in page
    assert 'aria-sort="ascending"' in page


@pytest.mark.parametrize("query", [
    "?page=abc", "?page=-3", "?page=0", "?page=99999999999999999999999", "?page=1.5",
    "?per_page=0", "?per_page=xyz", "?per_page=100000", "?sort=evil", "?sort=__class__",
    "?order=sideways", "?label=horse", "?label=", "?page=&sort=&order=&per_page=",
    "?page=%00", "?sort=label&order=desc&page=%F0%9F%90%B1",
])
def test_bad_query_values_fall_back_instead_of_failing(flat, query):
    page = get_page(flat[2], query)
    assert len(table_rows(page)) > 0


def test_out_of_range_values_are_clamped(flat):
    _, _, client = flat
    last = get_page(client, "?per_page=10&page=999")
    assert "Page <b>7</b> of 7" in last
    assert table_rows(last) == ["dog.29.jpg"]
    assert len(table_rows(get_page(client, "?per_page=3"))) == 10  # at least 10 a page
    assert len(table_rows(get_page(client, "?per_page=5000"))) == 61  # at most 200


def test_skipped_files_are_listed_with_reasons(flat):
    _, _, client = flat
    page = get_page(client)
    skipped = dict(zip(table_rows(page, "skipped-table"),
                       re.findall(r'<td class="ds-path">.*?</td><td>(.*?)</td>',
                                  page.split('id="skipped-table"', 1)[1]), strict=False))
    assert set(skipped) == {"cat.999.jpg", "dog.998.jpg", BAD_SKIPPED_NAME}
    assert "not an image" in skipped["cat.999.jpg"]
    assert "empty file" in skipped["dog.998.jpg"]
    assert str(flat[0]) not in page.split('id="skipped"', 1)[1]


def test_file_names_with_html_are_escaped(flat):
    _, _, client = flat
    page = get_page(client, "?per_page=200")
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert html.escape(SCRIPT_NAME, quote=False) in page
    assert SCRIPT_NAME in table_rows(page)
    # ...and its thumbnail link round-trips through URL quoting.
    href = re.search(r'href="(/photos/cat\.%3Cscript[^"]*)"', page).group(1)
    resp = flat[2].get(href)
    assert resp.status_code == 200 and resp.data == (flat[0] / SCRIPT_NAME).read_bytes()


def test_samples_have_six_photos_of_each_class_and_thumbnails(flat):
    _, _, client = flat
    page = get_page(client)
    grid = page.split('id="samples"', 1)[1].split("</section>", 1)[0]
    thumbs = re.findall(r'src="(/photos/thumb/[^"]+)"', grid)
    assert len(thumbs) == 12
    badges = re.findall(r'<span class="badge (dog|cat)">', grid)
    assert badges.count("dog") == 6 and badges.count("cat") == 6
    assert get_page(client).split('id="samples"', 1)[1].split("</section>", 1)[0] == grid
    for url in thumbs[:3]:
        resp = client.get(url)
        assert resp.status_code == 200 and resp.mimetype == "image/jpeg"


def test_samples_fill_up_from_the_bigger_class(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        (data / f"cat.{i}.jpg").write_bytes(photo_bytes("cat", seed=i))
    (data / "dog.0.jpg").write_bytes(photo_bytes("dog", seed=1))
    _, client = make_client(tmp_path, data)
    grid = get_page(client).split('id="samples"', 1)[1].split("</section>", 1)[0]
    badges = re.findall(r'<span class="badge (dog|cat)">', grid)
    assert badges.count("dog") == 1 and badges.count("cat") == 10


# ------------------------------------------------------------------------- charts, photos


def test_countplot_is_a_cached_png(flat):
    _, _, client = flat
    first = client.get("/dataset/countplot.png")
    assert first.status_code == 200 and first.mimetype == "image/png"
    assert first.data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(first.data)).size[0] >= 400
    again = client.get("/dataset/countplot.png")
    assert again.data == first.data
    etag = first.headers["ETag"]
    assert client.get("/dataset/countplot.png",
                      headers={"If-None-Match": etag}).status_code == 304


def test_plotly_bundle_is_served_locally(flat):
    resp = flat[2].get("/vendor/plotly.min.js")
    assert resp.status_code == 200 and b"plotly" in resp.data[:2000].lower()
    resp.close()


def test_thumbnails_are_small_jpegs(tmp_path):
    data = tmp_path / "data"
    (data / "Cat").mkdir(parents=True)
    (data / "Dog").mkdir()
    (data / "Cat" / "big.jpg").write_bytes(photo_bytes("cat", size=600))
    (data / "Dog" / "clear.png").write_bytes(
        photo_bytes("dog", fmt="PNG", size=300, mode="RGBA"))
    (data / "Dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50 + b"\xff\xd9")
    _, client = make_client(tmp_path, data)
    for rel in ("Cat/big.jpg", "Dog/clear.png"):
        resp = client.get(f"/photos/thumb/{rel}")
        assert resp.status_code == 200 and resp.mimetype == "image/jpeg", rel
        assert resp.data.startswith(b"\xff\xd8\xff")
        assert max(Image.open(io.BytesIO(resp.data)).size) <= 160
        assert len(resp.data) < 20_000
        assert client.get(f"/photos/thumb/{rel}").data == resp.data  # from the cache
    original = client.get("/photos/Cat/big.jpg")
    assert original.status_code == 200 and original.mimetype == "image/jpeg"
    assert original.data == (data / "Cat" / "big.jpg").read_bytes()
    original.close()
    # Undecodable: no thumbnail, and a 404 rather than a 500.
    assert client.get("/photos/thumb/Dog/bad.jpg").status_code == 404
    (data / "notes.txt").write_text("<script>alert(1)</script>")
    assert client.get("/photos/thumb/notes.txt").status_code == 404
    # Not an image: never shown inline as HTML.
    text = client.get("/photos/notes.txt")
    assert text.status_code == 200 and text.mimetype == "application/octet-stream"
    assert text.headers["X-Content-Type-Options"] == "nosniff"
    text.close()


@pytest.fixture
def guarded(tmp_path):
    """A dataset next to secrets, with links inside it that point outside."""
    data = make_flat_dataset(tmp_path / "data", per_class=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cat.5.jpg").write_bytes(photo_bytes("cat", seed=5))
    os.symlink(outside / "cat.5.jpg", data / "cat.777.jpg")
    os.symlink(secret, data / "cat.778.jpg")
    os.symlink(outside, data / "linked")
    (data / "sub").mkdir()
    _, client = make_client(tmp_path, data)
    return data, secret, client


@pytest.mark.parametrize("url", [
    "/photos/../../etc/passwd",
    "/photos/../secret.txt",
    "/photos/%2e%2e/%2e%2e/etc/passwd",
    "/photos/%2e%2e/secret.txt",
    "/photos/%2E%2E%2Fsecret.txt",
    "/photos/sub/../../secret.txt",
    "/photos/thumb/..%2f..%2fetc%2fpasswd",
    "/photos/thumb/..%2fsecret.txt",
    "/photos/thumb/../outside/cat.5.jpg",
    "/photos/%2Fetc%2Fpasswd",
    "/photos/cat.777.jpg",
    "/photos/thumb/cat.777.jpg",
    "/photos/cat.778.jpg",
    "/photos/linked/cat.5.jpg",
    "/photos/thumb/linked/cat.5.jpg",
    "/photos/sub",
    "/photos/.",
    "/photos/cat.0.jpg%00.txt",
    "/photos/no-such.jpg",
])
def test_nothing_outside_the_dataset_folder_is_served(guarded, url):
    _, _, client = guarded
    resp = client.get(url, follow_redirects=True)
    assert resp.status_code == 404, url
    assert b"TOP SECRET" not in resp.data and b"root:" not in resp.data


def test_absolute_paths_are_refused(guarded):
    data, secret, client = guarded
    for url in ("/photos/" + str(secret), "/photos/" + quote(str(secret), safe=""),
                "/photos/thumb/" + str(data / "cat.0.jpg").lstrip("/") + "/../../secret.txt",
                "/photos/thumb/" + quote(str(data.parent / "outside" / "cat.5.jpg"), safe="")):
        resp = client.get(url, follow_redirects=True)
        assert resp.status_code == 404, url
        assert b"TOP SECRET" not in resp.data
    assert client.get("/photos/cat.0.jpg").status_code == 200
    # Werkzeug already turns "//" into "/": the route's own check must refuse them too.
    root = os.path.realpath(data)
    assert paths.resolve(root, str(secret)) is None
    assert paths.resolve(root, "/etc/passwd") is None
    assert paths.resolve(root, "cat.0.jpg") == os.path.join(root, "cat.0.jpg")


def test_links_outside_are_listed_but_not_linked(guarded):
    _, _, client = guarded
    page = get_page(client)
    assert "cat.777.jpg" in table_rows(page)  # the scanner accepts it as a photo...
    assert "/photos/cat.777.jpg" not in page and "/photos/thumb/cat.777.jpg" not in page


def test_photo_rel_maps_training_paths_onto_this_folder(guarded, tmp_path):
    data, secret, client = guarded
    with client.application.app_context():
        rel = paths.photo_rel
        assert rel(str(data / "cat.1.jpg")) == "cat.1.jpg"
        assert rel(str(data / "cat.1.jpg"), str(data)) == "cat.1.jpg"
        # A worker that mounted the dataset elsewhere.
        assert rel("/mnt/worker/train/dog.0.jpg", "/mnt/worker/train") == "dog.0.jpg"
        assert rel("/mnt/worker/train/dog.404.jpg", "/mnt/worker/train") is None
        assert rel("/mnt/worker/train/../../../" + str(secret), "/mnt/worker/train") is None
        assert rel(str(secret)) is None
        assert rel(str(data / "cat.777.jpg")) is None  # a link that leads outside
        assert rel("relative/cat.1.jpg", "relative") is None
        assert rel("") is None


def test_photo_rel_handles_class_folders(tmp_path):
    data = tmp_path / "PetImages"
    (data / "Cat").mkdir(parents=True)
    (data / "Cat" / "1.jpg").write_bytes(photo_bytes("cat"))
    app, _ = make_client(tmp_path, data)
    with app.app_context():
        assert paths.photo_rel("/w/PetImages/Cat/1.jpg", "/w/PetImages") == "Cat/1.jpg"
    with app.test_request_context():
        from flask import url_for

        assert url_for("photos.thumb", rel="Cat/1.jpg") == "/photos/thumb/Cat/1.jpg"


# ------------------------------------------------------------------------- no dataset


def test_missing_folder_is_a_page_that_says_how_to_fix_it(tmp_path):
    _, client = make_client(tmp_path, tmp_path / "nowhere")
    page = get_page(client)
    assert "LAB_DATA_DIR" in page and "does not exist" in page
    assert "The dataset folder is missing" in page
    assert "make run" in page and "make data" in page
    assert "cat.N.jpg" in page and "Cat/" in page
    assert "Traceback" not in page
    assert client.get("/dataset/countplot.png").status_code == 404
    assert client.get("/photos/cat.0.jpg").status_code == 404
    assert client.get("/photos/thumb/cat.0.jpg").status_code == 404


def test_a_file_instead_of_a_folder(tmp_path):
    target = tmp_path / "train.zip"
    target.write_bytes(b"PK")
    _, client = make_client(tmp_path, target)
    page = get_page(client)
    assert "not a folder" in page and "LAB_DATA_DIR" in page


def test_folder_without_photos_shows_what_was_skipped(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _, client = make_client(tmp_path, data)
    page = get_page(client)
    assert "has no photos" in page and "LAB_DATA_DIR" in page
    (data / "readme.txt").write_text("hello")
    (data / "cat.1.jpg").write_bytes(b"")
    time.sleep(0.05)  # coarse directory mtimes: make sure the change is seen
    os.utime(data)
    page = get_page(client)
    assert "has no photos" in page
    assert set(table_rows(page, "skipped-table")) == {"readme.txt", "cat.1.jpg"}


# ------------------------------------------------------------------------- the cache


def test_changes_to_the_folder_are_picked_up(tmp_path):
    data = tmp_path / "data"
    for kind in ("Cat", "Dog"):
        (data / kind).mkdir(parents=True)
        (data / kind / "1.jpg").write_bytes(photo_bytes(kind.lower()))
    _, client = make_client(tmp_path, data)
    assert 'data-dogs="1" data-cats="1"' in get_page(client)
    time.sleep(0.05)
    (data / "Cat" / "2.jpg").write_bytes(photo_bytes("cat", seed=2))  # only Cat/ changes
    assert 'data-dogs="1" data-cats="2"' in get_page(client)


def test_an_old_scan_is_refreshed_in_the_background(tmp_path, monkeypatch):
    data = make_flat_dataset(tmp_path / "data", per_class=2)
    _, client = make_client(tmp_path, data)
    get_page(client)
    key = os.path.realpath(data)
    first = scan_cache._cache[key]
    monkeypatch.setattr(scan_cache, "RESCAN_AFTER_S", 0.0)
    assert 'data-dogs="2"' in get_page(client)  # the old scan answers at once...
    deadline = time.monotonic() + 30
    while scan_cache._cache.get(key) is first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scan_cache._cache[key] is not first  # ...while a new one is made behind it


def test_a_big_frame_is_paged_from_the_cache(tmp_path, monkeypatch):
    """25,000 rows (no files: the scan is faked) page, sort and filter like small ones."""
    data = tmp_path / "big"
    data.mkdir()
    root = os.path.realpath(data)
    n = 25_000
    images = pd.DataFrame({
        "image_path": [f"{root}/{'cat' if i % 2 else 'dog'}.{i // 2}.jpg" for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "class_name": ["cat" if i % 2 else "dog" for i in range(n)],
        "format": "JPEG",
        "bytes": [10_000 + (i * 7919) % 50_000 for i in range(n)],
    })
    calls = []

    def fake_scan(folder):
        calls.append(folder)
        return ScanResult(root=Path(root), images=images,
                          skipped=pd.DataFrame(columns=["image_path", "reason"]))

    monkeypatch.setattr(scan_cache, "scan", fake_scan)
    _, client = make_client(tmp_path, data)
    page = get_page(client, "?sort=bytes&order=desc&per_page=200&page=3")
    assert "Page <b>3</b> of 125" in page and "rows 401–600 of 25,000" in page
    assert len(table_rows(page)) == 200
    cats = get_page(client, "?label=cat&page=250")
    assert "Page <b>250</b> of 250" in cats and "12,500" in cats
    assert table_rows(cats)[-1] == "cat.12499.jpg"
    assert len(calls) == 1  # one scan, every later request used the cache
