"""``make run``'s launcher: everything started for you, Ctrl-C stops what it started only."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from launcher import processes as stack
from testkit.lab_stack import ENDLESS, TINY
from testkit.paths import ROOT

log = logging.getLogger(__name__)


def _start(tmp_path, name: str, dataset, **env) -> tuple[subprocess.Popen, dict]:
    full = {**os.environ, "LAB_STATE_DIR": str(tmp_path / name / "state"),
            "LAB_MODELS_DIR": str(tmp_path / name / "models"), "LAB_DATA_DIR": str(dataset),
            **env}
    full.pop("DATABASE_URL", None)
    for name_ in ("LAB_PASSCODE", "LAB_LOCK_LAUNCH"):  # what make run does by default
        if name_ not in env:
            full.pop(name_, None)
    out = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-m", "launcher"], cwd=ROOT, env=full,
                            stdout=out, stderr=subprocess.STDOUT)
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
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(n in line for n in needles)
            and "ps -ww -eo" not in line]


def _environ(pid: str) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_two_labs_run_side_by_side_and_ctrl_c_stops_only_their_parts(tmp_path, tiny_dataset):
    shared_redis_port = stack.free_port()
    existing = stack.start_redis(shared_redis_port, tmp_path / "existing-redis", save=False)
    port_a, port_b, redis_a = stack.free_port(), stack.free_port(), stack.free_port()
    # Lab A runs two workers on this 2-core machine, one core each.
    lab_a, _ = _start(tmp_path, "a", tiny_dataset, LAB_PORT=str(port_a),
                      REDIS_URL=f"redis://127.0.0.1:{redis_a}/0", LAB_WORKERS="2")
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
        host = os.uname().nodename
        assert workers_a == [f"lab-{port_a}-2@{host}", f"lab-{port_a}@{host}"]
        assert workers_b == [f"lab-{port_b}@{host}"]
        threads = {_environ(line.split()[0]).get("LAB_TRAIN_THREADS") for line in
                   _processes_mentioning(f"lab-{port_a}@", f"lab-{port_a}-2@")}
        assert threads == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
        assert "starting 2 training workers" in (tmp_path / "a.log").read_text()
    finally:
        for proc in (lab_a, lab_b):
            proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        codes = [proc.wait(timeout=120) for proc in (lab_a, lab_b)]
    try:
        assert codes == [0, 0]
        left = _processes_mentioning(f"lab-{port_a}@", f"lab-{port_b}@", f"--port {port_a}",
                                     f"--port {port_b}",
                                     f"redis-server 127.0.0.1:{redis_a}")
        assert left == []
        assert existing.alive() and stack.port_answers(shared_redis_port)
    finally:
        existing.stop()


def test_make_run_makes_up_an_instructor_passcode_and_keeps_it(tmp_path, tiny_dataset):
    lab = Launched(tmp_path, tiny_dataset)
    try:
        said = re.search(r"instructor passcode: (\S+)", lab.log())
        assert said, lab.log()
        passcode = said.group(1)
        kept = tmp_path / "lab" / "state" / "passcode"
        assert kept.read_text().strip() == passcode and kept.stat().st_mode & 0o077 == 0
        # The class launches without it; the instructor's controls need it.
        run_id = lab.launch(ENDLESS)
        stranger = requests.post(f"{lab.url}/api/runs/{run_id}/cancel", timeout=10)
        assert stranger.status_code == 401
        instructor = requests.post(f"{lab.url}/api/runs/{run_id}/cancel", timeout=10,
                                   headers={"X-Lab-Passcode": passcode})
        assert instructor.status_code == 202
        assert lab.wait_status(run_id, "cancelled")["cancelled_by"] == "the instructor"
    finally:
        lab.stop()
    again = Launched(tmp_path, tiny_dataset)  # the same state folder: the same passcode
    try:
        assert f"instructor passcode: {passcode}" in again.log()
    finally:
        again.stop()
    opened = Launched(tmp_path, tiny_dataset, name="open", LAB_PASSCODE="")
    try:
        assert "no passcode (LAB_PASSCODE is empty)" in opened.log()
    finally:
        opened.stop()


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


# -- parts that die are restarted ------------------------------------------------------------

RESTART_BOUND_S = 60  # a killed part answers again within this


class Launched:
    """A lab started as ``python -m launcher`` (what ``make run`` runs) on ports of its own."""

    def __init__(self, tmp_path, dataset, name: str = "lab", **env: str):
        self.tmp_path, self.name = tmp_path, name
        self.port, self.redis_port = stack.free_port(), stack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()  # one person: it owns the runs it launches
        self.proc, self.env = _start(tmp_path, name, dataset, LAB_PORT=str(self.port),
                                     REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
                                     **env)
        self.patterns = {"web": f"-m dashboard --host 127.0.0.1 --port {self.port}",
                         "worker": f"-n lab-{self.port}@",
                         "redis": f"redis-server 127.0.0.1:{self.redis_port}"}
        self.worker_name = f"lab-{self.port}@{os.uname().nodename}"
        _wait_up(tmp_path, name, self.proc)

    def log(self) -> str:
        return (self.tmp_path / f"{self.name}.log").read_text()

    def part_log(self, name: str) -> str:
        return (self.tmp_path / self.name / "state" / "logs" / name).read_text()[-3000:]

    def leader(self, part: str) -> int | None:
        """The pid of the part's process-group leader (its children share the group)."""
        out = subprocess.run(["ps", "-ww", "-eo", "pid,pgid,args"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines()[1:]:
            pid, pgid, args = line.split(None, 2)
            if pid == pgid and self.patterns[part] in args:
                return int(pid)
        return None

    def kill(self, part: str) -> tuple[int, float]:
        """``kill -9`` the part's process group; its pid and when."""
        pid = self.leader(part)
        assert pid, f"no {part} process\n{self.log()}"
        os.killpg(pid, signal.SIGKILL)
        return pid, time.monotonic()

    def health(self) -> dict | None:
        try:
            resp = requests.get(self.url + "/api/health", timeout=5)
        except requests.RequestException:
            return None
        return resp.json() if resp.status_code == 200 else None

    def wait_back(self, part: str, old_pid: int, killed_at: float,
                  done=lambda health: True) -> float:
        """Seconds from the kill until a new process of the part runs and the lab answers
        ``/api/health`` with 200 (and ``done(health)``); the launcher must keep running."""
        while True:
            assert self.proc.poll() is None, f"the launcher exited\n{self.log()}"
            elapsed = time.monotonic() - killed_at
            assert elapsed < RESTART_BOUND_S, f"{part} not back after {elapsed:.0f} s\n" \
                                              f"{self.log()}"
            if self.leader(part) not in (None, old_pid):
                health = self.health()
                if health is not None and done(health):
                    return elapsed
            time.sleep(0.1)

    def wait_logged(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"not logged: {text}\n{self.log()}"
            time.sleep(0.1)

    def launch(self, config: dict) -> str:
        resp = self.http.post(self.url + "/api/runs", json=config, timeout=10)
        assert resp.status_code == 202, resp.text
        return resp.json()["id"]

    def run(self, run_id: str) -> dict:
        return requests.get(f"{self.url}/api/runs/{run_id}", timeout=10).json()

    def wait_status(self, run_id: str, status: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while (run := self.run(run_id))["status"] != status:
            assert time.monotonic() < deadline, f"run is {run}\n{self.part_log('worker.log')}"
            time.sleep(0.2)
        return run

    def last_seq(self, run_id: str) -> int:
        after = 0
        while True:
            page = requests.get(f"{self.url}/api/runs/{run_id}/events",
                                params={"after": after}, timeout=10).json()
            after = page["last_seq"]
            if not page["more"]:
                return after

    def redis(self):
        import redis

        return redis.Redis(port=self.redis_port, socket_timeout=5)

    def stop(self, parts=("the web server", "the training worker", "redis-server")) -> None:
        """Ctrl-C: exit 0, the parts stopped in order, nothing of this lab left running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=180)
        text = self.log()
        assert code == 0, text
        order = [text.find(f"stopped {p}") for p in parts]
        assert -1 not in order and order == sorted(order), text
        assert _processes_mentioning(*self.patterns.values()) == []


def _report(what: str, seconds: float) -> None:
    """The time to answer again, for docs/BENCHMARKS.md (--log-cli-level=INFO shows it)."""
    log.info("%s %.1f s after its kill -9", what, seconds)


def test_a_killed_web_server_is_restarted_and_the_training_run_goes_on(tmp_path,
                                                                        tiny_dataset):
    lab = Launched(tmp_path, tiny_dataset)
    try:
        run_id = lab.launch(ENDLESS)
        lab.wait_status(run_id, "running")
        deadline = time.monotonic() + 60
        while lab.last_seq(run_id) < 5:  # training, not just claimed
            assert time.monotonic() < deadline, lab.part_log("worker.log")
            time.sleep(0.2)
        worker = lab.leader("worker")
        web, killed_at = lab.kill("web")
        back = lab.wait_back("web", web, killed_at)
        _report("web server: /api/health answers 200 again", back)

        assert lab.leader("worker") == worker  # untouched
        assert lab.run(run_id)["status"] == "running"
        seq = lab.last_seq(run_id)
        deadline = time.monotonic() + 30
        while lab.last_seq(run_id) <= seq:  # and still emitting events
            assert time.monotonic() < deadline, lab.part_log("worker.log")
            time.sleep(0.2)
        assert lab.run(run_id)["status"] == "running"
        text = lab.log()
        assert "the web server stopped unexpectedly (exit code -9); restarting it in 1 s; " \
               "its log " in text, text
        # The supervisor logs it at its next look, which may come after /api/health answers.
        lab.wait_logged("restarted the web server (pid")
    finally:
        lab.stop()


def test_a_killed_worker_is_restarted_and_fails_its_lost_run_at_once(tmp_path, tiny_dataset):
    lab = Launched(tmp_path, tiny_dataset)
    try:
        run_id = lab.launch(ENDLESS)
        lab.wait_status(run_id, "running")
        since = {w["name"]: w["since"] for w in lab.health()["workers"]}[lab.worker_name]
        web = lab.leader("web")
        worker, killed_at = lab.kill("worker")

        def announced_again(health: dict) -> bool:  # a new process: a new "since"
            return any(w["name"] == lab.worker_name and w["since"] > since
                       for w in health["workers"])

        _report("worker: announced again in /api/health (which answered 200 throughout)",
                lab.wait_back("worker", worker, killed_at, announced_again))
        # Failed by the restarted worker (same name), not 60 s later by the web's reaper.
        run = lab.wait_status(run_id, "failed", timeout=30)
        assert "worker lost" in run["error"]
        assert time.monotonic() - killed_at < 45
        assert lab.leader("web") == web
        assert "the training worker stopped unexpectedly (exit code -9)" in lab.log()
        lab.wait_status(lab.launch({**TINY, "epochs": 1}), "succeeded")  # it trains again
    finally:
        lab.stop()


def test_a_killed_redis_is_restarted_with_its_data(tmp_path, tiny_dataset):
    lab = Launched(tmp_path, tiny_dataset)
    try:
        training = lab.launch(ENDLESS)
        lab.wait_status(training, "running")
        queued = lab.launch({**TINY, "epochs": 1})  # its task waits in Redis
        client = lab.redis()
        client.set("lab:test:written-before", "yes")
        # The queued run's message waits in the queue; the running one's, in "unacked".
        assert (client.llen("celery"), client.hlen("unacked")) == (1, 1)
        redis_pid, killed_at = lab.kill("redis")
        back = lab.wait_back("redis", redis_pid, killed_at)
        _report("redis-server: /api/health answers 200 again", back)

        assert client.get("lab:test:written-before") == b"yes"
        # Both messages are still there (the worker may have moved one since it reconnected).
        assert client.llen("celery") + client.hlen("unacked") == 2
        assert lab.run(queued)["status"] == "queued"
        assert "redis-server stopped unexpectedly (exit code -9)" in lab.log()
        # The queued run's task, kept by Redis, is what starts it once the worker is free.
        lab.http.post(f"{lab.url}/api/runs/{training}/cancel", timeout=10)
        lab.wait_status(training, "cancelled")
        lab.wait_status(queued, "succeeded")
    finally:
        lab.stop()


def test_a_part_that_keeps_dying_is_given_up_and_the_rest_keep_running(tmp_path,
                                                                       tiny_dataset):
    # A quarter-second first delay (LAB_RESTART_BACKOFF_S; 1 s by default), so the test
    # waits 4 s where a lab would wait 16.
    lab = Launched(tmp_path, tiny_dataset, LAB_RESTART_BACKOFF_S="0.25")
    try:
        worker, redis_pid = lab.leader("worker"), lab.leader("redis")
        web, killed_at = lab.kill("web")
        backs = []
        for _ in range(4):  # 5 deaths, restarted after 0.25, 0.5, 1 and 2 s
            backs.append(lab.wait_back("web", web, killed_at))
            lab.wait_logged(f"restarted the web server (pid {lab.leader('web')}")  # it is up
            web, killed_at = lab.kill("web")
        log.info("web server killed 5 times: back after %s s (backoff 0.25-2 s included)",
                 ", ".join(f"{s:.1f}" for s in backs))
        logs = tmp_path / "lab" / "state" / "logs" / "web.log"
        lab.wait_logged(f"the web server keeps stopping (5 times in 2 min); see {logs}; the "
                        f"other parts keep running")
        assert lab.log().count("the web server stopped unexpectedly (exit code -9)") == 5
        for delay in ("0.25", "0.5", "1", "2"):  # the setting's delay, doubled each time
            assert f"; restarting it in {delay} s;" in lab.log()

        time.sleep(5)  # longer than the next delay (4 s) would be: it is not restarted
        assert lab.proc.poll() is None
        assert lab.leader("web") is None
        assert "starting the web server again" not in lab.log().split("keeps stopping")[1]
        assert (lab.leader("worker"), lab.leader("redis")) == (worker, redis_pid)
        client = lab.redis()
        assert client.ping()
        # The worker still refreshes its presence (every 10 s, for 30 s).
        assert client.ttl(f"lab:worker:{lab.worker_name}") > 18
    finally:
        lab.stop(parts=("the training worker", "redis-server"))
