"""Who is who and who may do what: each browser's identity and name, the passcode of
the instructor, run owners, and the caps on runs.

Each browser is one person: an id in its signed session, and the name it gives ("Your
name, shown on your runs"; API callers send ``X-Lab-Name``). With ``LAB_PASSCODE`` set, the
passcode guards the instructor's actions (cancelling anyone's run, moving a run to the
front, pausing the queue, locking launching, archiving, the dataset download) and, while
launching is locked (``LAB_LOCK_LAUNCH``, or the instructor's switch), launching; watching runs,
browsing the dataset and predicting never need it. A browser proves it once on
``/unlock``; API callers send ``X-Lab-Passcode``. Without a passcode the lab is open.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import unicodedata
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from core.settings import Settings
from core.store import ACTIVE
from dashboard.helpers import lab_settings, run_service
from dashboard.security import safe_next

log = logging.getLogger(__name__)

bp = Blueprint("access", __name__)

HEADER = "X-Lab-Passcode"
NAME_HEADER = "X-Lab-Name"
MAX_NAME = 40
# Wrong passcodes allowed in WINDOW_S before further tries get a 429: few per browser (one
# student guessing locks out only that browser), many per address (a whole class may sit
# behind one school router, and a script without cookies is a new browser every time).
MAX_WRONG = 8
MAX_WRONG_PER_ADDRESS = 100
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
    proxies appended to X-Forwarded-For (ProxyFix), never one the caller wrote itself."""
    return (request.remote_addr or "unknown")[:45]


# Where the session keeps the browser's id: named "client" since the first labs, and kept
# so, since renaming it would make every browser a stranger to the runs it launched.
OWNER_KEY = "client"


def owner_id(*, create: bool = True) -> str | None:
    """This browser's id (its session's), the owner of the runs it launches.

    Without ``create``, None for a browser that has none yet (it launched nothing).
    """
    owner = session.get(OWNER_KEY)
    if not isinstance(owner, str):
        if not create:
            return None
        owner = secrets.token_hex(8)
        session[OWNER_KEY] = owner
    return owner


# Marks, in a run's ``launched_from``, a launch that came without the session cookie: a
# script that keeps no cookies is a new browser at every request, so such launches from one
# address are counted together, as one owner's.
NO_COOKIE = "~"


def sent_session_cookie() -> bool:
    """Whether the request carried the lab's session cookie (a browser, or a script that
    keeps its cookies)."""
    return current_app.config["SESSION_COOKIE_NAME"] in request.cookies


def launched_from() -> str:
    """``<address>/<owner>``, stored with a run (the per-address caps count it);
    ``<address>/~<owner>`` for a launch without the session cookie."""
    marker = "" if sent_session_cookie() else NO_COOKIE
    return f"{address()}/{marker}{owner_id()}"


def clean_name(raw: Any) -> str | None:
    """A display name as plain text: control and format characters dropped, spaces
    collapsed, at most MAX_NAME characters; None when nothing is left. (Pages escape it
    too: it is never markup.)"""
    if not isinstance(raw, str):
        return None
    kept = "".join(ch if not unicodedata.category(ch).startswith("C") else " " for ch in raw)
    name = " ".join(kept.split())[:MAX_NAME].strip()
    return name or None


def display_name() -> str | None:
    """The name this browser gave, if any; an API caller's X-Lab-Name header sets it."""
    offered = request.headers.get(NAME_HEADER)
    if offered is not None and clean_name(offered):
        session["name"] = clean_name(offered)
    name = session.get("name")
    return name if isinstance(name, str) else None


def set_display_name(raw: Any) -> str | None:
    """Remember the name typed into a page for this browser (empty: forget it)."""
    name = clean_name(raw)
    if name:
        session["name"] = name
    else:
        session.pop("name", None)
    return name


def _recent(key: str, now: float) -> deque[float]:
    tries = _wrong[key]
    while tries and now - tries[0] > WINDOW_S:
        tries.popleft()
    return tries


def _throttled() -> tuple[float, str]:
    """Seconds until this browser (or, after very many, this address) may try a passcode
    again, and which of the two it is (0 when it may now)."""
    now = time.monotonic()
    with _wrong_lock:
        for key, cap, who in ((f"browser:{owner_id()}", MAX_WRONG, "this browser"),
                              (f"address:{address()}", MAX_WRONG_PER_ADDRESS, "this address")):
            tries = _recent(key, now)
            if len(tries) >= cap:
                return WINDOW_S - (now - tries[0]), who
            if not tries:
                _wrong.pop(key, None)  # forget who has no recent wrong tries
    return 0.0, ""


