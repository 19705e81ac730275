"""End-to-end check of the run store on PostgreSQL (by hand: CI has no PostgreSQL server).

Starts redis-server, a worker and the web server with ``DATABASE_URL`` pointing at the given
database, then runs, cancels (queued and running), kills a worker mid-run and restarts the
web process, checking the outcome of each. Prints one line per step; exits 1 on a failure.

    apt-get install postgresql && pg_ctlcluster 15 main start
    su postgres -c "psql -c \"CREATE USER lab PASSWORD 'lab'\" -c 'CREATE DATABASE lab OWNER lab'"
    .venv/bin/pip install 'psycopg[binary]'
    .venv/bin/python bench/postgres_stack.py postgresql+psycopg://lab:lab@127.0.0.1:5432/lab
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.synthetic import make_flat_dataset  # noqa: E402
from tests.lab_stack import ENDLESS, TINY, LabStack, Viewer  # noqa: E402

log = logging.getLogger("bench.postgres_stack")


def check(lab: LabStack) -> None:
    run_id = lab.launch({**TINY, "epochs": 2})
    viewer = Viewer(lab.url, run_id)
    events = viewer.wait_finished()
    viewer.disconnect()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert lab.run(run_id)["status"] == "succeeded"
    log.info("run streamed: %d events in order, succeeded", len(events))

    running = lab.launch(ENDLESS)
    lab.wait_event(running, "epoch")
    queued = lab.launch({**TINY, "epochs": 1})
    assert lab.post(f"/api/runs/{queued}/cancel").json()["outcome"] == "cancelled"
    assert lab.post(f"/api/runs/{running}/cancel").json()["outcome"] == "cancelling"
    assert lab.wait_status(running, ("cancelled", "failed"))["status"] == "cancelled"
    log.info("cancel: queued run cancelled at once, running run ended cancelled")

    lost = lab.launch(ENDLESS)
    lab.wait_event(lost, "batch")
    lab.worker.kill()
    lab.start_worker()
    assert "worker lost" in lab.wait_status(lost, "failed", timeout=30)["error"]
    log.info("killed worker: its run is failed (worker lost)")

    lab.web.stop()
    lab.start_web()
    assert lab.events(run_id) == events
    log.info("web restart: %d runs and every event still there",
             len(lab.get("/api/runs").json()["runs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="lab-pg-") as tmp:
        work = Path(tmp)
        lab = LabStack(work, make_flat_dataset(work / "data", 24),
                       extra_env={"DATABASE_URL": args.database_url})
        try:
            lab.start()
            check(lab)
        except AssertionError as exc:
            log.error("FAILED: %s\n%s", exc, lab.logs())
            sys.exit(1)
        finally:
            lab.stop()
    log.info("PostgreSQL run store: all checks passed")


if __name__ == "__main__":
    main()
