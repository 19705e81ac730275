"""Starting the lab's real parts as processes: redis-server, Celery workers, the web server.

Used by the tests, the benchmarks and ``make run``. Each part runs in its own process group
so that stopping it (or killing it, as a test of worker loss does) takes its children too.
``spawn_*`` start a part and return at once; ``start_*`` also wait until it is ready.
``Supervisor`` keeps started parts running (``make run``): it restarts one that dies.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from core.settings import ROOT

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A part of the lab did not start; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Service:
    """One started process with its log file, and how to tell that it is ready."""

    def __init__(self, name: str, popen: subprocess.Popen, log_path: Path,
                 ready: Callable[[], bool] | None = None):
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self._ready = ready

    def ready(self) -> bool:
        """Whether it answers (a started process may still be loading)."""
        return self.alive() and (self._ready is None or self._ready())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crash or the OOM killer looks like."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process, then SIGKILL its group if anything is left after ``timeout``.

        Only the leader gets SIGTERM: a Celery worker then shuts down warmly and lets its
        pool process end the run properly.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
        try:  # children that outlived their parent (a pool process) go too
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)


def _spawn(name: str, cmd: list[str], log_path: Path, env: Mapping[str, str] | None,
           ready: Callable[[], bool], cwd: Path = ROOT) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    popen = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return Service(name, popen, log_path, ready)


def _wait(service: Service, timeout: float) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise StackError(f"{service.name} exited with code {service.popen.returncode}; "
                             f"its log ({service.log_path}):\n{service.log_text()[-3000:]}")
        if service.ready():
            return service
        time.sleep(0.1)
    service.stop()
    raise StackError(f"{service.name} did not become ready in {timeout:.0f} s; "
                     f"its log ({service.log_path}):\n{service.log_text()[-3000:]}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if not found:
        raise StackError("redis-server is not installed; `make test` and `make run` install "
                         "it (apt-get install redis-server)")
    return found


def spawn_redis(port: int, workdir: Path, *, save: bool = True) -> Service:
    """A redis-server on 127.0.0.1:port keeping its files in workdir. With ``save`` it logs
    every write (``appendonly``), so one started again on the same folder has its data."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
           "--dir", str(workdir), "--daemonize", "no", "--protected-mode", "yes",
           "--appendonly", "yes" if save else "no"]
    if not save:
        cmd += ["--save", ""]
    return _spawn("redis-server", cmd, workdir / "redis.log", None, lambda: _redis_pings(port))


