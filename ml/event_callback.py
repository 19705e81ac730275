"""The Keras callback a training run reports through: events, the best epoch's checkpoint,
cancelling.

Keras is imported by :func:`make_event_callback` only, so importing this module stays cheap
(``ml`` imports without TensorFlow); the callback's logic lives in a plain class the Keras
class is made from there.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml import events
from ml.device import gpu_load
from ml.disk import is_disk_full, write_files
from ml.events import BATCH_EVENTS_PER_S, EventSink
from ml.insights import overfitting
from ml.panel import Panel
from ml.recipes import confusion_from_logs

BEST_FILE = "best.json"  # the checkpoint's epoch and score, so a resumed run keeps its best
# At equal validation accuracy, a later epoch replaces the kept one only if its validation
# loss is lower by more than this (so noise in the loss does not move the pick).
LOSS_TIE_MIN_DELTA = 1e-3


def _lr(model) -> float:
    """The optimizer's current learning rate, read from the optimizer itself."""
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def is_better_epoch(val_accuracy: float, val_loss: float | None,
                    best_accuracy: float | None, best_loss: float | None) -> bool:
    """Whether an epoch beats the kept one: higher accuracy, or the same and clearly lower loss.

    Small validation sets saturate: with 8 photos, 8/8 after one epoch would otherwise keep
    that barely trained model over later epochs that are right with far more confidence.
    """
    if best_accuracy is None or val_accuracy > best_accuracy:
        return True
    return (val_accuracy == best_accuracy and val_loss is not None
            and (best_loss is None or val_loss < best_loss - LOSS_TIE_MIN_DELTA))


