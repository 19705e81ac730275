"""``make run``: the whole lab on this machine (redis-server if none answers, the training
workers, the web server).

A part that dies is logged and started again (after 1 s, then 2 s, 4 s … up to 30 s; back
to 1 s once it has stayed up a minute), alone: the others, and a run in training, are left
as they are. A part that dies 5 times in 2 minutes is reported and left stopped; the others
keep running. The restarted redis-server reads its append-only file back, so queued tasks
survive it; the restarted worker has the same name, so it fails its own lost run at once.

Ctrl-C (or SIGTERM) stops what this command started and nothing else: a redis-server that
was already running is left alone, and each part runs in its own process group so the
terminal's Ctrl-C reaches only this launcher, which then stops them in order (the web
server, the worker, which ends a run in progress at the next batch and keeps its best
weights, and the redis-server it started).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from core.settings import given_passcode, load_settings
from launcher import processes
from launcher.workers import plan_workers
from ml.device import describe_device, device_text

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


class Stopped(Exception):  # noqa: N818 - not an error: Ctrl-C while the lab was starting
    """SIGINT or SIGTERM arrived while the parts were starting."""


_received: list[str] = []
_starting = True
supervisor = processes.Supervisor()


def _on_signal(signum, _frame) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    if _starting:  # a part may take a minute to be ready: stop now, not after it
        raise Stopped(name)


def _supervise() -> int:
    """Keep the parts running until SIGINT or SIGTERM (0), or until every part is given
    up on (1)."""
    global _starting
    _starting = False
    while not _received:
        time.sleep(0.3)
        supervisor.poll()
        if supervisor.all_given_up():
            log.error("every part of the lab has stopped for good; stopping")
            return 1
    log.info("stopping (%s)…", _received[0])
    return 0


PASSCODE_WORDS = ("tabby", "beagle", "siamese", "poodle", "calico", "collie", "persian",
                  "husky", "sphynx", "corgi", "ragdoll", "boxer", "bengal", "spaniel")


def instructor_passcode(state_dir: Path, given: str | None) -> tuple[str, bool]:
    """The lab's passcode and whether this launcher made it up.

    ``given`` (``LAB_PASSCODE``) wins, even empty (an open lab, on purpose). Otherwise, like
    a notebook server's token, one is made up once and kept in the state folder, so a
    restart keeps it and the instructor's browser stays unlocked.
    """
    if given is not None:
        return given, False
    path = state_dir / "passcode"
    try:
        kept = path.read_text().strip()
        if kept:
            return kept, True
    except OSError:
        pass
    passcode = f"{secrets.choice(PASSCODE_WORDS)}-{secrets.randbelow(10**6):06d}"
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(passcode + "\n")
    return passcode, True


def run() -> int:
    first = load_settings()
    host, port, state_dir = first.host, first.port, first.state_dir
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    passcode, made_up = instructor_passcode(state_dir, given_passcode())
    os.environ["LAB_PASSCODE"] = passcode  # the parts inherit it
    if made_up:
        # A made-up passcode guards the instructor's controls; the class launches freely.
        os.environ.setdefault("LAB_LOCK_LAUNCH", "0")
    settings = load_settings()  # again: with the passcode and the launch lock it decided
    supervisor.backoff_s = settings.restart_backoff_s

    if _port_taken(host, port):
        raise LaunchError(f"port {port} is taken (another lab, or another program); start "
                          f"this one on another port: LAB_PORT={port + 1} make run")
    redis = urlparse(settings.redis_url)
    redis_host, redis_port = redis.hostname or "127.0.0.1", redis.port or 6379
    if not _redis_answers(redis_host, redis_port):
        if redis_host not in LOCAL_HOSTS:
            raise LaunchError(f"no Redis answers at {redis_host}:{redis_port} (REDIS_URL); "
                              f"start it there, or unset REDIS_URL to use a local one")
        redis_dir = state_dir / f"redis-{redis_port}"
        log.info("starting redis-server on 127.0.0.1:%d (data in %s)", redis_port, redis_dir)
        supervisor.start("redis-server", lambda: processes.spawn_redis(redis_port, redis_dir),
                         ready_timeout=20)
    else:
        log.info("using the Redis that already answers at %s:%d", redis_host, redis_port)

    if not settings.data_dir.is_dir():
        log.warning("no dataset at %s: the Dataset tab explains how to get one "
                    "(make data, or set LAB_DATA_DIR)", settings.data_dir)
    # Workers named after the port, so two labs on one machine never share a name.
    device = describe_device()
    plans = plan_workers(port=port, gpus=len(device.get("gpus", [])),
                         cores=device.get("cores") or os.cpu_count() or 1,
                         workers=settings.workers, runs_per_gpu=settings.runs_per_gpu,
                         train_threads=settings.train_threads)
    log.info("starting %s on %s (log%s: %s)",
             "a training worker" if len(plans) == 1 else f"{len(plans)} training workers",
             device_text(device), "s" * (len(plans) > 1),
             ", ".join(str(logs / p.log_name) for p in plans))
    for plan in plans:
        supervisor.start(plan.label,
                         lambda plan=plan: processes.spawn_worker(plan.env, logs / plan.log_name,
                                                                  name=plan.name),
                         ready_timeout=90, stop_timeout=120)
    log.info("starting the web server (log: %s)", logs / "web.log")
    supervisor.start("the web server",
                     lambda: processes.spawn_web({"LAB_HOST": host}, port, logs / "web.log",
                                                 host=host),
                     ready_timeout=60)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("Kitten-and-Puppy Lab is up: http://%s:%d/  (Ctrl-C stops it)", shown, port)
    if passcode:
        log.info("instructor passcode: %s%s", passcode,
                 f"  (kept in {state_dir / 'passcode'}; LAB_PASSCODE= starts an open lab)"
                 if made_up else "")
    else:
        log.info("no passcode (LAB_PASSCODE is empty): anyone may cancel any run")
    return _supervise()


def stop_all() -> None:
    """Stop the parts this launcher started, newest first; a run in progress is saved."""
    supervisor.stop_all()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    code = 1
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        code = run()
    except Stopped as stopped:
        log.info("stopping (%s) before the lab was up…", stopped)
        code = 0
    except (LaunchError, processes.StackError) as exc:
        log.error("%s", exc)
        code = 2
    finally:
        # Ctrl-C again while stopping should not leave orphans: ignore it until done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
    sys.exit(code)


if __name__ == "__main__":
    main()
