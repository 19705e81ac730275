"""``make run``: the whole lab on this machine (redis-server if none answers, one worker, web).

Ctrl-C stops what this command started and nothing else: a redis-server that was already
running is left alone, and each part runs in its own process group so the terminal's
Ctrl-C reaches only this launcher, which then stops them in order (the web server, the
worker, which ends a run in progress at the next batch and keeps its best weights, and
the redis-server it started).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from core.settings import ROOT, load_settings
from launcher import processes

log = logging.getLogger("lab")

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class LaunchError(RuntimeError):
    """Something a person must fix before the lab can start; the message says what."""


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # A password-protected server answers -NOAUTH: it is there, Celery will authenticate.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def _wait_for_stop() -> str:
    """Block until SIGINT or SIGTERM; returns the signal's name."""
    received: list[str] = []

    def handler(signum, _frame):
        received.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not received:
        time.sleep(0.3)
        died = _check_parts()
        if died:
            return died
    return received[0]


_parts: list[processes.Service] = []


def _check_parts() -> str | None:
    for part in _parts:
        if not part.alive():
            log.error("%s stopped unexpectedly (exit code %s); its log %s ends with:\n%s",
                      part.name, part.popen.returncode, part.log_path,
                      part.log_text()[-2000:])
            return f"{part.name} exited"
    return None


def run() -> int:
    settings = load_settings()
    host = os.environ.get("LAB_HOST", "127.0.0.1")
    port = int(os.environ.get("LAB_PORT", "5000"))
    state_dir = Path(os.environ.get("LAB_STATE_DIR") or "lab-data")
    state_dir = state_dir if state_dir.is_absolute() else ROOT / state_dir
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    if _port_taken(host, port):
        raise LaunchError(f"port {port} is taken (another lab, or another program); start "
                          f"this one on another port: LAB_PORT={port + 1} make run")
    redis = urlparse(settings.redis_url)
    redis_host, redis_port = redis.hostname or "127.0.0.1", redis.port or 6379
    if not _redis_answers(redis_host, redis_port):
        if redis_host not in LOCAL_HOSTS:
            raise LaunchError(f"no Redis answers at {redis_host}:{redis_port} (REDIS_URL); "
                              f"start it there, or unset REDIS_URL to use a local one")
        log.info("starting redis-server on 127.0.0.1:%d (data in %s)", redis_port,
                 state_dir / f"redis-{redis_port}")
        _parts.append(processes.start_redis(redis_port, state_dir / f"redis-{redis_port}"))
    else:
        log.info("using the Redis that already answers at %s:%d", redis_host, redis_port)

    if not settings.data_dir.is_dir():
        log.warning("no dataset at %s: the Dataset tab explains how to get one "
                    "(make data, or set LAB_DATA_DIR)", settings.data_dir)
    # One worker, named after the port so two labs on one machine never share a name.
    log.info("starting a training worker (log: %s)", logs / "worker.log")
    _parts.append(processes.start_worker({}, logs / "worker.log", name=f"lab-{port}"))
    log.info("starting the web server (log: %s)", logs / "web.log")
    _parts.append(processes.start_web({"LAB_HOST": host}, port, logs / "web.log", host=host))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("Kitten-and-Puppy Lab is up: http://%s:%d/  (Ctrl-C stops it)", shown, port)

    reason = _wait_for_stop()
    log.info("stopping (%s)…", reason)
    return 0 if reason in ("SIGINT", "SIGTERM") else 1


def stop_all() -> None:
    """Stop the parts this launcher started, newest first; a run in progress is saved."""
    for part in reversed(_parts):
        part.stop(timeout=120 if part.name.startswith("celery") else 20)
        log.info("stopped %s", part.name)
    _parts.clear()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    code = 1
    try:
        code = run()
    except (LaunchError, processes.StackError) as exc:
        log.error("%s", exc)
        code = 2
    finally:
        # Ctrl-C again while stopping should not leave orphans: ignore it until done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
    sys.exit(code)


if __name__ == "__main__":
    main()
