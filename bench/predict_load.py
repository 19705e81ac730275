"""Predict under load, and a fuzz run of hostile uploads, against the real web process.

Starts a real stack (redis-server, one Celery worker, the web server) in a scratch folder,
trains a default-recipe model for one short epoch (its speed, not its accuracy, matters
here), then measures ``POST /api/predict`` (one photo, prediction plus Grad-CAM) with 1 and
with N concurrent clients: latency p50/p95, throughput and errors; then one client sending
16 photos a request (the most a request may carry): batch throughput. Then it sends at least
1,000 hostile uploads (``testkit.hostile``: the named troublesome files plus random
mutations of real encodings, some several to a request) and counts the answers by status:
any answer of 500 or more is a failure. The web process's memory (RSS) is read from /proc
before, between and after.

Photos come from ../shared/data when it is there (real Kaggle JPEGs), else are generated.

    python bench/predict_load.py --clients 20 --fuzz 1200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from launcher import processes as stack  # noqa: E402
from testkit.hostile import named_cases, random_upload  # noqa: E402
from testkit.synthetic import make_flat_dataset, photo_bytes  # noqa: E402

log = logging.getLogger("bench.predict_load")
OUT = Path(__file__).resolve().parent / "out" / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train"


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def photos(n: int) -> list[tuple[str, bytes]]:
    """Real photos when the shared set is here, else generated 400 px ones."""
    if SHARED.is_dir():
        paths = sorted(SHARED.glob("*.jpg"))[:n]
        if paths:
            return [(p.name, p.read_bytes()) for p in paths]
    return [(f"{k}.{i}.jpg", photo_bytes(k, size=400, seed=i))
            for i in range(n) for k in ("cat", "dog")][:n]


def load(url: str, pool: list[tuple[str, bytes]], clients: int, per_client: int,
         per_request: int = 1) -> dict:
    """``clients`` threads, each sending ``per_client`` requests of ``per_request`` photos
    back to back."""
    def client(i: int) -> list[tuple[int, float]]:
        out = []
        with requests.Session() as session:
            for j in range(per_client):
                first = (i * per_client + j) * per_request
                files = [("photos", (name, data, "image/jpeg")) for name, data in
                         (pool[(first + k) % len(pool)] for k in range(per_request))]
                start = time.perf_counter()
                try:
                    resp = session.post(url + "/api/predict", timeout=300, files=files)
                    status = resp.status_code
                except requests.RequestException:
                    status = 0
                out.append((status, time.perf_counter() - start))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as threads:
        answers = [a for batch in threads.map(client, range(clients)) for a in batch]
    wall = time.perf_counter() - start
    ok = [lat * 1000 for status, lat in answers if status == 200]
    return {"clients": clients, "requests": len(answers), "photos_per_request": per_request,
            "errors": len(answers) - len(ok), "p50_ms": percentile(ok, 50),
            "p95_ms": percentile(ok, 95), "max_ms": max(ok),
            "throughput_per_s": len(answers) * per_request / wall, "wall_s": wall}


def fuzz(url: str, count: int, seed: int) -> dict:
    """``count`` hostile requests; every answer's status counted, ≥ 500 is a failure."""
    rng = np.random.default_rng(seed)
    cases = named_cases()
    statuses: dict[int, int] = {}
    failures = []
    start = time.perf_counter()
    for i in range(count):
        if i % 10 == 0:
            case = cases[(i // 10) % len(cases)]
            files = [(case.filename, case.data, case.content_type)]
        else:
            files = [random_upload(rng) for _ in range(1 if i % 7 else int(rng.integers(2, 5)))]
        try:
            resp = requests.post(url + "/api/predict", timeout=120,
                                 files=[("photos", f) for f in files])
            status = resp.status_code
            if status >= 500 or "error" not in resp.json() and status != 200:
                failures.append((i, status, resp.text[:200]))
        except (requests.RequestException, ValueError) as exc:
            status = 0
            failures.append((i, status, repr(exc)[:200]))
        statuses[status] = statuses.get(status, 0) + 1
    return {"requests": count, "by_status": dict(sorted(statuses.items())),
            "failures": failures[:20], "failure_count": len(failures),
            "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--single", type=int, default=60, help="requests by the lone client")
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--fuzz", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="lab-predict-") as tmp:
        work = Path(tmp)
        data = make_flat_dataset(work / "data", 100)
        redis_port, web_port = stack.free_port(), stack.free_port()
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "DATABASE_URL": f"sqlite:///{work / 'lab.sqlite3'}",
               "LAB_DATA_DIR": str(data), "LAB_MODELS_DIR": str(work / "models"),
               "LAB_STATE_DIR": str(work / "state")}
        parts = [stack.start_redis(redis_port, work / "redis", save=False)]
        try:
            parts.append(stack.start_worker(env, work / "worker.log"))
            web = stack.start_web(env, web_port, work / "web.log")
            parts.append(web)
            url = f"http://127.0.0.1:{web_port}"
            run_id = requests.post(url + "/api/runs", timeout=30, json={
                "epochs": 1, "augment": False}).json()["id"]  # the default recipe and size
            while (run := requests.get(f"{url}/api/runs/{run_id}", timeout=30).json()
                   )["status"] in ("queued", "running"):
                time.sleep(1)
            assert run["status"] == "succeeded", run
            memory = {"cold_mb": rss_mb(web.pid)}
            pool = photos(200)
            load(url, pool[:2], 1, 2)  # warm-up: TensorFlow import and model load
            memory["warm_mb"] = rss_mb(web.pid)
            single = load(url, pool, 1, args.single)
            many = load(url, pool, args.clients, args.per_client)
            # The most a request may carry (16 photos): the API's batch throughput.
            batched = load(url, pool, 1, max(1, args.single // 16), per_request=16)
            memory["after_load_mb"] = rss_mb(web.pid)
            fuzzed = fuzz(url, args.fuzz, args.seed)
            memory["after_fuzz_mb"] = rss_mb(web.pid)
            after = requests.post(url + "/api/predict", timeout=60,
                                  files=[("photos", (pool[0][0], pool[0][1], "image/jpeg"))])
            alive = web.alive() and after.status_code == 200
        finally:
            for part in reversed(parts):
                part.stop()

    result = {
        "bench": "predict_load", "model": {"recipe": run["config"]["recipe"],
                                           "image_size": after.json()["model"]["image_size"]},
        "photos": "shared Kaggle JPEGs" if SHARED.is_dir() else "generated 400 px JPEGs",
        "one_client": single, "concurrent": many, "batched": batched, "fuzz": fuzzed,
        "memory": memory,
        "server_alive_after": alive,
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "predict_load.json").write_text(json.dumps(result, indent=2))
    for row in (single, many, batched):
        log.info("| %d client(s) | %d requests of %d photo(s) | p50 %.0f ms | p95 %.0f ms | "
                 "%.1f photos/s | errors %d |", row["clients"], row["requests"],
                 row["photos_per_request"], row["p50_ms"], row["p95_ms"],
                 row["throughput_per_s"], row["errors"])
    log.info("fuzz: %d hostile requests, by status %s, failures %d, alive after: %s",
             fuzzed["requests"], fuzzed["by_status"], fuzzed["failure_count"], alive)
    log.info("web process memory (MB): %s", {k: round(v) for k, v in memory.items()})
    if fuzzed["failure_count"] or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
