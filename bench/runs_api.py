"""How fast the run list answers with a class's worth of runs: ``GET /api/runs`` (and the
Runs tab) with filters, sorts and pages over a store of 1,000 runs.

The store is filled the way a term of classes would leave it: 30 students (a few without a
name), every recipe, mostly finished runs with their card (a 20-epoch history and a list
of misclassified photos), some failed and cancelled, a few running and queued. Requests go
through the Flask test client of the real app (the web process's whole request path:
routing, session, the SQL, JSON), each query ``--repeat`` times; a Markdown table of
median and p95 goes to stdout for docs/BENCHMARKS.md.

    python bench/runs_api.py                      # SQLite in a temporary folder
    python bench/runs_api.py --database-url postgresql+psycopg://...  # an empty database
"""

from __future__ import annotations

import argparse
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import load_settings  # noqa: E402
from ml import events  # noqa: E402
from ml.recipes import RECIPES  # noqa: E402

log = logging.getLogger("bench.runs_api")

STUDENTS = 30
QUERIES = (
    ("API, first page", "/api/runs?per_page=25"),
    ("API, page 20 by best accuracy", "/api/runs?per_page=25&page=20&sort=accuracy"),
    ("API, succeeded fast_cnn by duration, asc",
     "/api/runs?per_page=25&status=succeeded&recipe=fast_cnn&sort=duration&order=asc"),
    ("API, one student's, by start time", "/api/runs?per_page=25&by=Student%207&sort=started"),
    ("API, mine (this browser's)", "/api/runs?per_page=25&mine=1"),
    ("API, queued and running", "/api/runs?per_page=25&status=queued,running"),
    ("Runs tab, default page (mine)", "/runs"),
    ("Runs tab, everyone's, page 3 by accuracy", "/runs?mine=0&page=3&sort=accuracy"),
    ("API, every run unpaged (old callers)", "/api/runs"),
)


def fill(store, count: int, seed: int = 1) -> None:
    """``count`` runs of STUDENTS people, newest last, statuses as a term leaves them."""
    rng = random.Random(seed)
    recipes = list(RECIPES)
    now = time.time()
    for n in range(count):
        student = n % STUDENTS
        config = {"recipe": rng.choice(recipes), "epochs": rng.choice([5, 10, 20]),
                  "batch_size": rng.choice([16, 32, 64]),
                  "learning_rate": 10 ** rng.uniform(-4, -2),
                  "augment": rng.random() < 0.7, "image_size": rng.choice([64, 96, 128])}
        run_id = f"bench{n:07d}"
        store.insert_run(run_id, config, events.run_queued(config),
                         owner=f"owner{student:02d}",
                         owner_name=None if student % 10 == 9 else f"Student {student}")
        left = count - n
        if left <= 20:  # the newest: still queued
            continue
        started = now - 60 * left
        if left <= 22:
            store.update_run(run_id, status="running", started=started, heartbeat=now)
            continue
        status = rng.choices(["succeeded", "failed", "cancelled"], [85, 8, 7])[0]
        history = [{"epoch": e, "loss": 0.7 - e / 50, "accuracy": 0.5 + e / 45,
                    "val_loss": 0.72 - e / 55, "val_accuracy": 0.5 + e / 50, "lr": 1e-3,
                    "seconds": 12.0, "images_per_s": 180.0} for e in range(1, 21)]
        best = max(h["val_accuracy"] for h in history) - rng.random() * 0.2
        summary = {"status": status, "history": history,
                   "metrics": {"best_val_accuracy": best, "best_epoch": 14},
                   "validation": {"misclassified": [
                       {"image_path": f"/data/train/cat.{k}.jpg", "label": "cat",
                        "predicted": "dog", "confidence": 0.8} for k in range(12)]}}
        store.update_run(run_id, status=status, started=started,
                         finished=started + rng.uniform(30, 1800),
                         best_val_accuracy=best if status != "failed" else None,
                         summary=summary if status != "failed" else None,
                         epochs_done=20, error="out of memory" if status == "failed" else None)


def timings(client, path: str, repeat: int) -> list[float]:
    found = []
    for _ in range(repeat):
        start = time.perf_counter()
        resp = client.get(path)
        found.append((time.perf_counter() - start) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{path} answered {resp.status_code}: {resp.text[:300]}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database-url", help="an empty database (default: SQLite, temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from dashboard.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({
            "REDIS_URL": "redis://127.0.0.1:9/0",
            "DATABASE_URL": args.database_url or f"sqlite:///{Path(tmp) / 'lab.sqlite3'}",
            "LAB_DATA_DIR": str(Path(tmp) / "data"), "LAB_MODELS_DIR": str(Path(tmp) / "models"),
            "LAB_STATE_DIR": str(Path(tmp) / "state")})
        app = create_app(settings, start_background=False)
        store = app.extensions["lab_runs"].store
        started = time.perf_counter()
        fill(store, args.runs)
        print(f"filled {args.runs} runs in {time.perf_counter() - started:.1f} s "
              f"({store.engine.dialect.name}); {args.repeat} requests a query; "
              f"{platform.processor() or platform.machine()}, Python "
              f"{platform.python_version()}\n")
        client = app.test_client()
        client.get("/runs")
        with client.session_transaction() as session:
            session["client"] = "owner07"  # this browser is Student 7: "mine" has runs
        print("| query | median ms | p95 ms | runs on the page |")
        print("|---|---:|---:|---:|")
        for label, path in QUERIES:
            timings(client, path, 3)  # warm: templates compiled, connections open
            found = sorted(timings(client, path, args.repeat))
            p95 = found[min(len(found) - 1, round(0.95 * len(found)) - 1)]
            shown = client.get(path)
            rows = (len(shown.json["runs"]) if shown.is_json
                    else shown.text.count("<tr data-run-id="))
            print(f"| {label}: `{path}` | {statistics.median(found):.1f} | {p95:.1f} | {rows} |")
        store.engine.dispose()


if __name__ == "__main__":
    main()
