"""The one written-down schema of training events.

Every event is a plain JSON-serialisable dict ``{"run_id", "seq", "type", "ts", ...}``.
``seq`` counts from 1 within a run with no gaps, so a viewer can replay stored events and
then continue with live ones without duplicates. ``ts`` is Unix time in seconds.

Types and their fields (beyond the four common ones):

- ``run_queued``     config
- ``run_started``    config, epochs, steps_per_epoch, train_count, val_count, recipe, image_size,
                     learning_rate, schedule, label_smoothing, weight_decay, precision ("float32" |
                     "bfloat16", what "auto" resolved to on the worker)
- ``batch``          epoch (1-based), step (1-based), steps, loss, accuracy, lr, images_per_s,
                     aggregation="running_mean" (Keras reports batch metrics as running means
                     over the epoch so far, not the loss of that one batch). Throttled: at most
                     ``BATCH_EVENTS_PER_S`` a second, plus the first and last step of each epoch.
- ``epoch``          epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds (with
                     validation), images_per_s (training part only), partial (cancelled
                     mid-epoch)
- ``lr_reduced``     epoch, old_lr, new_lr (reduce-on-plateau cuts only; under a cosine or
                     one-cycle schedule the ``lr`` of batch and epoch events traces the curve)
- ``early_stopped``  epoch, best_epoch
- ``checkpoint``     epoch, val_accuracy
- ``run_finished``   status ("succeeded" | "cancelled" | "failed"), best_val_accuracy,
                     best_epoch, model_id, error (None unless failed)
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
EventHandler = Callable[[Event], None]

EVENT_TYPES = (
    "run_queued",
    "run_started",
    "batch",
    "epoch",
    "lr_reduced",
    "early_stopped",
    "checkpoint",
    "run_finished",
)
RUN_STATUSES = ("succeeded", "cancelled", "failed")
BATCH_EVENTS_PER_S = 5.0


def _plain(value: Any) -> Any:
    """Turn numpy scalars and NaN into JSON-safe Python values."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class EventEmitter:
    """Stamps events with run id, sequence number and time, and hands them to a handler."""

    def __init__(self, run_id: str, on_event: EventHandler | None = None, start_seq: int = 0):
        self.run_id = run_id
        self._on_event = on_event
        self._seq = itertools.count(start_seq + 1)
        self._lock = threading.Lock()

    def emit(self, type_: str, **fields: Any) -> Event:
        """Build one event and pass it on; returns the event."""
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        with self._lock:
            event: Event = {"run_id": self.run_id, "seq": next(self._seq), "type": type_,
                            "ts": time.time()}
            event.update(_plain(fields))
            if self._on_event is not None:
                self._on_event(event)
        return event
