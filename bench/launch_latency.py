"""Fixed cost per run: from launch (the POST) to the run's first training batch, on a real
stack (redis-server, one Celery worker, the web server) that this script starts.

The first run meets a cold worker and builds the photo cache; the runs after it meet a warm
worker (its pool process kept, TensorFlow loaded) and a built cache. For each run: launch →
``run_started`` (claim, scan, cache, model built) and launch → first ``batch`` event (the
first step traced and trained), from the events' timestamps (same machine, same clock).

    python bench/launch_latency.py --data ../shared/data/dogs-vs-cats/train --runs 5
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reports import write_report  # noqa: E402 - bench/, the script's own folder

from launcher import processes  # noqa: E402

log = logging.getLogger("bench.launch_latency")


def _first(events: list[dict], type_: str) -> dict | None:
    return next((e for e in events if e["type"] == type_), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats/train"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", default='{"recipe": "fast_cnn", "image_size": 64, '
                        '"epochs": 1, "limit": 600}', help="each run's config (JSON)")
    parser.add_argument("--out", default="bench/out/results/launch_latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not Path(args.data).is_dir():
        log.error("no dataset at %s (--data)", args.data)
        return 2
    config = json.loads(args.config)
    work = Path(tempfile.mkdtemp(prefix="launch-latency-"))
    redis_port, web_port = processes.free_port(), processes.free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DATABASE_URL": f"sqlite:///{work / 'lab.sqlite3'}", "LAB_DATA_DIR": args.data,
           "LAB_MODELS_DIR": str(work / "models"), "LAB_STATE_DIR": str(work / "state"),
           "LAB_PASSCODE": ""}
    parts = []
    rows = []
    try:
        parts.append(processes.start_redis(redis_port, work / "redis"))
        parts.append(processes.start_worker(env, work / "worker.log", name="bench"))
        parts.append(processes.start_web(env, web_port, work / "web.log"))
        url = f"http://127.0.0.1:{web_port}"
        for i in range(args.runs):
            launched = time.time()
            resp = requests.post(url + "/api/runs", json=config, timeout=30)
            resp.raise_for_status()
            run_id = resp.json()["id"]
            deadline = time.monotonic() + 1800
            while True:
                run = requests.get(f"{url}/api/runs/{run_id}", timeout=30).json()
                if run["status"] in ("succeeded", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run_id} did not end in 30 min")
                time.sleep(0.5)
            if run["status"] != "succeeded":
                raise SystemExit(f"run {run_id} {run['status']}: {run.get('error')}")
            events = requests.get(f"{url}/api/runs/{run_id}/events", timeout=30).json()["events"]
            started, batch = _first(events, "run_started"), _first(events, "batch")
            row = {"run": i + 1, "to_started_s": round(started["ts"] - launched, 2),
                   "to_first_batch_s": round(batch["ts"] - launched, 2),
                   "photo_cache": started.get("photo_cache")}
            rows.append(row)
            log.info("run %d: %s", i + 1, row)
    finally:
        for part in reversed(parts):
            part.stop()
    warm = [r["to_first_batch_s"] for r in rows[1:]]
    report = {"config": config, "data": args.data, "runs": rows,
              "warm_median_to_first_batch_s": statistics.median(warm) if warm else None}
    write_report(report, ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
