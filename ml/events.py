"""The one written-down schema of training events, and one builder per event type.

Every event is a plain JSON-serialisable dict ``{"run_id", "seq", "type", "ts", ...}``.
``seq`` counts from 1 within a run with no gaps, so a viewer can replay stored events and
then continue with live ones without duplicates. ``ts`` is Unix time in seconds.

Events are made in two steps, so that exactly one place numbers them: a builder below
returns the *body* (``type`` and its fields), and whoever records the run stamps it with
``run_id``, ``seq`` and ``ts`` (:func:`stamp`): :class:`LocalLog` in-process for the command
line and tests, the run store (``core.store``) in the lab. No other code builds an event.

Types and their fields (beyond the four common ones):

- ``run_queued``     config
- ``run_started``    config, epochs, steps_per_epoch, train_count, val_count, skipped_count,
                     recipe, image_size, learning_rate, schedule, label_smoothing,
                     weight_decay, precision ("float32" | "bfloat16" | "float16", what "auto"
                     resolved to), device (what it trains on: ``ml.device.describe_device``),
                     photo_cache (None: decoded as it goes; else state "built" | "reused" and
                     seconds it took: ``ml.photo_cache``)
- ``batch``          epoch (1-based), step (1-based), steps, loss, accuracy, lr, images_per_s,
                     aggregation="running_mean" (Keras reports batch metrics as running means
                     over the epoch so far, not the loss of that one batch). Throttled: at most
                     ``BATCH_EVENTS_PER_S`` a second, plus the first and last step of each epoch.
- ``epoch``          epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds (with
                     validation), images_per_s (training part only), partial (cancelled
                     mid-epoch), gpu (None on a CPU; else utilisation_pct, memory_used_mb),
                     confusion (this epoch's validation pass: [[dog→dog, dog→cat],
                     [cat→dog, cat→cat]], rows the truth; None if not measured), insight (a
                     plain sentence when this epoch shows overfitting: ``ml.insights``),
                     insight_since (the epoch that finding began: a later epoch that shows it
                     again carries the same one with an updated sentence, so a viewer keeps
                     one entry per finding; None without an insight, absent in runs from
                     before it was recorded, whose insight says each start anew),
                     image_size (the size of the photos this epoch trained on: smaller than
                     the run's for progressive resizing's first epochs; validation is always
                     at the run's size; None in runs from before it was recorded)
- ``panel``          epoch, items: [{image (path relative to the dataset folder), label,
                     cat_probability}] — the run's fixed panel of validation photos scored
                     after the epoch (``ml.panel``), the same photos every epoch
- ``lr_reduced``     epoch, old_lr, new_lr (reduce-on-plateau cuts only; under a cosine or
                     one-cycle schedule the ``lr`` of batch and epoch events traces the curve)
- ``early_stopped``  epoch, best_epoch
- ``checkpoint``     epoch, val_accuracy
- ``run_finished``   status ("succeeded" | "cancelled" | "failed"), best_val_accuracy,
                     best_epoch, model_id, error (None unless failed, or a cancelled run's
                     reason), cancelled_by (who cancelled it: a name, "the instructor")
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Body = dict[str, Any]  # an event before it is stamped: "type" and the type's fields
EventHandler = Callable[[Event], None]
# Records one event body for a run and returns it stamped (see LocalLog, core.store).
EventSink = Callable[[Body], Event]

EVENT_TYPES = (
    "run_queued",
    "run_started",
    "batch",
    "epoch",
    "panel",
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


def _body(type_: str, **fields: Any) -> Body:
    return {"type": type_, **_plain(fields)}


# -- one builder per type -------------------------------------------------------------------


def run_queued(config: dict[str, Any]) -> Body:
    """A run was stored and put on the queue."""
    return _body("run_queued", config=config)


def run_started(*, config: dict[str, Any], recipe: str, image_size: int,
                learning_rate: float, epochs: int, steps_per_epoch: int, train_count: int,
                val_count: int, skipped_count: int, schedule: str, label_smoothing: float,
                weight_decay: float, precision: str, device: dict[str, Any] | None = None,
                photo_cache: dict[str, Any] | None = None) -> Body:
    """Training began: what it trains on and how."""
    return _body("run_started", config=config, recipe=recipe, image_size=image_size,
                 learning_rate=learning_rate, epochs=epochs, steps_per_epoch=steps_per_epoch,
                 train_count=train_count, val_count=val_count, skipped_count=skipped_count,
                 schedule=schedule, label_smoothing=label_smoothing,
                 weight_decay=weight_decay, precision=precision, device=device,
                 photo_cache=photo_cache)


def batch(*, epoch: int, step: int, steps: int, loss: float | None, accuracy: float | None,
          lr: float, images_per_s: float) -> Body:
    """One (throttled) training step, with Keras's running means over the epoch so far."""
    return _body("batch", epoch=epoch, step=step, steps=steps, loss=loss, accuracy=accuracy,
                 lr=lr, images_per_s=images_per_s, aggregation="running_mean")


