"""The Celery app: ``celery -A worker.celery_app worker --concurrency 1`` per GPU.

Broker and result backend are ``REDIS_URL``. Training runs are long, so a message is
acknowledged only when its run has ended (``acks_late``), each worker reserves one message at
a time, and the visibility timeout is longer than any run (Redis would otherwise hand the same
message to a second worker while the first still trains). The task itself is idempotent: it
only trains a run it can move from ``queued`` to ``running``.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from worker.settings import Settings, load_settings

log = logging.getLogger(__name__)

TRAIN_TASK = "lab.train"
PRESENCE_PREFIX = "lab:worker:"
PRESENCE_TTL_S = 30
LONGEST_RUN_S = 7 * 24 * 3600
SHUTDOWN_REASON = "stopped early because its worker was shut down; the best epoch so far is kept"

settings = load_settings()

app = Celery("kitten_puppy_lab", broker=settings.redis_url, backend=settings.redis_url,
             include=["worker.tasks"])
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,  # one run at a time per worker (per GPU)
    # A fresh process per run: TensorFlow never gives GPU memory back to the OS.
    worker_max_tasks_per_child=1,
    broker_transport_options={"visibility_timeout": LONGEST_RUN_S},
    result_backend_transport_options={"visibility_timeout": LONGEST_RUN_S},
    result_expires=7 * 24 * 3600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # the run store keeps every outcome
    broker_connection_retry_on_startup=True,
    # A Redis blip must not kill a run that is hours in: keep running tasks on connection loss.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # Launching a run when Redis is down should fail fast with a clear message, not hang.
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                               "interval_max": 0.5},
    broker_connection_timeout=3,
    worker_hijack_root_logger=False,
)


def _announce(nodename: str, stop: threading.Event) -> None:
    """Keep a short-lived Redis key saying this worker is alive, for the dashboard."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3)
    info = json.dumps({"name": nodename, "since": time.time()})
    while not stop.is_set():
        try:
            client.set(PRESENCE_PREFIX + nodename, info, ex=PRESENCE_TTL_S)
        except Exception as exc:  # Redis down: the worker itself copes; say so once a cycle
            log.warning("cannot announce worker %s: %s", nodename, exc)
        stop.wait(PRESENCE_TTL_S / 3)
    try:
        client.delete(PRESENCE_PREFIX + nodename)
    except Exception:
        pass


_stop_announcing = threading.Event()


@worker_ready.connect
def _on_worker_ready(sender=None, **_kw) -> None:
    """Clean up after a previous life of this worker and re-queue runs Redis may have lost."""
    from worker.tasks import get_publisher, get_store

    global _nodename
    nodename = _nodename = sender.hostname
    store = get_store()
    # Runs this worker name was training died with its previous process.
    for ev in store.reap_lost(worker=nodename) + store.reap_lost(
            older_than_s=settings.lost_after_s):
        get_publisher().publish(ev)
    # A queued run whose message was lost (Redis restarted without saving) would wait
    # forever; sending it again is harmless because only one message can claim a run.
    for run_id in store.queued_ids():
        queue_run(run_id)
    threading.Thread(target=_announce, args=(nodename, _stop_announcing), daemon=True,
                     name="lab-presence").start()
    log.info("worker %s ready: data %s, models %s", nodename, settings.data_dir,
             settings.models_dir)


_nodename: str | None = None


@worker_shutting_down.connect
def _on_worker_shutting_down(**_kw) -> None:
    """A warm shutdown (SIGTERM, Ctrl-C) would wait for the run to end, hours maybe: ask it
    to stop at the next batch instead, so it ends ``cancelled`` with its best weights."""
    from worker.tasks import get_store

    if _nodename is None:
        return
    try:
        for run_id in get_store().running_ids(worker=_nodename):
            get_store().request_cancel(run_id, reason=SHUTDOWN_REASON)
            log.warning("run %s: stopping it because the worker is shutting down", run_id)
    except Exception as exc:
        log.warning("could not stop the current run before shutting down: %s", exc)


@worker_shutdown.connect
def _on_worker_shutdown(**_kw) -> None:
    _stop_announcing.set()


def configure(new: Settings) -> None:
    """Point this process's Celery app at another Redis (the web app's settings win)."""
    global settings
    settings = new
    app.conf.update(broker_url=new.redis_url, result_backend=new.redis_url)


def queue_run(run_id: str) -> None:
    """Put a run's training task on the queue; raises (within a second) when Redis is down."""
    # ignore_result: otherwise the send first subscribes to the result backend, which retries
    # for ~19 s when Redis is down. send_task does not take it from task_ignore_result.
    app.send_task(TRAIN_TASK, args=[run_id], ignore_result=True)


def live_workers() -> list[dict]:
    """Workers that announced themselves in the last ``PRESENCE_TTL_S`` seconds."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=1,
                                  socket_connect_timeout=1)
    found = []
    for key in client.scan_iter(match=PRESENCE_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            found.append(json.loads(raw))
    return sorted(found, key=lambda w: w["name"])
