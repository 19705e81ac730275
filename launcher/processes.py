"""Starting the lab's real parts as processes: redis-server, Celery workers, the web server.

Used by the tests, the benchmarks and ``make run``. Each part runs in its own process group
so that stopping it (or killing it, as a test of worker loss does) takes its children too.
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
    """One started process with its log file."""

    def __init__(self, name: str, popen: subprocess.Popen, log_path: Path):
        self.name = name
        self.popen = popen
        self.log_path = log_path

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
           cwd: Path = ROOT) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    popen = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return Service(name, popen, log_path)


def _wait(service: Service, ready: Callable[[], bool], timeout: float) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise StackError(f"{service.name} exited with code {service.popen.returncode}; "
                             f"its log ({service.log_path}):\n{service.log_text()[-3000:]}")
        if ready():
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


def start_redis(port: int, workdir: Path, *, save: bool = True, timeout: float = 20
                ) -> Service:
    """A redis-server on 127.0.0.1:port keeping its files in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
           "--dir", str(workdir), "--daemonize", "no", "--protected-mode", "yes",
           "--appendonly", "yes" if save else "no"]
    if not save:
        cmd += ["--save", ""]
    service = _spawn("redis-server", cmd, workdir / "redis.log", None)
    return _wait(service, lambda: _redis_pings(port), timeout)


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_worker(env: Mapping[str, str], log_path: Path, *, name: str = "lab",
                 timeout: float = 90, python: str = sys.executable) -> Service:
    """``celery -A worker.celery_app worker --concurrency 1``; waits for its "ready" line."""
    cmd = [python, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
           "--loglevel", "INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    start = log_path.stat().st_size if log_path.exists() else 0
    service = _spawn(f"celery worker {name}", cmd, log_path, env)

    def ready() -> bool:
        return " ready." in service.log_text()[start:]

    return _wait(service, ready, timeout)


def start_web(env: Mapping[str, str], port: int, log_path: Path, *, host: str = "127.0.0.1",
              timeout: float = 60, python: str = sys.executable) -> Service:
    """``python -m dashboard`` on host:port; waits until ``/api/runs`` answers."""
    service = _spawn("web server", [python, "-m", "dashboard", "--host", host, "--port",
                                    str(port)], log_path, {**env, "LAB_PORT": str(port)})
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{probe}:{port}/api/runs", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    return _wait(service, ready, timeout)