def _check(offered: str) -> bool:
    """Compare a passcode in constant time, counting wrong tries per browser and address."""
    wait, who = _throttled()
    if wait:
        raise Denied(429, f"too many wrong passcodes from {who}; try again in "
                          f"{max(1, round(wait / 60))} min")
    if hmac.compare_digest(offered.encode(), (lab_settings().passcode or "").encode()):
        return True
    now = time.monotonic()
    with _wrong_lock:
        _wrong[f"browser:{owner_id()}"].append(now)
        _wrong[f"address:{address()}"].append(now)
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


def launch_locked() -> bool:
    """Whether launching needs the passcode now: the instructor's switch, whose default is
    LAB_LOCK_LAUNCH (a lab without a passcode never locks anyone out)."""
    return locked() and run_service().flags.launch_locked()


def require_launch_rights() -> None:
    """Launching needs the passcode only while launching is locked."""
    if launch_locked():
        require_passcode("launching a run")


def is_instructor() -> bool:
    """Whether this request holds the passcode of a lab that has one."""
    return locked() and unlocked()


def owns(run: dict[str, Any]) -> bool:
    return bool(run.get("owner")) and run.get("owner") == owner_id(create=False)


def may_cancel(run: dict[str, Any]) -> bool:
    """The one who launched a run may cancel it; anyone else needs the passcode (an open
    lab, made so on purpose with an empty LAB_PASSCODE, lets anyone)."""
    return owns(run) or unlocked()


def canceller(run: dict[str, Any]) -> str:
    """Who is cancelling, as the run will show it: "Ada", "its owner", "the instructor"."""
    if owns(run):
        return run.get("owner_name") or "its owner"
    return "the instructor" if locked() else (display_name() or "someone")


def check_caps(store) -> None:
    """Raise Denied(429) when a launch would pass a cap: this person's queued and running
    runs, the whole lab's queued runs, and (for a public lab) this address's. Whoever holds
    the passcode is exempt: the instructor's demo always gets in."""
    if is_instructor():
        return
    settings = lab_settings()
    cap = settings.max_runs_per_owner
    mine = store.count_runs(statuses=ACTIVE, owner=owner_id()) if cap > 0 else 0
    if cap > 0 and mine >= cap:
        raise Denied(429, f"you already have {mine} run{'s' * (mine != 1)} queued or "
                          f"training (at most {cap} each); wait for one to finish or cancel "
                          f"one")
    if cap > 0 and not sent_session_cookie():
        cookieless = store.count_active(launched_from_prefix=f"{address()}/{NO_COOKIE}")
        if cookieless >= cap:
            raise Denied(429, f"launches without the lab's cookie from this address already "
                              f"have {cookieless} run{'s' * (cookieless != 1)} queued or "
                              f"training, and count as one person's (at most {cap}); to launch "
                              f"as yourself, open a page first (GET /) and keep the cookie it "
                              f"sends (curl -c jar -b jar, or a requests.Session)")
    if settings.max_queued > 0 and store.count_runs(statuses=("queued",)) >= \
            settings.max_queued:
        raise Denied(429, f"the queue is full ({settings.max_queued} runs waiting); try "
                          f"again when some have started")
    per_address = settings.max_active_per_address
    if per_address > 0:
        active = store.count_active(launched_from_prefix=address() + "/")
        if active >= per_address:
            raise Denied(429, f"this address already has {active} run{'s' * (active != 1)} "
                              f"queued or training (at most {per_address} at a time); wait "
                              f"for one to finish or cancel one")


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    return safe_next(target, url_for("runs.index"))


@bp.app_context_processor
def _lock_state() -> dict[str, Any]:
    owner_id()  # a browser is someone from its first page on, not from its first launch
    try:
        flags = run_service().flags.state()
    except Exception as exc:  # the store is away: the page (an error page, maybe) still renders
        log.warning("could not read the lab's switches: %s", exc)
        flags = {"launch_locked": lab_settings().lock_launch, "queue_paused": False}
    return {"lab_locked": locked(), "lab_unlocked": _session_unlocked(),
            "lab_locks_launch": locked() and flags["launch_locked"],
            "lab_queue_paused": flags["queue_paused"]}


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
