"""Cross-site request checks, the pages' request token, safe redirects and proxies.

A browser's state-changing request (anything but GET/HEAD/OPTIONS) must come from this
lab's own pages: ``Sec-Fetch-Site`` same-origin (or none: typed by the user), ``Origin`` this
lab's origin or one of ``LAB_ALLOWED_ORIGINS``, and the page's token (form field
``csrf_token`` or header ``X-CSRF-Token``). Scripts and ``curl`` send neither header and
carry no ambient cookie authority worth stealing, so they pass without a token. Socket.IO
connections get the same origin rule.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request, session
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboard.helpers import lab_settings

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_FIELD = "csrf_token"
TOKEN_HEADER = "X-CSRF-Token"
SAME_SITE_OK = frozenset({"same-origin", "none"})
# What browsers strip or ignore while parsing a URL: leading/trailing C0 controls and space,
# and tabs and newlines anywhere.
_STRIPPED = "".join(chr(c) for c in range(0x21))
_IGNORED = re.compile(r"[\t\n\r]")


class CrossSite(Exception):
    """A browser request that did not come from this lab's pages; the message says why."""


def csrf_token() -> str:
    """This browser session's request token (made on first use)."""
    token = session.get(TOKEN_FIELD)
    if not isinstance(token, str):
        token = session[TOKEN_FIELD] = secrets.token_urlsafe(24)
    return token


def own_origin(environ: dict[str, Any]) -> str:
    """``scheme://host[:port]`` as the browser reached this process (after the trusted
    proxies' X-Forwarded-Proto/Host, applied by ProxyFix)."""
    return f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"


def origin_allowed(origin: str | None, environ: dict[str, Any]) -> bool:
    """Whether a page on ``origin`` may talk to the lab (HTTP and Socket.IO alike)."""
    if origin is None:
        return True  # not a browser page (a script); nothing cross-site to fear
    origin = origin.rstrip("/")
    return origin == own_origin(environ) or origin in lab_settings().allowed_origins


def check_request() -> None:
    """Raise CrossSite for a state-changing browser request from elsewhere."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is None and origin is None:
        return  # a script, curl: no browser, so no page of another site behind it
    if origin is not None:
        if not origin_allowed(origin, request.environ):
            raise CrossSite(f"this request came from a page on {origin[:80]}, not from this "
                            f"lab's own pages, so it was refused")
        if origin.rstrip("/") != own_origin(request.environ):
            return  # a page the lab was told to trust (LAB_ALLOWED_ORIGINS)
    if site is not None and site not in SAME_SITE_OK:
        raise CrossSite("this request came from another site's page, so it was refused")
    offered = request.headers.get(TOKEN_HEADER) or request.form.get(TOKEN_FIELD) or ""
    expected = session.get(TOKEN_FIELD)
    if not isinstance(expected, str) or not hmac.compare_digest(offered.encode(),
                                                                expected.encode()):
        raise CrossSite("this page is out of date (its security token is missing or old); "
                        "reload the page and try again")


def safe_next(target: str | None, default: str) -> str:
    """A redirect target only when it is a path on this site, read the way browsers read
    it (``//host``, ``/\\host``, tabs and newlines inside, all mean another host)."""
    if not target:
        return default
    cleaned = _IGNORED.sub("", target.strip(_STRIPPED)).replace("\\", "/")
    if not cleaned.startswith("/") or cleaned.startswith("//") or any(
            ord(ch) < 0x20 for ch in cleaned):
        return default
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return default
    return cleaned


def init_app(app: Flask) -> None:
    """Trusted proxies, the request check and the token for templates."""
    proxies = app.config["LAB_SETTINGS"].trusted_proxies
    if proxies:
        # Outermost, so the Socket.IO middleware inside it sees the fixed scheme and host too.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,
                                x_host=proxies, x_port=proxies)
    app.before_request(check_request)
    app.context_processor(lambda: {"csrf_token": csrf_token})
