"""The worker's tasks: train the next queued run, and download the dataset.

Tasks are ``shared_task``s: this module never imports the Celery app (no import cycle).
TensorFlow is imported only inside the task (in the pool's child process), never when the
worker or the web process imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import shared_task

from core import downloads
from core.run_service import RunGone, RunService
from ml.errors import LabError
from ml.events import Body, Event
from worker import runtime
from worker.runtime import DOWNLOAD_TASK, TRAIN_TASK

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5
_runs_in_process = 0  # how many this pool process has trained (it is reused on a CPU)


class _RunContext:
    """What one run needs while it trains: its events recorded, a heartbeat, cancel polling."""

    def __init__(self, service: RunService, run_id: str, worker: str):
        self.service = service
        self.run_id = run_id
        self.worker = worker
        self._last_poll = 0.0
        self._stop = False
        self._stop_heartbeat = threading.Event()

    def record(self, body: Body) -> Event:
        # Raises RunGone when the run was reaped or ended underneath this worker.
        return self.service.record(self.run_id, self.worker, body)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_poll >= CANCEL_POLL_S:
            self._last_poll = now
            try:
                self._stop = self.service.cancel_requested(self.run_id)
            except Exception as exc:  # the store hiccupped: keep training, ask again later
                log.warning("run %s: cannot read the cancel flag: %s", self.run_id, exc)
        return self._stop

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(runtime.settings().heartbeat_s):
            try:
                if not self.service.heartbeat(self.run_id, self.worker):
                    self._stop = True  # no longer ours: stop; the next event says why
            except Exception as exc:
                log.warning("run %s: heartbeat not written: %s", self.run_id, exc)

    def __enter__(self) -> _RunContext:
        threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{self.run_id}").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop_heartbeat.set()


@shared_task(name=TRAIN_TASK, bind=True, acks_late=True)
def train_next(self, run_id: str | None = None) -> dict[str, Any]:
    """Train the next queued run; the runs service picks which. (``run_id``, which older
    labs' messages carry, is not used: a message claims a turn, not a run.)"""
    service = runtime.service()
    worker = self.request.hostname or "worker"
    run = service.claim_next(worker)
    if run is None:
        if service.flags.queue_paused():  # resuming sends the queued runs' tasks again
            log.info("the queue is paused by the instructor: nothing starts")
            return {"status": "paused"}
        log.info("nothing queued to train (the runs were cancelled or taken)")
        return {"status": "idle"}
    run_id = run["id"]
    settings = runtime.settings()
    # The heartbeat starts before TensorFlow is imported: on a busy machine the import alone
    # can outlast LAB_RUN_LOST_AFTER_S, and the run would be reaped as lost.
    with _RunContext(service, run_id, worker) as ctx:
        from ml.train import train

        runtime.prepare_tensorflow()
        global _runs_in_process
        _runs_in_process += 1
        log.info("run %s: training %s on %s in process %d (run %d in this process)", run_id,
                 run["config"], settings.data_dir, os.getpid(), _runs_in_process)
        try:
            summary = train(run["config"], settings.data_dir, service.out_dir(run_id),
                            sink=ctx.record, should_stop=ctx.should_stop, run_id=run_id,
                            photo_cache_dir=settings.photo_cache_dir, options=settings.ml)
        except RunGone as exc:
            log.warning("%s", exc)
            return {"run_id": run_id, "status": exc.status}
        except LabError as exc:  # a problem a person can fix: already reported as the error
            log.warning("run %s failed: %s", run_id, exc)
            return {"run_id": run_id, "status": "failed", "error": str(exc)}
        except Exception as exc:
            log.exception("run %s failed", run_id)
            return {"run_id": run_id, "status": "failed", "error": str(exc)}
    log.info("run %s %s: best val accuracy %s", run_id, summary["status"],
             summary["metrics"]["best_val_accuracy"])
    return {"run_id": run_id, "status": summary["status"]}


PROGRESS_EVERY_S = 0.5


@shared_task(name=DOWNLOAD_TASK, bind=True, acks_late=True)
def download_dataset_task(self, source: str = "auto") -> dict[str, Any]:
    """Download the dataset into ``LAB_DATA_DIR``, reporting progress for the Dataset tab."""
    from ml.fetch import download_dataset

    settings = runtime.settings()
    state = downloads.read(settings)
    if state is None or state["state"] != "queued":
        return {"state": state["state"] if state else "missing"}  # a duplicate message
    if state["cancel"]:
        downloads.update(settings, state="cancelled", error="cancelled before it started")
        return {"state": "cancelled"}
    downloads.update(settings, state="running", worker=self.request.hostname or "worker")
    last = {"progress": 0.0, "cancel_check": 0.0, "cancel": False}

    def on_progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last["progress"] >= PROGRESS_EVERY_S or (total and done >= total):
            last["progress"] = now
            downloads.update(settings, done=done, total=total)

    def should_stop() -> bool:
        # Asked after every read, which on a fast link is thousands a second: Redis is
        # asked at most twice a second.
        now = time.monotonic()
        if not last["cancel"] and now - last["cancel_check"] >= PROGRESS_EVERY_S:
            last["cancel_check"] = now
            last["cancel"] = downloads.cancel_requested(settings)
        return bool(last["cancel"])

    try:
        summary = download_dataset(settings.data_dir, source=source, url=settings.dataset_url,
                                   on_progress=on_progress, should_stop=should_stop,
                                   options=settings.ml)
    except LabError as exc:
        outcome = "cancelled" if downloads.cancel_requested(settings) else "failed"
        downloads.update(settings, state=outcome, error=str(exc))
        log.warning("dataset download %s: %s", outcome, exc)
        return {"state": outcome, "error": str(exc)}
    except Exception as exc:
        log.exception("dataset download failed")
        downloads.update(settings, state="failed", error=f"the download failed: {exc}")
        return {"state": "failed", "error": str(exc)}
    downloads.update(settings, state="succeeded", summary={k: str(v) if k == "root" else v
                                                           for k, v in summary.items()})
    log.info("dataset downloaded into %s: %s", settings.data_dir, summary)
    return {"state": "succeeded"}
