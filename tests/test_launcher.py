"""``make run``'s launcher: everything started for you, Ctrl-C stops what it started only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from launcher import processes as stack
from tests.conftest import ROOT
from tests.lab_stack import TINY


def _start(tmp_path, name: str, dataset, **env) -> tuple[subprocess.Popen, dict]:
    full = {**os.environ, "LAB_STATE_DIR": str(tmp_path / name / "state"),
            "LAB_MODELS_DIR": str(tmp_path / name / "models"), "LAB_DATA_DIR": str(dataset),
            **env}
    full.pop("DATABASE_URL", None)
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-m", "launcher"], cwd=ROOT, env=full,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, full


def _wait_up(tmp_path, name: str, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (tmp_path / f"{name}.log").read_text()
        if "Lab is up" in text:
            return
        assert proc.poll() is None, text
        time.sleep(0.2)
    raise AssertionError((tmp_path / f"{name}.log").read_text())


def _processes_mentioning(*needles: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(n in line for n in needles)
            and "ps -eo" not in line]


def test_two_labs_run_side_by_side_and_ctrl_c_stops_only_their_parts(tmp_path, tiny_dataset):
    shared_redis_port = stack.free_port()
    existing = stack.start_redis(shared_redis_port, tmp_path / "existing-redis", save=False)
    port_a, port_b, redis_a = stack.free_port(), stack.free_port(), stack.free_port()
    lab_a, _ = _start(tmp_path, "a", tiny_dataset, LAB_PORT=str(port_a),
                      REDIS_URL=f"redis://127.0.0.1:{redis_a}/0")
    # Lab B uses a Redis that already runs (another database on it): it must leave it be.
    lab_b, _ = _start(tmp_path, "b", tiny_dataset, LAB_PORT=str(port_b),
                      REDIS_URL=f"redis://127.0.0.1:{shared_redis_port}/1")
    try:
        _wait_up(tmp_path, "a", lab_a)
        _wait_up(tmp_path, "b", lab_b)
        assert "starting redis-server" in (tmp_path / "a.log").read_text()
        assert "already answers" in (tmp_path / "b.log").read_text()
        url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        assert requests.get(url_a + "/runs", timeout=10).status_code == 200  # the dashboard

        run_id = requests.post(url_a + "/api/runs", json={**TINY, "epochs": 1},
                               timeout=10).json()["id"]
        deadline = time.monotonic() + 180
        while requests.get(f"{url_a}/api/runs/{run_id}", timeout=10).json()["status"] != \
                "succeeded":
            assert time.monotonic() < deadline, (tmp_path / "a" / "state" / "logs" /
                                                 "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        assert requests.get(url_b + "/api/runs", timeout=10).json()["runs"] == []
        workers_a = [w["name"] for w in requests.get(url_a + "/api/health").json()["workers"]]
        workers_b = [w["name"] for w in requests.get(url_b + "/api/health").json()["workers"]]
        assert workers_a == [f"lab-{port_a}@{os.uname().nodename}"]
        assert workers_b == [f"lab-{port_b}@{os.uname().nodename}"]
    finally:
        for proc in (lab_a, lab_b):
            proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        codes = [proc.wait(timeout=120) for proc in (lab_a, lab_b)]
    try:
        assert codes == [0, 0]
        left = _processes_mentioning(f"lab-{port_a}@", f"lab-{port_b}@", f"--port {port_a}",
                                     f"--port {port_b}", f"--port {redis_a}")
        assert left == []
        assert existing.alive() and stack.port_answers(shared_redis_port)
    finally:
        existing.stop()


def test_a_taken_port_is_a_clear_error(tmp_path, tiny_dataset):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc, _ = _start(tmp_path, "busy", tiny_dataset, LAB_PORT=str(port),
                         REDIS_URL=f"redis://127.0.0.1:{stack.free_port()}/0")
        assert proc.wait(timeout=60) == 2
    text = (tmp_path / "busy.log").read_text()
    assert f"port {port} is taken" in text and f"LAB_PORT={port + 1}" in text
    assert "Traceback" not in text
