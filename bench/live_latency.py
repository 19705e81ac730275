"""Live-channel latency: from a worker's event to its receipt by N Socket.IO viewers of one run.

Starts a real stack (redis-server, one Celery worker, the web server) on free ports in a
scratch folder, launches a training run on generated photos, and has N python-socketio
clients (websocket transport, spread over several processes so their own GIL does not
dominate) watch it. For every live event each client records ``receipt time - event ts``;
``ts`` is stamped when ``ml.train`` creates the event, before the worker stores it and
publishes it, so the figure includes the run-store write, Redis pub/sub, the web process's
relay and the websocket. Lost = events in the run store that a client never received;
duplicates and out-of-order deliveries are counted too.

    python bench/live_latency.py --clients 50
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from launcher import processes as stack  # noqa: E402
from testkit.synthetic import make_flat_dataset  # noqa: E402

log = logging.getLogger("bench.live_latency")
OUT = Path(__file__).resolve().parent / "out" / "results"


def watch(url: str, run_id: str, clients: int, ready, go, results, timeout: float) -> None:
    """One process: ``clients`` viewers; puts one record per viewer on ``results``."""
    import socketio

    viewers = []
    for _ in range(clients):
        record = {"received": [], "joined_at": None, "done": threading.Event()}
        client = socketio.Client(reconnection=False)

        def on_event(ev, record=record):
            record["received"].append((ev["seq"], time.time() - ev["ts"], ev["ts"]))
            if ev["type"] == "run_finished":
                record["done"].set()

        client.on("run_event", on_event)
        client.connect(url, transports=["websocket"], wait_timeout=30)
        record["joined_at"] = time.time()
        reply = client.call("join", {"run_id": run_id}, timeout=60)
        assert reply["ok"], reply
        viewers.append((client, record))
    ready.put(len(viewers))
    go.wait()
    deadline = time.monotonic() + timeout
    for _client, record in viewers:
        record["done"].wait(max(0.0, deadline - time.monotonic()))
    for client, record in viewers:
        results.put({"received": record["received"], "joined_at": record["joined_at"]})
        threading.Thread(target=client.disconnect, daemon=True).start()
    time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5, help="client processes")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=200, help="generated photos per class")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="lab-latency-") as tmp:
        work = Path(tmp)
        data = make_flat_dataset(work / "data", args.per_class)
        redis_port, web_port = stack.free_port(), stack.free_port()
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "DATABASE_URL": f"sqlite:///{work / 'lab.sqlite3'}",
               "LAB_DATA_DIR": str(data), "LAB_MODELS_DIR": str(work / "models")}
        parts = [stack.start_redis(redis_port, work / "redis", save=False)]
        try:
            parts.append(stack.start_worker(env, work / "worker.log"))
            parts.append(stack.start_web(env, web_port, work / "web.log"))
            url = f"http://127.0.0.1:{web_port}"
            config = {"image_size": 32, "batch_size": 8, "augment": False,
                      "learning_rate": 0.01, "epochs": args.epochs,
                      "early_stopping_patience": 100, "lr_patience": 100}
            # Viewers join while the run is queued behind a short warm-up run, so every
            # event of the measured run is live for all of them.
            warmup = requests.post(url + "/api/runs", json={**config, "epochs": 1},
                                   timeout=30).json()["id"]
            run_id = requests.post(url + "/api/runs", json=config, timeout=30).json()["id"]
            ctx = mp.get_context("spawn")
            ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            share = [args.clients // args.processes + (i < args.clients % args.processes)
                     for i in range(args.processes)]
            procs = [ctx.Process(target=watch, args=(url, run_id, n, ready, go, results,
                                                     600.0)) for n in share if n]
            for proc in procs:
                proc.start()
            joined = sum(ready.get(timeout=300) for _ in procs)
            log.info("%d viewers joined run %s (warm-up run %s ahead of it)", joined, run_id,
                     warmup)
            go.set()
            records = [results.get(timeout=900) for _ in range(joined)]
            for proc in procs:
                proc.join(timeout=30)
            stored = requests.get(f"{url}/api/runs/{run_id}/events", timeout=30).json()["events"]
            run = requests.get(f"{url}/api/runs/{run_id}", timeout=30).json()
        finally:
            for part in reversed(parts):
                part.stop()

    expected = [e["seq"] for e in stored]
    latencies, lost, duplicates, disordered = [], 0, 0, 0
    for record in records:
        seqs = [seq for seq, _, _ in record["received"]]
        lost += len(set(expected) - set(seqs))
        duplicates += len(seqs) - len(set(seqs))
        disordered += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
        # Only events created after the viewer joined are live; earlier ones are replay.
        latencies += [lat for _, lat, ts in record["received"] if ts >= record["joined_at"]]
    ms = [x * 1000 for x in latencies]
    result = {
        "bench": "live_latency", "clients": joined, "processes": len(procs),
        "run_status": run["status"], "events_per_run": len(stored),
        "deliveries": len(ms), "lost": lost, "duplicates": duplicates,
        "out_of_order": disordered,
        "latency_ms": {"p50": percentile(ms, 50), "p95": percentile(ms, 95),
                       "p99": percentile(ms, 99), "max": max(ms),
                       "mean": statistics.fmean(ms)},
        "run_seconds": run["duration_s"],
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "live_latency.json").write_text(json.dumps(result, indent=2))
    lat = result["latency_ms"]
    log.info("| %d viewers | %d events × %d viewers = %d deliveries | p50 %.1f ms | "
             "p95 %.1f ms | p99 %.1f ms | max %.0f ms | lost %d | duplicates %d | "
             "out of order %d |", joined, len(stored), joined, len(ms), lat["p50"],
             lat["p95"], lat["p99"], lat["max"], lost, duplicates, disordered)


if __name__ == "__main__":
    main()
