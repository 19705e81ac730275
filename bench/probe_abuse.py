"""Abuse probe on a real stack: joins in a loop from one client, and concurrent launches
from one address against the per-address cap; with the API's latency meanwhile.

Starts redis-server, one Celery worker and the web server on free ports over generated
photos (testkit.synthetic), as the tests do, and reports JSON:

- ``joins``: one client joins a finished run N times on one connection, then on new
  connections: accepted, refused (the per-connection cap), events replayed, seconds, and
  the p50/max latency of ``GET /api/runs`` from another client during it;
- ``launches``: N launches sent at once from one address with a cap of 3: how many were
  accepted (202) and refused (429).

    python bench/probe_abuse.py --joins 300 --launches 30
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
import socketio  # noqa: E402

from testkit.lab_stack import TINY, LabStack  # noqa: E402
from testkit.synthetic import make_flat_dataset  # noqa: E402

log = logging.getLogger("bench.probe_abuse")


def api_latency(url: str, stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        requests.get(url + "/api/runs", timeout=30)
        samples.append(time.perf_counter() - started)
        time.sleep(0.05)


def probe_joins(lab: LabStack, run_id: str, joins: int) -> dict:
    samples: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=api_latency, args=(lab.url, stop, samples), daemon=True)
    replayed = {"n": 0}
    client = socketio.Client(reconnection=False)
    client.on("run_event", lambda _ev: replayed.__setitem__("n", replayed["n"] + 1))
    client.connect(lab.url, transports=["websocket"], wait_timeout=30)
    accepted = refused = 0
    watcher.start()
    started = time.perf_counter()
    for _ in range(joins):
        reply = client.call("join", {"run_id": run_id}, timeout=60)
        accepted, refused = (accepted + 1, refused) if reply["ok"] else (accepted, refused + 1)
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    client.disconnect()
    return {"joins": joins, "accepted": accepted, "refused": refused,
            "events_replayed": replayed["n"], "seconds": round(seconds, 2),
            "api_p50_ms": round(1000 * statistics.median(samples), 1),
            "api_max_ms": round(1000 * max(samples), 1)}


def probe_launches(lab: LabStack, launches: int) -> dict:
    def launch(_i: int) -> int:
        return requests.post(lab.url + "/api/runs", json={**TINY, "epochs": 1},
                             timeout=60).status_code

    with ThreadPoolExecutor(max_workers=launches) as pool:
        codes = list(pool.map(launch, range(launches)))
    return {"launches": launches, "cap": 3, "accepted": codes.count(202),
            "refused_429": codes.count(429), "other": len(codes) - codes.count(202)
            - codes.count(429)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=300)
    parser.add_argument("--launches", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_flat_dataset(Path(tmp) / "train", per_class=24)
        (Path(tmp) / "lab").mkdir()
        lab = LabStack(Path(tmp) / "lab", data, {"LAB_MAX_QUEUED_PER_CLIENT": "3"}).start()
        try:
            run_id = lab.launch({**TINY, "epochs": 3})
            lab.wait_status(run_id, "succeeded")
            report = {"events_in_run": len(lab.events(run_id)),
                      "joins": probe_joins(lab, run_id, args.joins),
                      "launches": probe_launches(lab, args.launches)}
            print(json.dumps(report, indent=2))
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
