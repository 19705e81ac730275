"""The Celery app: ``celery -A worker.celery_app worker --concurrency 1``, one per run that
may train at once (``make run`` starts ``LAB_WORKERS`` of them).

Broker and result backend are ``REDIS_URL``. Training runs are long, so a message is
acknowledged only when its run has ended (``acks_late``), each worker reserves one message at
a time, and the visibility timeout is longer than any run (Redis would otherwise hand the same
message to a second worker while the first still trains). The task itself is idempotent: it
only trains a run it can move from ``queued`` to ``running``.

The pool process imports and sets up TensorFlow as soon as it starts, before any run asks
for it. On a CPU machine it then trains run after run (the import and the process start are
paid once, not per run; each new model still traces its own graph); on a GPU machine each
run gets a fresh process, since TensorFlow never gives GPU memory back and the next run (or
another worker sharing the GPU) needs it.

Built the way Flask's Celery example builds its app (``celery_init_app``): one function,
:func:`create_celery_app`, makes it from the settings with its whole configuration in one
dict (:func:`celery_config`), and the tasks (``worker.tasks``) are ``shared_task`` ones, so
that module never imports this one. Importing this module probes nothing (the web process
imports it to send tasks): a worker looks at its device when it starts (``celeryd_init``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from core.settings import Settings
from ml.device import describe_device, device_text
from worker import runtime
from worker.runtime import DOWNLOAD_TASK, TRAIN_TASK

log = logging.getLogger(__name__)

PRESENCE_PREFIX = "lab:worker:"
PRESENCE_TTL_S = 30
LONGEST_RUN_S = 7 * 24 * 3600
# A reused CPU pool process is replaced after a run that leaves it bigger than this (KiB, as
# Celery counts): a run's memory mostly goes back, but a fresh process costs only seconds.
MAX_MEMORY_PER_PROCESS_KIB = 6 * 1024 * 1024


def process_limits(on_gpu: bool) -> dict[str, int | None]:
    """How long a pool process lives: on a GPU one run (TensorFlow never gives GPU memory
    back); on a CPU it is kept (docs/BENCHMARKS.md, "Fixed cost per run") until a run leaves
    it bigger than MAX_MEMORY_PER_PROCESS_KIB."""
    return {"worker_max_tasks_per_child": 1 if on_gpu else None,
            "worker_max_memory_per_child": None if on_gpu else MAX_MEMORY_PER_PROCESS_KIB}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app's whole configuration (what Flask's example keeps in ``app.config["CELERY"]``);
    a CPU machine's process limits until a worker starts and sees its device."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,  # one run at a time per worker
        **process_limits(on_gpu=False),
        "broker_transport_options": {"visibility_timeout": LONGEST_RUN_S},
        "result_backend_transport_options": {"visibility_timeout": LONGEST_RUN_S},
        "result_expires": 7 * 24 * 3600,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the run store keeps every outcome
        "broker_connection_retry_on_startup": True,
        # A Redis blip must not kill a run that is hours in: keep running tasks on connection
        # loss.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Launching a run when Redis is down should fail fast with a clear message, not hang.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0,
                                      "interval_step": 0.2, "interval_max": 0.5},
        "broker_connection_timeout": 3,
        "worker_hijack_root_logger": False,
    }


def create_celery_app(settings: Settings) -> Celery:
    """The lab's Celery app, configured from ``settings``.

    Flask's ``celery_init_app`` without the Flask app: its ``FlaskTask`` exists to give tasks
    an app context, and the lab's tasks need none (they reach the run store through
    ``worker.runtime``).
    """
    celery = Celery("kitten_puppy_lab", include=["worker.tasks"])
    celery.config_from_object(celery_config(settings))
    celery.set_default()
    return celery


app = create_celery_app(runtime.settings())


@celeryd_init.connect
def _on_worker_init(conf=None, **_kw) -> None:
    """The worker is starting (before it reads its pool's limits): fit them to its device."""
    conf.update(process_limits(on_gpu=describe_device()["kind"] == "gpu"))


def _announce(nodename: str, stop: threading.Event) -> None:
    """Keep a short-lived Redis key saying this worker is alive and what it trains on (the
    GPU's memory and load as of now), for the dashboard."""
    import redis

    client = redis.Redis.from_url(runtime.settings().redis_url, socket_timeout=3)
    since = time.time()
    while not stop.is_set():
        info = json.dumps({"name": nodename, "since": since, "device": describe_device()})
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


@worker_process_init.connect
def _on_worker_process_init(**_kw) -> None:
    """Import TensorFlow in the new pool process while it waits for a run (seconds on a
    busy machine), in a thread: Celery wants this signal handled within seconds."""
    def prepare() -> None:
        try:
            runtime.prepare_tensorflow()
        except Exception as exc:  # the run will meet it again and report it properly
            log.warning("could not set up TensorFlow ahead of the first run: %s", exc)

    threading.Thread(target=prepare, daemon=True, name="lab-tf-preload").start()


@worker_ready.connect
def _on_worker_ready(sender=None, **_kw) -> None:
    """Clean up after a previous life of this worker and re-queue runs Redis may have lost."""
    global _nodename
    nodename = _nodename = sender.hostname
    service = runtime.service()
    # Runs this worker name was training died with its previous process: fail them now
    # rather than after the heartbeat timeout.
    service.reap_lost(worker=nodename)
    # A queued run whose message was lost (Redis restarted without saving) would wait
    # forever: send the ones missing (a spare would only find nothing to claim).
    try:
        service.heal_queue(waiting_tasks)
    except Exception as exc:  # Redis is away: the web process heals the queue later
        log.warning("could not check the queue for lost tasks: %s", exc)
    threading.Thread(target=_announce, args=(nodename, _stop_announcing), daemon=True,
                     name="lab-presence").start()
    log.info("worker %s ready on %s: data %s, models %s", nodename,
             device_text(describe_device()), runtime.settings().data_dir,
             runtime.settings().models_dir)


_nodename: str | None = None


@worker_shutting_down.connect
def _on_worker_shutting_down(**_kw) -> None:
    """A warm shutdown (SIGTERM, Ctrl-C) would wait for the run to end, hours maybe: ask it
    to stop at the next batch instead, so it ends ``cancelled`` with its best weights."""
    if _nodename is None:
        return
    try:
        runtime.service().stop_for_shutdown(_nodename)
    except Exception as exc:
        log.warning("could not stop the current run before shutting down: %s", exc)


@worker_shutdown.connect
def _on_worker_shutdown(**_kw) -> None:
    _stop_announcing.set()


def configure(new: Settings) -> None:
    """Point this process's Celery app at another Redis (the web app's settings win)."""
    runtime.configure(new)
    app.conf.update(celery_config(new))


def queue_training() -> None:
    """One "train the next queued run" task on the queue; raises (within a second) when
    Redis is down."""
    # ignore_result: otherwise the send first subscribes to the result backend, which retries
    # for ~19 s when Redis is down. send_task does not take it from task_ignore_result.
    app.send_task(TRAIN_TASK, ignore_result=True)


runtime.use_queue(queue_training)


def queue_download(source: str) -> None:
    """The dataset download on the queue."""
    app.send_task(DOWNLOAD_TASK, kwargs={"source": source}, ignore_result=True)


def waiting_tasks() -> int:
    """Tasks on the queue that no worker has taken yet."""
    import redis

    client = redis.Redis.from_url(runtime.settings().redis_url, socket_timeout=2,
                                  socket_connect_timeout=2)
    queue = app.conf.task_default_queue or "celery"
    return int(client.llen(queue))


def live_workers() -> list[dict]:
    """Workers that announced themselves in the last ``PRESENCE_TTL_S`` seconds."""
    import redis

    client = redis.Redis.from_url(runtime.settings().redis_url, socket_timeout=1,
                                  socket_connect_timeout=1)
    found = []
    for key in client.scan_iter(match=PRESENCE_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            found.append(json.loads(raw))
    return sorted(found, key=lambda w: w["name"])
