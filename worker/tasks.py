"""The training task: one run from the run store through ``ml.train``, events stored and streamed.

TensorFlow is imported only inside the task (in the pool's child process), never when the
worker or the web process imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ml.errors import LabError
from ml.events import Event
from worker.celery_app import TRAIN_TASK, app, settings
from worker.live import Publisher
from worker.store import RunStore

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5

_store: RunStore | None = None
_store_pid: int | None = None
_publisher = Publisher(settings)


def get_store() -> RunStore:
    """This process's run store (re-created after a fork: connections must not be shared)."""
    global _store, _store_pid
    if _store is None or _store_pid != os.getpid():
        _store = RunStore(settings.database_url)
        _store_pid = os.getpid()
    return _store


def get_publisher() -> Publisher:
    return _publisher


class _RunContext:
    """What one run needs while it trains: event recording, heartbeat, cancel polling."""

    def __init__(self, store: RunStore, run_id: str):
        self.store = store
        self.run_id = run_id
        self.out_dir = settings.models_dir / run_id
        self._last_poll = 0.0
        self._cancel = False
        self._stop_heartbeat = threading.Event()

    def on_event(self, ev: Event) -> None:
        # Stored first, then published: a viewer can always fill a gap from the store.
        self.store.add_event(ev)
        kind = ev["type"]
        if kind == "epoch":
            self.store.record_progress(self.run_id, epochs_done=ev["epoch"])
        elif kind == "checkpoint":
            self.store.record_progress(self.run_id, best_val_accuracy=ev["val_accuracy"])
        elif kind == "run_finished":
            self._finish(ev)
        _publisher.publish(ev)

    def _finish(self, ev: Event) -> None:
        # The status is final before viewers hear of the end, so a page that reloads on
        # run_finished sees it.
        summary = None
        model_path = None
        if ev["status"] in ("succeeded", "cancelled"):
            from ml.model_io import read_card

            card = read_card(self.out_dir)
            summary = {k: v for k, v in card.items() if k != "history"} or None
            if (self.out_dir / "model.keras").is_file():
                model_path = f"{self.run_id}/model.keras"
        self.store.finish(self.run_id, ev["status"], summary=summary, model_path=model_path,
                          error=ev.get("error"))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_poll >= CANCEL_POLL_S:
            self._last_poll = now
            try:
                self._cancel = self.store.cancel_requested(self.run_id)
            except Exception as exc:  # the store hiccupped: keep training, ask again later
                log.warning("run %s: cannot read the cancel flag: %s", self.run_id, exc)
        return self._cancel

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(settings.heartbeat_s):
            try:
                self.store.heartbeat(self.run_id)
            except Exception as exc:
                log.warning("run %s: heartbeat not written: %s", self.run_id, exc)

    def __enter__(self) -> _RunContext:
        threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{self.run_id}").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop_heartbeat.set()


@app.task(name=TRAIN_TASK, bind=True, acks_late=True)
def train_run(self, run_id: str) -> dict[str, Any]:
    """Train one queued run. Returns a small status dict (the run store holds the rest)."""
    store = get_store()
    run = store.claim(run_id, worker=self.request.hostname or "worker")
    if run is None:
        # Cancelled while queued, finished already, or a duplicate message: nothing to do.
        current = store.get_run(run_id)
        log.info("run %s not started: it is %s", run_id,
                 current["status"] if current else "not in the run store")
        return {"run_id": run_id, "status": current["status"] if current else "missing"}

    # The heartbeat starts before TensorFlow is imported: on a busy machine the import alone
    # can outlast LAB_RUN_LOST_AFTER_S, and the web process would reap the run as lost.
    with _RunContext(store, run_id) as ctx:
        from ml.tf_env import import_tensorflow_quietly
        from ml.train import train

        import_tensorflow_quietly()
        log.info("run %s: training %s on %s", run_id, run["config"], settings.data_dir)
        try:
            summary = train(run["config"], settings.data_dir, ctx.out_dir,
                            on_event=ctx.on_event, should_stop=ctx.should_stop, run_id=run_id,
                            start_seq=store.last_seq(run_id))
        except LabError as exc:  # a problem a person can fix: already reported as the error
            log.warning("run %s failed: %s", run_id, exc)
            return {"run_id": run_id, "status": "failed", "error": str(exc)}
        except Exception as exc:
            log.exception("run %s failed", run_id)
            return {"run_id": run_id, "status": "failed", "error": str(exc)}
    log.info("run %s %s: best val accuracy %s", run_id, summary["status"],
             summary["metrics"]["best_val_accuracy"])
    return {"run_id": run_id, "status": summary["status"]}


DOWNLOAD_TASK = "lab.download_dataset"
PROGRESS_EVERY_S = 0.5


@app.task(name=DOWNLOAD_TASK, bind=True, acks_late=True)
def download_dataset_task(self, source: str = "auto") -> dict[str, Any]:
    """Download the dataset into ``LAB_DATA_DIR``, reporting progress for the Dataset tab."""
    from ml.fetch import download_dataset
    from worker import downloads

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

    url = os.environ.get("LAB_DATASET_URL") or None
    try:
        summary = download_dataset(settings.data_dir, source=source, url=url,
                                   on_progress=on_progress, should_stop=should_stop)
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
