"""Getting the Dogs vs. Cats photos: Kaggle's competition files or Microsoft's PetImages zip.

Standard library only. The archive is streamed to a ``.part`` file beside the target with a
progress callback, checked (size, and sha256 when given), then unpacked safely into a
temporary folder that is moved into place only when complete, so a failure never leaves a
half-filled dataset folder.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ml.errors import DownloadError
from ml.options import MlOptions

log = logging.getLogger(__name__)

PETIMAGES_URL = ("https://download.microsoft.com/download/3/E/1/"
                 "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip")
PETIMAGES_SIZE = 824_887_076  # bytes, as served by Microsoft
KAGGLE_COMPETITION = "dogs-vs-cats"
CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]


def kaggle_credentials(options: MlOptions | None = None) -> tuple[str, str] | None:
    """(username, key): the account in ``options`` (the defaults when None; the lab's
    KAGGLE_USERNAME and KAGGLE_KEY) when it has both, else kaggle.json's in its
    ``kaggle_config_dir`` (KAGGLE_CONFIG_DIR, by default ~/.kaggle), else None."""
    options = options or MlOptions()
    if options.kaggle_username and options.kaggle_key:
        return options.kaggle_username, options.kaggle_key
    path = Path(options.kaggle_config_dir or Path.home() / ".kaggle") / "kaggle.json"
    try:
        data = json.loads(path.read_text())
        if data.get("username") and data.get("key"):
            return data["username"], data["key"]
    except (OSError, ValueError):
        pass
    return None


def _stream(url: str, dest: Path, *, headers: dict[str, str], expected_size: int | None,
            on_progress: Progress | None, should_stop: Callable[[], bool] | None,
            timeout: float, kaggle: bool) -> str:
    """Download url to dest; returns the sha256. Raises DownloadError with a sentence."""
    host = urlparse(url).hostname or url
    request = urllib.request.Request(url, headers={"User-Agent": "kitten-and-puppy-lab"})
    for name, value in headers.items():
        # Not sent on to a redirect's host (Kaggle redirects to signed storage URLs).
        request.add_unredirected_header(name, value)
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_size
            while True:
                if should_stop is not None and should_stop():
                    raise DownloadError("the download was cancelled")
                # read1: whatever has arrived (up to CHUNK), so progress moves on slow links.
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
    except urllib.error.HTTPError as exc:
        if kaggle and exc.code in (401, 403):
            raise DownloadError(
                f"{host} refused the Kaggle credentials (HTTP {exc.code}); check "
                f"KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json, and accept the "
                f"competition's rules on kaggle.com") from exc
        raise DownloadError(f"{host} answered HTTP {exc.code} for {url}") from exc
    except http.client.HTTPException as exc:  # e.g. a chunked body cut off
        raise DownloadError(f"the download from {host} was cut off ({type(exc).__name__}); "
                            f"try again") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DownloadError(
            f"could not reach {host} (is this machine offline?): copy the photos into "
            f"LAB_DATA_DIR by hand, or set Kaggle credentials") from exc
    except OSError as exc:  # local: a full disk, a read-only folder
        raise DownloadError(f"could not write the download to {dest.parent}: "
                            f"{exc.strerror or exc}") from exc
    if total is not None and done != total:
        raise DownloadError(f"the download from {host} stopped early: got {done:,} of "
                            f"{total:,} bytes; try again")
    if expected_size is not None and done != expected_size:
        raise DownloadError(f"the file from {host} has {done:,} bytes, not the expected "
                            f"{expected_size:,}; it may have changed upstream")
    return digest.hexdigest()


def _safe_extract(archive: zipfile.ZipFile, target: Path) -> int:
    """Extract regular files only, refusing absolute and ``..`` paths (zip-slip)."""
    root = target.resolve()
    count = 0
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name.split("/")[0]:
            raise DownloadError(f"the archive holds an unsafe path {name!r}; refusing to unpack")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            continue  # a symbolic link: never created
        dest = (target / name).resolve()
        if os.path.commonpath([root, dest]) != str(root):
            raise DownloadError(f"the archive holds an unsafe path {name!r}; refusing to unpack")
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        count += 1
    return count


def _unpack(zip_path: Path, target: Path) -> None:
    """Unpack into target; nested zips (Kaggle's train.zip) are unpacked in place too."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            _safe_extract(archive, target)
        for _depth in range(3):
            inner_zips = list(target.rglob("*.zip"))
            if not inner_zips:
                break
            for inner in inner_zips:
                if not inner.name.lower().startswith(("test", "sample")):
                    with zipfile.ZipFile(inner) as archive:
                        _safe_extract(archive, inner.parent)
                # Unpacked, or Kaggle's unlabelled test set, of no use for training.
                inner.unlink()
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"the downloaded file is not a zip archive ({exc})") from exc


def download_dataset(dest: str | os.PathLike[str], *, source: str = "auto",
                     url: str | None = None, sha256: str | None = None,
                     expected_size: int | None = None, force: bool = False,
                     on_progress: Progress | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     timeout: float = 30, options: MlOptions | None = None
                     ) -> dict[str, Any]:
    """Download and unpack the dataset into ``dest``; returns the scan summary.

    ``source``: ``kaggle`` (needs credentials), ``petimages``, or ``auto`` (Kaggle when
    credentials exist). ``url`` overrides where the archive comes from. ``options`` (the
    defaults when None): the Kaggle account and API address.
    """
    from ml.data import scan

    options = options or MlOptions()

    target = Path(dest).expanduser()
    if source not in ("auto", "kaggle", "petimages"):
        raise DownloadError(f"unknown source {source!r}; choose auto, kaggle or petimages")
    if target.exists() and not target.is_dir():
        raise DownloadError(f"{target} is a file, not a folder; choose another LAB_DATA_DIR")
    if target.is_dir() and any(target.iterdir()) and not force:
        try:
            has_photos = len(scan(target).images) > 0
        except Exception:
            has_photos = False
        what = "photos" if has_photos else "files"
        raise DownloadError(f"{target} already holds {what}; not overwriting them "
                            f"(use --force to replace the folder)")
    creds = kaggle_credentials(options)
    if source == "kaggle" and creds is None:
        raise DownloadError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or "
                            "put kaggle.json in ~/.kaggle")
    use_kaggle = source == "kaggle" or (source == "auto" and creds is not None and url is None)
    headers: dict[str, str] = {}
    if use_kaggle:
        base = options.kaggle_api
        url = url or f"{base.rstrip('/')}/competitions/data/download-all/{KAGGLE_COMPETITION}"
        token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif url is None:
        url = PETIMAGES_URL
        expected_size = expected_size or PETIMAGES_SIZE

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / f".{target.name}.download.part"
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpack-", dir=target.parent))
    try:
        log.debug("downloading %s", url)
        got = _stream(url, part, headers=headers, expected_size=expected_size,
                      on_progress=on_progress, should_stop=should_stop, timeout=timeout,
                      kaggle=use_kaggle)
        if sha256 and got.lower() != sha256.lower():
            raise DownloadError(f"the download's sha256 is {got}, not the expected {sha256}")
        _unpack(part, work)
        if target.exists():
            # Keep the old folder until the new one is in place: a failed move loses nothing.
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    result = scan(target)
    summary = result.summary()
    log.debug("unpacked %s photos into %s", summary.get("total"), target)
    return {**summary, "root": str(target), "source": "kaggle" if use_kaggle else "url"}