def dump_json(path: Path, data: dict[str, Any]) -> None:
    """The lab's JSON files as written: best.json here, the model card in ``ml.train``."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def make_event_callback(record: EventSink, *, steps: int, batch_size: int,
                        train_count: int, should_stop: Callable[[], bool] | None,
                        checkpoint_path: Path, early_stopping, report_lr_cuts: bool,
                        panel: Panel | None = None,
                        first_step_done: Callable[[], None] | None = None):
    """A Keras callback that turns training progress into events and checks for cancel."""
    import keras

    class EventCallback(_EventReporter, keras.callbacks.Callback):
        pass

    return EventCallback(record, steps=steps, batch_size=batch_size, train_count=train_count,
                         should_stop=should_stop, checkpoint_path=checkpoint_path,
                         early_stopping=early_stopping, report_lr_cuts=report_lr_cuts,
                         panel=panel, first_step_done=first_step_done)


class _EventReporter:
    """What the event callback does, mixed into ``keras.callbacks.Callback`` (which gives it
    ``self.model``) by :func:`make_event_callback`."""

    def __init__(self, record: EventSink, *, steps: int, batch_size: int, train_count: int,
                 should_stop: Callable[[], bool] | None, checkpoint_path: Path,
                 early_stopping, report_lr_cuts: bool, panel: Panel | None,
                 first_step_done: Callable[[], None] | None):
        super().__init__()
        self._record = record
        self._steps = steps
        self._batch_size = batch_size
        self._train_count = train_count
        self._should_stop = should_stop
        self._checkpoint_path = checkpoint_path
        self._early_stopping = early_stopping
        self._report_lr_cuts = report_lr_cuts
        self._panel = panel
        self._first_step_done = first_step_done
        self.cancelled = False
        self.best_val_accuracy: float | None = None
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.early_stopped_at: int | None = None
        # What could not be saved because the disk is full (the run stopped there).
        self.unsaved: str | None = None
        # The size of the photos being trained on: set per fit (progressive resizing).
        self.image_size: int | None = None

    def restore_best(self) -> None:
        """The kept epoch of the run this one resumes, from the file beside its checkpoint."""
        best = json.loads(self._checkpoint_path.with_name(BEST_FILE).read_text())
        self.best_epoch, self.best_val_accuracy = best["epoch"], best["val_accuracy"]
        self.best_val_loss = best.get("val_loss")  # absent in checkpoints from before

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_no = epoch + 1
        self._t0 = time.monotonic()
        self._last_emit = 0.0
        self._lr_begin = _lr(self.model)
        self._steps_done = 0
        self._train_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = batch + 1
        if step == 1 and self._first_step_done is not None:
            self._first_step_done()
        self._steps_done = step
        now = time.monotonic()
        self._train_seconds = now - self._t0
        # Throttled, but always the first and last step so every epoch shows up.
        if step in (1, self._steps) or now - self._last_emit >= 1.0 / BATCH_EVENTS_PER_S:
            self._last_emit = now
            seen = min(step * self._batch_size, self._train_count)
            self._record(events.batch(
                epoch=self._epoch_no, step=step, steps=self._steps, loss=logs.get("loss"),
                accuracy=logs.get("accuracy"), lr=_lr(self.model),
                images_per_s=seen / max(now - self._t0, 1e-9)))
        if self._should_stop is not None and self._should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        epoch_no = epoch + 1
        self._report_epoch(epoch_no, logs)
        self._keep_if_best(epoch_no, logs.get("val_accuracy"), logs.get("val_loss"))
        self._report_schedule(epoch, epoch_no)

    def _report_epoch(self, epoch_no: int, logs: dict[str, Any]) -> None:
        """The epoch's event (and its row of the history), then the panel's scores."""
        row = {
            "epoch": epoch_no,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "lr": self._lr_begin,
            "seconds": time.monotonic() - self._t0,
            # training only, without validation: the figure that compares recipes
            "images_per_s": min(self._steps_done * self._batch_size, self._train_count)
            / max(self._train_seconds, 1e-9),
            "image_size": self.image_size,
        }
        partial = self.cancelled and self._steps_done < self._steps
        # Said only by an epoch that shows it, tagged with the epoch the finding began.
        found = overfitting([*self.history, row])
        said = found if found is not None and found.epoch == epoch_no else None
        self._record(events.epoch(**row, partial=partial, gpu=gpu_load(),
                                  confusion=confusion_from_logs(logs),
                                  insight=said and said.text,
                                  insight_since=said and said.since))
        self.history.append(row)
        if self._panel is not None and len(self._panel):
            self._record(events.panel(epoch=epoch_no, items=self._panel.score(self.model)))

    def _keep_if_best(self, epoch_no: int, val_acc: float | None,
                      val_loss: float | None) -> None:
        """Checkpoint the epoch if it beats the kept one; a full disk stops the run instead."""
        if val_acc is None or not is_better_epoch(
                val_acc, val_loss, self.best_val_accuracy, self.best_val_loss):
            return
        best = {"epoch": epoch_no, "val_accuracy": float(val_acc),
                "val_loss": None if val_loss is None else float(val_loss)}
        try:
            # On disk, so a killed run still leaves its best epoch behind; both files
            # renamed into place once whole, so a full disk leaves the previous best
            # checkpoint as it was.
            write_files((self._checkpoint_path, self.model.save_weights),
                        (self._checkpoint_path.with_name(BEST_FILE),
                         lambda path: dump_json(path, best)))
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.unsaved = f"epoch {epoch_no}'s checkpoint"
            self.model.stop_training = True  # nothing later could be saved either
        else:
            self.best_val_accuracy = best["val_accuracy"]
            self.best_val_loss = best["val_loss"]
            self.best_epoch = epoch_no
            self._record(events.checkpoint(epoch=epoch_no, val_accuracy=float(val_acc)))
        if self.unsaved is not None:
            # h5py holds the failed file open until its exception is garbage: close it
            # now, while the space its truncation gave back is there.
            gc.collect()

    def _report_schedule(self, epoch: int, epoch_no: int) -> None:
        """A plateau cut of the learning rate, and early stopping, as they happened."""
        new_lr = _lr(self.model)
        # A fixed schedule lowers the rate every step: only plateau cuts are news.
        if self._report_lr_cuts and new_lr < self._lr_begin * (1 - 1e-6):
            self._record(events.lr_reduced(epoch=epoch_no, old_lr=self._lr_begin,
                                           new_lr=new_lr))
        if self._early_stopping is not None and self._early_stopping.stopped_epoch == epoch \
                and self.model.stop_training and not self.cancelled:
            self.early_stopped_at = epoch_no
            self._record(events.early_stopped(epoch=epoch_no, best_epoch=self.best_epoch))
