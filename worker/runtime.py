"""What a worker process's Celery signals and tasks share: its settings and its runs service.

Kept apart from the Celery app (``worker.celery_app``) so the tasks never import the app and
the app never imports the tasks: no import cycle. The service is built lazily and again after
a fork, since database and Redis connections must not cross into a pool's child process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from core.bus import Publisher
from core.run_service import RunService
from core.settings import Settings, load_settings
from core.store import RunStore

TRAIN_TASK = "lab.train"
DOWNLOAD_TASK = "lab.download_dataset"

_settings = load_settings()
_service: RunService | None = None
_service_pid: int | None = None
_enqueue: Callable[[], None] | None = None


def settings() -> Settings:
    """This process's settings (from the environment unless :func:`configure` set others)."""
    return _settings


def configure(new: Settings) -> None:
    """Use other settings from now on (the web process passes its own)."""
    global _settings, _service
    _settings, _service = new, None


def use_queue(enqueue: Callable[[], None]) -> None:
    """How this process puts a training task on the queue (the Celery app says, when it is
    built: the tasks never import it)."""
    global _enqueue
    _enqueue = enqueue


def service() -> RunService:
    """This process's runs service."""
    global _service, _service_pid
    if _service is None or _service_pid != os.getpid():
        s = _settings
        _service = RunService(RunStore(s.database_url), models_dir=s.models_dir,
                              bus=Publisher(s), enqueue=_enqueue,
                              lost_after_s=s.lost_after_s)
        _service_pid = os.getpid()
    return _service


def _drop_retracing_warning(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def prepare_tensorflow() -> None:
    """TensorFlow imported and set up for this worker: its share of the CPU threads and of
    the GPU's memory. Once per process (the pool process runs it ahead of the first run,
    see ``worker.celery_app``); later calls return at once."""
    from ml.tf_env import import_tensorflow_quietly, limit_threads, share_gpus

    settings = _settings
    import_tensorflow_quietly()
    # Each run builds a new model, so its first steps trace anew: in a reused process
    # TensorFlow then warns of "excessive" retracing, which is expected here.
    logging.getLogger("tensorflow").addFilter(_drop_retracing_warning)
    limit_threads(settings.train_threads)
    share_gpus(settings.gpu_memory_mb or None)
