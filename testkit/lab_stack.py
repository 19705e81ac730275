"""The real lab for tests: redis-server, a Celery worker and the web server, as processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests
import socketio
from engineio import payload

from launcher import processes as stack

# python-engineio's client refuses polling responses of more than 16 packets, which a replay
# easily is; browsers' socket.io-client has no such cap, so the test client should not either.
payload.Payload.max_decode_packets = 10_000

# Heartbeats every second and "lost" after 6 s, so worker-loss tests take seconds, not minutes.
FAST_LOSS = {"LAB_HEARTBEAT_S": "1", "LAB_RUN_LOST_AFTER_S": "6"}
# A tiny run: 40 training photos of 40 px at 32 px, a few seconds an epoch on one core.
TINY = {"image_size": 32, "batch_size": 8, "augment": False, "learning_rate": 0.01}
# The model tests predict with (see LabStack.finished_run).
FINISHED = {**TINY, "recipe": "fast_cnn", "epochs": 3}
# A run that keeps going until it is cancelled or killed.
ENDLESS = {**TINY, "epochs": 300, "early_stopping_patience": 100, "lr_patience": 100}
# A run a class launches: one epoch of TINY.
ONE_EPOCH = {**TINY, "epochs": 1}
# The instructor's passcode of the stacks that have one.
PASSCODE = "tabby-42"


class LabStack:
    """Starts and restarts the parts; talks to the API like any client would."""

    def __init__(self, workdir: Path, data_dir: Path, extra_env: dict[str, str] | None = None,
                 *, workers: int = 1):
        self.workdir = workdir
        # Worker names: "lab", then "lab2", "lab3"…; ``worker`` is the last one started.
        self.worker_names = ["lab"] + [f"lab{i}" for i in range(2, workers + 1)]
        self.workers: dict = {}
        self.redis_port = stack.free_port()
        self.web_port = stack.free_port()
        self.env = {
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": f"sqlite:///{workdir / 'lab.sqlite3'}",
            "LAB_DATA_DIR": str(data_dir),
            "LAB_MODELS_DIR": str(workdir / "models"),
            # The session key, the logs and the photo cache: the stack's own, not the checkout's.
            "LAB_STATE_DIR": str(workdir / "state"),
            # Nothing listens there: mobilenet_v2 fails as it would on an offline machine.
            "LAB_WEIGHTS_BASE_URL": f"http://127.0.0.1:{stack.free_port()}/weights",
            "LAB_WEIGHTS_DIR": str(workdir / "weights"),
            **FAST_LOSS,
            # Tests queue several runs from one client; the caps have their own tests.
            "LAB_MAX_QUEUED_PER_CLIENT": "0", "LAB_MAX_RUNS_PER_STUDENT": "0",
            "LAB_MAX_QUEUED": "0",
            **(extra_env or {}),
        }
        self.passcode = self.env.get("LAB_PASSCODE")
        # The test's own client: it launched its runs, so it may cancel them.
        self.session = requests.Session()
        if self.passcode:
            self.session.headers["X-Lab-Passcode"] = self.passcode
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.redis = self.worker = self.web = None

    def start(self) -> LabStack:
        self.start_redis()
        for name in reversed(self.worker_names):
            self.start_worker(name)  # "lab" last: it is ``worker``
        self.start_web()
        return self

    def start_redis(self) -> None:
        self.redis = stack.start_redis(self.redis_port, self.workdir / "redis")

    def start_worker(self, name: str = "lab") -> None:
        self.worker = stack.start_worker(self.env, self.workdir / f"worker-{name}.log", name=name)
        self.workers[name] = self.worker

    def worker_named(self, run: dict[str, Any]) -> str:
        """Which worker trains (trained) the run: "lab", "lab2"…"""
        return (run["worker"] or "").split("@", 1)[0]

    def start_web(self) -> None:
        self.web = stack.start_web(self.env, self.web_port, self.workdir / "web.log")

    def stop(self) -> None:
        # The web server, every worker, then redis-server (which the workers need to stop).
        for part in (self.web, *self.workers.values(), self.redis):
            if part is not None:
                part.stop()

    def all_logs(self) -> str:
        """The whole logs of the web server and every worker."""
        return "".join(p.log_text() for p in (self.web, *self.workers.values()) if p)

    def logs(self) -> str:
        parts = (self.web, *self.workers.values(), self.redis)
        return "\n".join(f"--- {p.name}\n{p.log_text()[-4000:]}" for p in parts if p is not None)

    # -- API ----------------------------------------------------------------------------

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kw)

    def launch(self, config: dict[str, Any]) -> str:
        resp = self.post("/api/runs", json=config)
        assert resp.status_code == 202, resp.text
        return resp.json()["id"]

    def student(self, name: str | None = None, *, passcode: bool = False) -> requests.Session:
        """A browser of its own (its own cookie jar), all from 127.0.0.1 as a class behind one
        school router is: named by ``X-Lab-Name``, with the passcode when asked. It opens a
        page first, as a browser does before it launches, so it has its session cookie."""
        s = requests.Session()
        if name:
            s.headers["X-Lab-Name"] = name
        if passcode:
            s.headers["X-Lab-Passcode"] = self.passcode or ""
        s.base = self.url  # type: ignore[attr-defined]
        s.get(self.url + "/", timeout=30)
        return s

    def finished_run(self) -> str:
        """A succeeded run of exactly FINISHED (training one if there is none yet).

        Not just any run another test left: a 1-epoch run, a learning rate of 1e-7 or a
        3-epoch one-cycle sprint gives a model too weak to tell the synthetic cats from
        the dogs reliably, and tests ask this model for the right answer.
        """
        done = [r for r in self.get("/api/runs").json()["runs"]
                if r["status"] == "succeeded"
                and all(r["config"].get(k) == v for k, v in FINISHED.items())]
        if done:
            return done[0]["id"]
        run_id = self.launch(FINISHED)
        self.wait_status(run_id, "succeeded")
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        resp = self.get(f"/api/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def events(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        return self.get(f"/api/runs/{run_id}/events", params={"after": after}).json()["events"]

    def wait_status(self, run_id: str, statuses: tuple[str, ...] | str, timeout: float = 180
                    ) -> dict[str, Any]:
        statuses = (statuses,) if isinstance(statuses, str) else statuses
        deadline = time.monotonic() + timeout
        run = self.run(run_id)
        while run["status"] not in statuses:
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run['status']}, not {statuses} after "
                                     f"{timeout:.0f} s\n{self.logs()}")
            time.sleep(0.2)
            run = self.run(run_id)
        return run

    def wait_event(self, run_id: str, type_: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events(run_id) if e["type"] == type_]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no {type_} event for run {run_id} in {timeout:.0f} s\n"
                             f"{self.logs()}")

    def cancel_active(self) -> None:
        """Leave the worker idle for the next test."""
        for run in self.get("/api/runs").json()["runs"]:
            if run["status"] in ("queued", "running"):
                self.post(f"/api/runs/{run['id']}/cancel")
        for run in self.get("/api/runs").json()["runs"]:
            if run["status"] in ("queued", "running"):
                self.wait_status(run["id"], ("cancelled", "failed", "succeeded"))


class Viewer:
    """A real python-socketio client watching one run, as a browser page would."""

    def __init__(self, url: str, run_id: str, after: int = 0, transport: str = "websocket"):
        self.url = url
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self.positions: list[int | None] = []  # queue_position messages, as they came
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("run_event", self._on_event)
        self.client.on("queue_position", self._on_position)
        self.transport = transport
        self.join_reply = None
        self.connect(after)

    def _on_event(self, ev: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(ev)
        if ev["type"] == "run_finished":
            self.finished.set()

    def _on_position(self, data: dict[str, Any]) -> None:
        if data.get("run_id") == self.run_id:
            with self._lock:
                self.positions.append(data["queue_position"])

    def wait_position(self, wanted: int | None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.positions and self.positions[-1] == wanted:
                    return
            time.sleep(0.05)
        raise AssertionError(f"viewer got positions {self.positions}, never ending at {wanted}")

    def connect(self, after: int = 0) -> None:
        self.client.connect(self.url, transports=[self.transport], wait_timeout=20)
        self.join_reply = self.client.call("join", {"run_id": self.run_id, "after": after},
                                           timeout=30)

    def disconnect(self) -> None:
        # websocket-client waits 3 s for the close handshake; the server has the close frame
        # at once, so the test need not wait for that.
        threading.Thread(target=self.client.disconnect, daemon=True).start()

    def reconnect(self) -> None:
        """A new connection that asks for what came after the last event it has."""
        self.client = socketio.Client(reconnection=False)
        self.client.on("run_event", self._on_event)
        self.client.on("queue_position", self._on_position)
        self.connect(after=self.last_seq)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self.events[-1]["seq"] if self.events else 0

    def wait_for(self, type_: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [e for e in self.events if e["type"] == type_]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"viewer saw no {type_} in {timeout:.0f} s; it has "
                             f"{[(e['seq'], e['type']) for e in self.events]}")

    def wait_finished(self, timeout: float = 180) -> list[dict[str, Any]]:
        assert self.finished.wait(timeout), (
            f"no run_finished in {timeout:.0f} s; got {[e['type'] for e in self.events]}")
        return list(self.events)