def epoch(*, epoch: int, loss: float | None, accuracy: float | None, val_loss: float | None,
          val_accuracy: float | None, lr: float, seconds: float, images_per_s: float,
          partial: bool = False, gpu: dict[str, Any] | None = None,
          confusion: list[list[int]] | None = None, insight: str | None = None,
          insight_since: int | None = None, image_size: int | None = None) -> Body:
    """One finished epoch, with its validation pass (and how busy the GPU is, if any)."""
    return _body("epoch", epoch=epoch, loss=loss, accuracy=accuracy, val_loss=val_loss,
                 val_accuracy=val_accuracy, lr=lr, seconds=seconds, images_per_s=images_per_s,
                 partial=partial, gpu=gpu, confusion=confusion, insight=insight,
                 insight_since=insight_since, image_size=image_size)


def panel(*, epoch: int, items: list[dict[str, Any]]) -> Body:
    """The run's panel of validation photos, as the model judged them after this epoch."""
    return _body("panel", epoch=epoch, items=items)


def lr_reduced(*, epoch: int, old_lr: float, new_lr: float) -> Body:
    """Reduce-on-plateau cut the learning rate."""
    return _body("lr_reduced", epoch=epoch, old_lr=old_lr, new_lr=new_lr)


def early_stopped(*, epoch: int, best_epoch: int | None) -> Body:
    """Early stopping ended the run."""
    return _body("early_stopped", epoch=epoch, best_epoch=best_epoch)


def checkpoint(*, epoch: int, val_accuracy: float) -> Body:
    """A new best epoch was saved."""
    return _body("checkpoint", epoch=epoch, val_accuracy=val_accuracy)


def run_finished(status: str, *, best_val_accuracy: float | None = None,
                 best_epoch: int | None = None, model_id: str | None = None,
                 error: str | None = None, cancelled_by: str | None = None) -> Body:
    """The run ended; always its last event."""
    if status not in RUN_STATUSES:
        raise ValueError(f"not a finished status: {status!r}")
    return _body("run_finished", status=status, best_val_accuracy=best_val_accuracy,
                 best_epoch=best_epoch, model_id=model_id, error=error,
                 cancelled_by=cancelled_by)


# -- stamping -------------------------------------------------------------------------------


def stamp(body: Body, run_id: str, seq: int, ts: float | None = None) -> Event:
    """The stored and sent form of an event body: run id, sequence number and time first."""
    if body.get("type") not in EVENT_TYPES:
        raise ValueError(f"unknown event type {body.get('type')!r}")
    rest = {k: v for k, v in body.items() if k != "type"}
    return {"run_id": run_id, "seq": int(seq), "type": body["type"],
            "ts": time.time() if ts is None else ts, **rest}


class LocalLog:
    """An event sink that numbers one run's events in this process and hands each to a
    handler: for the command line, benchmarks and tests (the lab numbers them in its store)."""

    def __init__(self, run_id: str, on_event: EventHandler | None = None, start_seq: int = 0):
        self.run_id = run_id
        self._on_event = on_event
        self._seq = itertools.count(start_seq + 1)
        self._lock = threading.Lock()

    def __call__(self, body: Body) -> Event:
        with self._lock:
            ev = stamp(body, self.run_id, next(self._seq))
            if self._on_event is not None:
                self._on_event(ev)
        return ev