def start_redis(port: int, workdir: Path, *, save: bool = True, timeout: float = 20
                ) -> Service:
    """``spawn_redis``, once it answers PING."""
    return _wait(spawn_redis(port, workdir, save=save), timeout)


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def spawn_worker(env: Mapping[str, str], log_path: Path, *, name: str = "lab",
                 python: str = sys.executable) -> Service:
    """``celery -A worker.celery_app worker --concurrency 1``, ready at its "ready" line."""
    cmd = [python, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
           "--loglevel", "INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    start = log_path.stat().st_size if log_path.exists() else 0

    def ready() -> bool:
        try:
            with open(log_path, "rb") as f:
                f.seek(start)
                return b" ready." in f.read()
        except OSError:
            return False

    return _spawn(f"celery worker {name}", cmd, log_path, env, ready)


def start_worker(env: Mapping[str, str], log_path: Path, *, name: str = "lab",
                 timeout: float = 90, python: str = sys.executable) -> Service:
    """``spawn_worker``, once it has logged that it is ready."""
    return _wait(spawn_worker(env, log_path, name=name, python=python), timeout)


def spawn_web(env: Mapping[str, str], port: int, log_path: Path, *, host: str = "127.0.0.1",
              python: str = sys.executable) -> Service:
    """``python -m dashboard`` on host:port, ready when ``/api/runs`` answers."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{probe}:{port}/api/runs", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    return _spawn("web server", [python, "-m", "dashboard", "--host", host, "--port", str(port)],
                  log_path, {**env, "LAB_PORT": str(port)}, ready)


def start_web(env: Mapping[str, str], port: int, log_path: Path, *, host: str = "127.0.0.1",
              timeout: float = 60, python: str = sys.executable) -> Service:
    """``spawn_web``, once ``/api/runs`` answers."""
    return _wait(spawn_web(env, port, log_path, host=host, python=python), timeout)


# -- keeping parts running (make run) --------------------------------------------------------


def _shown(path: Path) -> str:
    """A log's path as a person would type it: relative to where they started the lab."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _tail_line(text: str, lines: int = 3, width: int = 160) -> str:
    """The last few lines of a log, each cut to ``width`` characters, on one line."""
    last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    cut = [line if len(line) <= width else line[:width - 1] + "…" for line in last]
    return " | ".join(cut) or "(nothing)"


class Part:
    """One supervised part: its current process, how to start another, and its record."""

    def __init__(self, label: str, spawn: Callable[[], Service], *, ready_timeout: float,
                 stop_timeout: float):
        self.label = label
        self.spawn = spawn
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.service: Service | None = None
        self.state = "starting"  # starting, up, waiting (to restart), given up
        self.since = 0.0  # when it entered that state
        self.restart_at = 0.0
        self.deaths: deque[float] = deque()
        self.delay = 0.0
        self.died_at: float | None = None


class Supervisor:
    """Keeps the lab's parts running: a part that dies is logged and started again after a
    delay (``backoff_s``, doubled each time up to ``backoff_max_s``, back to ``backoff_s``
    once it has stayed up ``stable_s``); one that dies ``max_deaths`` times in ``window_s``
    is reported and left stopped, and the others keep running.

    Nothing here blocks: ``poll()`` checks and advances every part, the caller calls it in
    its loop (so a Ctrl-C is answered at once, even while a part is starting again).
    """

    def __init__(self, *, backoff_s: float = 1, backoff_max_s: float = 30,
                 stable_s: float = 60, max_deaths: int = 5, window_s: float = 120,
                 clock: Callable[[], float] = time.monotonic):
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        self.max_deaths = max_deaths
        self.window_s = window_s
        self.clock = clock
        self.parts: list[Part] = []

    def start(self, label: str, spawn: Callable[[], Service], *, ready_timeout: float,
              stop_timeout: float = 20) -> Part:
        """Start a part and wait until it is ready; raises ``StackError`` if it is not (the
        first start is not retried: what fails there is for a person to fix)."""
        part = Part(label, spawn, ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        part.delay = self.backoff_s
        self.parts.append(part)  # before it is ready: a Ctrl-C meanwhile stops it too
        part.service = spawn()
        _wait(part.service, ready_timeout)
        part.state, part.since = "up", self.clock()
        log.info("started %s (pid %d)", label, part.service.pid)
        return part

    def poll(self) -> None:
        for part in self.parts:
            self._step(part, self.clock())

    def all_given_up(self) -> bool:
        return bool(self.parts) and all(p.state == "given up" for p in self.parts)

    def _step(self, part: Part, now: float) -> None:
        service = part.service
        if part.state == "up":
            if not service.alive():
                self._died(part, now, f"stopped unexpectedly (exit code "
                                      f"{service.popen.returncode})")
            elif part.delay != self.backoff_s and now - part.since >= self.stable_s:
                part.delay = self.backoff_s
        elif part.state == "starting":
            if not service.alive():
                self._died(part, now, f"stopped while starting again (exit code "
                                      f"{service.popen.returncode})")
            elif service.ready():
                part.state, part.since = "up", now
                down = f", {now - part.died_at:.1f} s after it stopped" if part.died_at else ""
                log.info("restarted %s (pid %d%s)", part.label, service.pid, down)
            elif now - part.since > part.ready_timeout:
                service.stop(timeout=part.stop_timeout)
                self._died(part, now, f"did not become ready in {part.ready_timeout:.0f} s")
        elif part.state == "waiting" and now >= part.restart_at:
            try:
                part.service = part.spawn()
            except (OSError, StackError) as exc:
                self._died(part, now, f"could not be started again ({exc})", cleanup=False)
                return
            part.state, part.since = "starting", now
            log.info("starting %s again (pid %d)", part.label, part.service.pid)

    def _died(self, part: Part, now: float, what: str, *, cleanup: bool = True) -> None:
        service = part.service
        if cleanup:  # what it left behind (a Celery pool process) goes with it
            try:
                os.killpg(service.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        part.died_at = now
        part.deaths.append(now)
        while part.deaths and now - part.deaths[0] > self.window_s:
            part.deaths.popleft()
        tail = _tail_line(service.log_text()[-4000:])
        if len(part.deaths) >= self.max_deaths:
            part.state, part.since = "given up", now
            log.error("%s %s; its log %s ends: %s", part.label, what,
                      _shown(service.log_path), tail)
            log.error("%s keeps stopping (%d times in %g min); see %s; the other parts keep "
                      "running", part.label, len(part.deaths), self.window_s / 60,
                      _shown(service.log_path))
            return
        part.state, part.since, part.restart_at = "waiting", now, now + part.delay
        log.error("%s %s; restarting it in %g s; its log %s ends: %s", part.label, what,
                  part.delay, _shown(service.log_path), tail)
        part.delay = min(part.delay * 2, self.backoff_max_s)

    def stop_all(self) -> None:
        """Stop every part, in the reverse of their start order (the web server, the worker,
        redis-server); a part that is starting again is stopped too."""
        for part in reversed(self.parts):
            if part.service is not None:
                part.service.stop(timeout=part.stop_timeout)
                if part.state != "given up":
                    log.info("stopped %s", part.label)
        self.parts.clear()
