"""Who may launch and cancel runs: the lab passcode, run owners and a per-address queue cap.

With ``LAB_PASSCODE`` set, launching, cancelling someone else's run and downloading the
dataset need the passcode; watching runs, browsing the dataset and predicting never do. A
browser proves it once on ``/unlock`` (kept in its signed session cookie); API callers send
``X-Lab-Passcode``. Without a passcode the lab is open, as on a laptop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from core.settings import Settings
from dashboard.helpers import lab_settings
from dashboard.security import safe_next

log = logging.getLogger(__name__)

bp = Blueprint("access", __name__)

HEADER = "X-Lab-Passcode"
# Wrong passcodes allowed per address in WINDOW_S before further tries get a 429.
MAX_WRONG = 8
WINDOW_S = 300.0

_wrong: dict[str, deque[float]] = defaultdict(deque)
_wrong_lock = threading.Lock()


class Denied(Exception):
    """The request may not do this; ``status`` and a sentence for the person asking."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def secret_key(settings: Settings) -> bytes:
    """The key that signs session cookies: ``LAB_SECRET_KEY``, else one kept in the state
    folder, so a restart of the web process does not sign everyone out."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.state_dir) / "secret_key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(key.hex())
    except OSError as exc:  # a read-only state folder: sessions last until a restart
        log.warning("could not keep the session key in %s (%s)", path, exc)
    return key


def locked() -> bool:
    """Whether this lab has a passcode at all."""
    return bool(lab_settings().passcode)


def _fingerprint(passcode: str) -> str:
    # The session is signed but readable: it holds an HMAC keyed by the app's secret, which
    # no dictionary run can reproduce without that secret (a bare hash of the passcode
    # gave it away offline). Changing LAB_PASSCODE still signs everyone out.
    return hmac.new(current_app.secret_key, b"unlocked:" + passcode.encode(),
                    hashlib.sha256).hexdigest()


def address() -> str:
    """The caller's address: the peer's, or behind LAB_TRUSTED_PROXIES the entry those
    proxies appended to X-Forwarded-For (ProxyFix), never one the client wrote itself."""
    return (request.remote_addr or "unknown")[:45]


def client_id(*, create: bool = True) -> str | None:
    """``<address>/<browser id>``: who launched a run, stored with it (at most 64 chars).

    Without ``create``, None for a browser that has no id yet (it launched nothing).
    """
    browser = session.get("client")
    if not isinstance(browser, str):
        if not create:
            return None
        browser = secrets.token_hex(8)
        session["client"] = browser
    return f"{address()}/{browser}"


def _throttled() -> float:
    """Seconds until this address may try a passcode again (0 when it may now)."""
    now = time.monotonic()
    with _wrong_lock:
        tries = _wrong.get(address())
        while tries and now - tries[0] > WINDOW_S:
            tries.popleft()
        if not tries:
            _wrong.pop(address(), None)  # forget addresses with no recent wrong tries
            return 0.0
        return WINDOW_S - (now - tries[0]) if len(tries) >= MAX_WRONG else 0.0


def _check(offered: str) -> bool:
    """Compare a passcode in constant time, counting wrong tries per address."""
    wait = _throttled()
    if wait:
        raise Denied(429, f"too many wrong passcodes from this address; try again in "
                          f"{max(1, round(wait / 60))} min")
    if hmac.compare_digest(offered.encode(), (lab_settings().passcode or "").encode()):
        return True
    with _wrong_lock:
        _wrong[address()].append(time.monotonic())
    log.warning("wrong lab passcode from %s", address())
    return False


def _session_unlocked() -> bool:
    """Whether this browser has typed the current passcode (on /unlock or the Train form)."""
    passcode = lab_settings().passcode
    return bool(passcode) and session.get("unlocked") == _fingerprint(passcode)


def unlocked() -> bool:
    """Whether this request carries the passcode (always true for an open lab)."""
    passcode = lab_settings().passcode
    if not passcode or _session_unlocked():
        return True
    offered = request.headers.get(HEADER)
    if offered is None and request.form:
        offered = request.form.get("passcode") or None
    if offered is None:
        return False
    if not _check(offered):
        raise Denied(403, "that is not the lab passcode")
    if request.form.get("passcode"):  # typed into a page: remember it for this browser
        session["unlocked"] = _fingerprint(passcode)
    return True


NEEDS = ("this lab is locked: {what} needs the lab passcode (ask the person running it); "
         "unlock it at /unlock, or send the passcode in the X-Lab-Passcode header")


def require_passcode(what: str) -> None:
    """Raise Denied(401) unless the request carries the passcode."""
    if not unlocked():
        raise Denied(401, NEEDS.format(what=what))


def may_cancel(run: dict[str, Any]) -> bool:
    """The one who launched a run may cancel it; anyone else needs the passcode."""
    owner = run.get("client")
    if owner and owner == client_id(create=False):
        return True
    return unlocked()


def check_queue_cap(store) -> None:
    """Raise Denied(429) when this address already has its share of queued/running runs."""
    cap = lab_settings().max_active_per_client
    if cap <= 0:
        return
    active = store.count_active(client_prefix=address() + "/")
    if active >= cap:
        raise Denied(429, f"this address already has {active} run{'s' * (active != 1)} "
                          f"queued or training (at most {cap} at a time); wait for one to "
                          f"finish or cancel one")


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    return safe_next(target, url_for("runs.index"))


@bp.app_context_processor
def _lock_state() -> dict[str, Any]:
    return {"lab_locked": locked(), "lab_unlocked": _session_unlocked()}


@bp.get("/unlock")
def unlock_page():
    nxt = _safe_next(request.args.get("next"))
    if not locked():
        return redirect(nxt)
    return render_template("unlock.html", tab="", next=nxt, error=None)


@bp.post("/unlock")
def unlock():
    nxt = _safe_next(request.form.get("next"))
    if not locked():
        return redirect(nxt)
    offered = request.form.get("passcode", "")
    try:
        ok = bool(offered) and _check(offered)
    except Denied as exc:
        return render_template("unlock.html", tab="", next=nxt, error=exc.message), 200
    if not ok:
        # 200, not 403: the page is an answer, and browsers log failed loads as errors.
        return render_template("unlock.html", tab="", next=nxt,
                               error="That is not the lab passcode."), 200
    session["unlocked"] = _fingerprint(lab_settings().passcode or "")
    log.info("lab unlocked from %s", address())
    return redirect(nxt)


@bp.post("/lock")
def lock():
    session.pop("unlocked", None)
    return redirect(_safe_next(request.form.get("next")))
