"""The dataset's photos and their thumbnails; nothing outside the dataset folder is served."""

from __future__ import annotations

import functools
import io
import logging
import os

from flask import Blueprint, Response, abort, send_file

from dashboard.paths import data_root, resolve
from ml import formats

log = logging.getLogger(__name__)

bp = Blueprint("photos", __name__)

THUMB_PX = 160
THUMB_CACHE_SIZE = 512
_NO_PHOTO = "There is no such photo in the dataset folder."


def _photo_file(rel: str) -> str:
    root = data_root()
    path = resolve(root, rel) if root else None
    if path is None:
        abort(404, _NO_PHOTO)
    return path


@bp.get("/photos/<path:rel>")
def photo(rel: str) -> Response:
    """A photo of the dataset folder, as it is on disk."""
    path = _photo_file(rel)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:  # removed or unreadable since it was checked
        abort(404, _NO_PHOTO)
    fmt = formats.sniff(head)
    # Only photos scan accepts are shown inline; anything else (an HTML file?) is a download.
    mimetype = formats.mimetype(fmt) if fmt in formats.DECODABLE else None
    response = send_file(path, mimetype=mimetype or "application/octet-stream",
                         as_attachment=mimetype is None, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# Keyed by mtime and size too, so a rewritten file gets a new one; failures raise: not cached.
@functools.lru_cache(maxsize=THUMB_CACHE_SIZE)
def _thumbnail(path: str, mtime_ns: int, size: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a fraction
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            flat = Image.new("RGB", img.size, (255, 255, 255))
            flat.paste(img, mask=img.getchannel("A"))
            img = flat
        img = img.convert("RGB")
        img.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=82, optimize=True)
        return buf.getvalue()


@bp.get("/photos/thumb/<path:rel>")
def thumb(rel: str) -> Response:
    """A JPEG thumbnail of a dataset photo."""
    path = _photo_file(rel)
    try:
        st = os.stat(path)
    except OSError:
        abort(404, _NO_PHOTO)
    try:
        data = _thumbnail(path, st.st_mtime_ns, st.st_size)
    except Exception as exc:  # corrupt, truncated, not an image, decompression bomb...
        log.debug("no thumbnail for %s: %s", path, exc)
        abort(404, "This file cannot be decoded as a photo.")
    response = send_file(io.BytesIO(data), mimetype="image/jpeg", max_age=3600,
                         etag=f"{st.st_mtime_ns:x}-{st.st_size:x}", last_modified=st.st_mtime)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
