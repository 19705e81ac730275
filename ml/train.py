"""``train()``: one training run from a config to a saved model, reporting events as it goes."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml import events
from ml.config import TrainConfig, parse_config
from ml.data import CLASS_NAMES, require_photos, scan, split_frame, stratified_sample
from ml.device import describe_device, gpu_load
from ml.disk import (
    check_free_space,
    discard,
    disk_needed,
    free_bytes,
    full_message,
    human_size,
    is_disk_full,
    tmp_path,
    write_files,
    write_making_room,
)
from ml.errors import ConfigError, DatasetError, DiskFullError, LabError
from ml.events import BATCH_EVENTS_PER_S, EventHandler, EventSink, LocalLog
from ml.insights import overfitting
from ml.model_io import CARD_FILE, MODEL_FILE
from ml.panel import Panel, choose_panel
from ml.recipes import build_model, confusion_from_logs, get_recipe

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "best.weights.h5"
BEST_FILE = "best.json"  # the checkpoint's epoch and score, so a resumed run keeps its best
BACKUP_FILE = "latest.weights.h5"  # what Keras's BackupAndRestore writes in resume_dir
MAX_MISCLASSIFIED = 48
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


def _make_event_callback(record: EventSink, *, steps: int, batch_size: int,
                         train_count: int, should_stop: Callable[[], bool] | None,
                         checkpoint_path: Path, early_stopping, report_lr_cuts: bool,
                         panel: Panel | None = None,
                         first_step_done: Callable[[], None] | None = None):
    """A Keras callback that turns training progress into events and checks for cancel."""
    import keras

    class EventCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
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
            if step == 1 and first_step_done is not None:
                first_step_done()
            self._steps_done = step
            now = time.monotonic()
            self._train_seconds = now - self._t0
            # Throttled, but always the first and last step so every epoch shows up.
            if step in (1, steps) or now - self._last_emit >= 1.0 / BATCH_EVENTS_PER_S:
                self._last_emit = now
                seen = min(step * batch_size, train_count)
                record(events.batch(
                    epoch=self._epoch_no, step=step, steps=steps, loss=logs.get("loss"),
                    accuracy=logs.get("accuracy"), lr=_lr(self.model),
                    images_per_s=seen / max(now - self._t0, 1e-9)))
            if should_stop is not None and should_stop():
                self.cancelled = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            epoch_no = epoch + 1
            row = {
                "epoch": epoch_no,
                "loss": logs.get("loss"),
                "accuracy": logs.get("accuracy"),
                "val_loss": logs.get("val_loss"),
                "val_accuracy": logs.get("val_accuracy"),
                "lr": self._lr_begin,
                "seconds": time.monotonic() - self._t0,
                # training only, without validation: the figure that compares recipes
                "images_per_s": min(self._steps_done * batch_size, train_count)
                / max(self._train_seconds, 1e-9),
                "image_size": self.image_size,
            }
            partial = self.cancelled and self._steps_done < steps
            record(events.epoch(**row, partial=partial, gpu=gpu_load(),
                                confusion=confusion_from_logs(logs),
                                insight=overfitting([*self.history, row])))
            self.history.append(row)
            if panel is not None and len(panel):
                record(events.panel(epoch=epoch_no, items=panel.score(self.model)))
            val_acc, val_loss = logs.get("val_accuracy"), logs.get("val_loss")
            if val_acc is not None and is_better_epoch(
                    val_acc, val_loss, self.best_val_accuracy, self.best_val_loss):
                best = {"epoch": epoch_no, "val_accuracy": float(val_acc),
                        "val_loss": None if val_loss is None else float(val_loss)}
                try:
                    # On disk, so a killed run still leaves its best epoch behind; both
                    # files renamed into place once whole, so a full disk leaves the
                    # previous best checkpoint as it was.
                    write_files((checkpoint_path, self.model.save_weights),
                                 (checkpoint_path.with_name(BEST_FILE),
                                  lambda path: _dump_json(path, best)))
                except Exception as exc:
                    if not is_disk_full(exc):
                        raise
                    self.unsaved = f"epoch {epoch_no}'s checkpoint"
                    self.model.stop_training = True  # nothing later could be saved either
                else:
                    self.best_val_accuracy = best["val_accuracy"]
                    self.best_val_loss = best["val_loss"]
                    self.best_epoch = epoch_no
                    record(events.checkpoint(epoch=epoch_no, val_accuracy=float(val_acc)))
                if self.unsaved is not None:
                    # h5py holds the failed file open until its exception is garbage: close
                    # it now, while the space its truncation gave back is there.
                    gc.collect()
            new_lr = _lr(self.model)
            # A fixed schedule lowers the rate every step: only plateau cuts are news.
            if report_lr_cuts and new_lr < self._lr_begin * (1 - 1e-6):
                record(events.lr_reduced(epoch=epoch_no, old_lr=self._lr_begin, new_lr=new_lr))
            if early_stopping is not None and early_stopping.stopped_epoch == epoch \
                    and self.model.stop_training and not self.cancelled:
                self.early_stopped_at = epoch_no
                record(events.early_stopped(epoch=epoch_no, best_epoch=self.best_epoch))

    return EventCallback()


class _CollectorPause:
    """Python's cycle collector held off from a run's start until its first training step.

    Building the model and tracing its step allocate hundreds of thousands of objects, and
    in a worker process that has trained before, each full collection walks everything the
    earlier runs left: held off, a warm worker's first batch came about 0.5 s sooner (2.0
    against 2.5 s, ``fast_cnn`` at 64 px). Training itself allocates little, so the
    collector runs again from the first step on.
    """

    def __enter__(self) -> _CollectorPause:
        self._resume = gc.isenabled()
        gc.disable()
        return self

    def end(self) -> None:
        if self._resume:
            self._resume = False
            gc.enable()

    def __exit__(self, *exc: Any) -> None:
        self.end()


def learning_rate_schedule(schedule: str, learning_rate: float, total_steps: int) -> Any:
    """The optimizer's learning rate for a config's schedule: a number or a Keras schedule.

    Keras's own CosineDecay (with its linear warm-up for one-cycle), so a saved model needs
    no custom class to load.
    """
    import keras

    total_steps = max(total_steps, 2)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.01)
    if schedule == "one_cycle":
        warmup = max(1, total_steps // 4)
        return keras.optimizers.schedules.CosineDecay(
            learning_rate / 10, total_steps - warmup, alpha=0.01,
            warmup_target=learning_rate, warmup_steps=warmup)
    return learning_rate


def _build(cfg: TrainConfig, image_size: int, learning_rate: Any, precision: str,
           pretrained: bool, any_size: bool = False):
    """The compiled model, its layers built under the run's precision policy."""
    from ml.tf_env import precision_policy

    with precision_policy(precision):
        return build_model(cfg.recipe, image_size, augment=cfg.augment,
                           learning_rate=learning_rate, label_smoothing=cfg.label_smoothing,
                           weight_decay=cfg.weight_decay, pretrained=pretrained,
                           any_size=any_size)


def _dump_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def train(config: TrainConfig | dict[str, Any] | None, data_dir: str | os.PathLike[str],
          out_dir: str | os.PathLike[str], *, on_event: EventHandler | None = None,
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None,
          sink: EventSink | None = None, pretrained: bool = True,
          resume_dir: str | os.PathLike[str] | None = None,
          photo_cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train a model on a dataset folder and save ``model.keras`` plus ``card.json`` in out_dir.

    Events go to ``on_event`` as they happen, numbered here (see ``ml.events``), or with
    ``sink`` to a recorder that numbers and stores them itself; ``should_stop`` is polled
    after every batch and ends the run early as ``cancelled``, keeping the best weights so far.
    Always emits ``run_finished``; re-raises the error of a failed run after emitting it.
    With ``resume_dir``, the model and optimizer are backed up there after every epoch and a
    run started again with the same config and folders carries on from the last finished
    epoch (for hours-long benchmark runs; exact for the fixed schedules, whose rate follows
    the optimizer's step count). With ``photo_cache_dir`` the photos come from the shared
    cache of decoded photos there (``ml.photo_cache``), built first if need be.
    Returns the run summary (the card without its history).
    """
    cfg = config if isinstance(config, TrainConfig) else parse_config(config)
    run_id = run_id or uuid.uuid4().hex[:12]
    record = sink or LocalLog(run_id, on_event)
    out = Path(out_dir)
    try:
        with _CollectorPause() as collector_pause:
            summary = _train(cfg, Path(data_dir), out, record, should_stop, run_id, pretrained,
                             resume_dir, photo_cache_dir, first_step_done=collector_pause.end)
    except BaseException as exc:
        error: BaseException = exc
        if isinstance(exc, Exception) and not isinstance(exc, LabError) and is_disk_full(exc):
            # Never a library's text (h5py's names file descriptors and buffer addresses).
            error = DiskFullError(full_message(out))
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        record(events.run_finished(status, error=str(error) or type(error).__name__))
        if error is not exc:
            raise error from exc
        raise
    record(events.run_finished(summary["status"],
                               best_val_accuracy=summary["metrics"]["best_val_accuracy"],
                               best_epoch=summary["metrics"]["best_epoch"],
                               model_id=summary["model_id"],
                               error="; ".join(summary["notes"]) or None))
    return summary


def _train(cfg: TrainConfig, data_dir: Path, out: Path, record: EventSink,
           should_stop: Callable[[], bool] | None, run_id: str, pretrained: bool,
           resume_dir: str | os.PathLike[str] | None = None,
           photo_cache_dir: str | os.PathLike[str] | None = None,
           first_step_done: Callable[[], None] | None = None) -> dict[str, Any]:
    recipe = get_recipe(cfg.recipe)
    image_size = cfg.image_size or recipe.image_size
    learning_rate = cfg.learning_rate or recipe.learning_rate
    small_size = cfg.small_image_size if cfg.small_epochs else None
    if small_size is not None and resume_dir is not None:
        # Keras's backup knows one fit, and progressive resizing fits twice.
        raise ConfigError({"small_image_size": "a run that can be resumed trains at one size"})

    result = scan(data_dir)
    require_photos(result, minimum_per_class=2)
    df = result.images
    if cfg.limit:
        df = stratified_sample(df, cfg.limit, seed=cfg.seed)
    train_df, val_df = split_frame(df, cfg.val_split, seed=cfg.seed)
    if len(val_df) == 0 or len(train_df) == 0:
        raise DatasetError("too few photos to hold some out for validation; add more photos")

    import keras
    import tensorflow as tf

    from ml.pipeline import make_dataset
    from ml.tf_env import resolve_precision, share_gpus

    share_gpus()  # memory as needed, not all of it: other runs may share the GPU

    photos = small_photos = None
    if photo_cache_dir is not None:
        from ml.photo_cache import open_photo_cache
        from ml.pipeline import decode_many

        photos = open_photo_cache(result.images, result.root, image_size, Path(photo_cache_dir),
                                  decode=decode_many)
        if small_size is not None:
            small_photos = open_photo_cache(result.images, result.root, small_size,
                                            Path(photo_cache_dir), decode=decode_many)
    keras.backend.clear_session()  # a worker process trains many runs: start each afresh
    keras.utils.set_random_seed(cfg.seed)
    train_ds = make_dataset(train_df, image_size, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            photos=photos)
    val_ds = make_dataset(val_df, image_size, cfg.batch_size, shuffle=False, photos=photos)
    # (the photos to train on, their size, the epoch to train until): validation is always
    # at the full size, so every epoch's score is the kept model's as it will be used
    phases = [(train_ds, image_size, cfg.epochs)]
    if small_size is not None:
        small_ds = make_dataset(train_df, small_size, cfg.batch_size, shuffle=True,
                                seed=cfg.seed, photos=small_photos)
        phases.insert(0, (small_ds, small_size, cfg.small_epochs))
    steps = math.ceil(len(train_df) / cfg.batch_size)
    panel = Panel(choose_panel(val_df, seed=cfg.seed), result.root, image_size, photos)
    precision = resolve_precision(cfg.precision)
    model = _build(cfg, image_size,
                   learning_rate_schedule(cfg.schedule, learning_rate, steps * cfg.epochs),
                   precision, pretrained, any_size=small_size is not None)
    # Before anything is written: a run the disk cannot hold fails now, not hours later.
    check_free_space(disk_needed(model, out, None if resume_dir is None else Path(resume_dir),
                                 checkpoint_file=CHECKPOINT_FILE, backup_file=BACKUP_FILE), out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT_FILE, BEST_FILE, MODEL_FILE, CARD_FILE):
        # what a killed run was writing (and the JSON files' temporary names of old)
        for stale in (tmp_path(out / name), out / f"{name}.tmp"):
            if stale.is_file():
                discard(stale)

    record(events.run_started(
        config=cfg.to_dict(), recipe=cfg.recipe, image_size=image_size,
        learning_rate=learning_rate, epochs=cfg.epochs, steps_per_epoch=steps,
        train_count=len(train_df), val_count=len(val_df), skipped_count=len(result.skipped),
        schedule=cfg.schedule, label_smoothing=cfg.label_smoothing,
        weight_decay=cfg.weight_decay, precision=precision, device=describe_device(),
        photo_cache=None if photos is None else {"state": photos.state,
                                                 "seconds": round(photos.seconds, 2)}))
    plateau = cfg.schedule == "plateau"
    callbacks = []
    early_stopping = None
    if plateau:
        # A fixed schedule is planned for all the epochs: stopping it early would end the
        # run at a high rate, before the annealing that gives its accuracy.
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=cfg.early_stopping_patience)
        callbacks = [keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=1e-9),
            early_stopping]
    checkpoint_path = out / CHECKPOINT_FILE
    progress = _make_event_callback(
        record, steps=steps, batch_size=cfg.batch_size,
        train_count=len(train_df), should_stop=should_stop, checkpoint_path=checkpoint_path,
        early_stopping=early_stopping, report_lr_cuts=plateau, panel=panel,
        first_step_done=first_step_done)
    if resume_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(resume_dir)))
        best_file = checkpoint_path.with_name(BEST_FILE)
        if Path(resume_dir).is_dir() and best_file.is_file() and checkpoint_path.is_file():
            best = json.loads(best_file.read_text())
            progress.best_epoch, progress.best_val_accuracy = best["epoch"], best["val_accuracy"]
            progress.best_val_loss = best.get("val_loss")  # absent in checkpoints from before
    started = time.monotonic()
    # Order matters: the event callback runs last so it sees this epoch's LR reduction and
    # early-stopping decision.
    with warnings.catch_warnings():
        # The dataset's length is unknown to Keras (undecodable files are dropped), so it
        # warns at the end of every first epoch that the input "ran out of data".
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        backup_failed = False
        try:
            first_epoch = 0
            for photos_ds, photo_size, until_epoch in phases:
                # One fit per image size; the optimizer (its step, so the schedule) carries on.
                progress.image_size = photo_size
                model.fit(photos_ds, validation_data=val_ds, epochs=until_epoch,
                          initial_epoch=first_epoch, callbacks=[*callbacks, progress],
                          verbose=0, shuffle=False)  # the dataset shuffles itself
                first_epoch = until_epoch
                if progress.cancelled or progress.unsaved is not None:
                    break
        except Exception as exc:
            # Keras's BackupAndRestore writes its backup in place: a full disk breaks it
            # half-way, and that backup could not resume anything.
            if resume_dir is None or not is_disk_full(exc):
                raise
            backup_failed = True
        full = (out, "models folder")  # the folder that filled up, for the messages
        if backup_failed:
            progress.unsaved = "the run's backup"
            full = (Path(resume_dir), "backup folder")
            gc.collect()
            discard(Path(resume_dir) / BACKUP_FILE)
            shutil.rmtree(resume_dir, ignore_errors=True)  # as a finished run leaves it
    seconds = time.monotonic() - started
    notes = []
    if progress.unsaved is not None:
        if progress.best_epoch is None:  # not one epoch saved: no model to end with
            raise DiskFullError(full_message(*full))
        folder = full[0]
        notes.append(f"{progress.unsaved} could not be saved because the disk is full "
                     f"({human_size(free_bytes(folder))} free on {folder}), so the run stopped "
                     f"there and kept epoch {progress.best_epoch}, the best epoch saved; free "
                     f"some space before the next run")
        log.warning("run %s: %s", run_id, notes[-1])
    if progress.best_epoch is not None:
        model.load_weights(checkpoint_path)  # keep the best epoch, not the last
    if precision != "float32" or small_size is not None:
        # Save a float32 copy: the weights already are float32, and a bfloat16 model would
        # run emulated (slowly) on a web server whose CPU lacks it. The copy takes the
        # full size only, as Predict and the saved card expect.
        trained = model
        model = _build(cfg, image_size, learning_rate, "float32", pretrained=False)
        model.set_weights(trained.get_weights())
    from ml.evaluate import evaluate_frame

    # The saved model on its validation photos: the confusion matrix and the photos it gets
    # wrong, for the Runs tab.
    validation = evaluate_frame(model, image_size, val_df, cfg.batch_size,
                                max_misclassified=MAX_MISCLASSIFIED, photos=photos)
    explained = panel.explain(model, image_size, out)  # where the kept model looked
    model_path = out / MODEL_FILE
    status = "cancelled" if progress.cancelled else "succeeded"
    card = {
        "model_id": run_id,
        "status": status,
        "recipe": cfg.recipe,
        "image_size": image_size,
        "class_names": list(CLASS_NAMES),
        "label_meaning": "sigmoid output = probability of cat (label 1); dog is label 0",
        "config": cfg.to_dict(),
        "learning_rate": learning_rate,
        "precision": precision,
        "data_dir": str(result.root),
        "counts": {"train": len(train_df), "val": len(val_df),
                   "skipped": len(result.skipped)},
        "metrics": {
            "best_val_accuracy": progress.best_val_accuracy,
            "best_epoch": progress.best_epoch,
            "epochs_run": len(progress.history),
            "early_stopped_epoch": progress.early_stopped_at,
            "train_seconds": seconds,
            # mean training throughput over the epochs (validation time left out)
            "images_per_s": (sum(h["images_per_s"] for h in progress.history)
                             / len(progress.history)) if progress.history else None,
        },
        "history": progress.history,
        "validation": validation,
        "panel": explained,
        "notes": notes,
        "model_file": MODEL_FILE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    # The best epoch's weights are in the model now, so its checkpoint is needed only to
    # resume: when the disk is too full for model.keras or the card, it makes room.
    spare = [checkpoint_path, checkpoint_path.with_name(BEST_FILE)]
    # model.keras must load in any Keras, compiled or not: its config names only Keras's
    # own metrics, not the lab's confusion counts (which only the training needed).
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    write_making_room(model_path, model.save, spare, out)
    try:
        write_making_room(out / CARD_FILE, lambda path: _dump_json(path, card), spare, out)
    except DiskFullError:
        discard(model_path)  # no run's model without its card: give the space back
        raise
    log.debug("saved %s (best val accuracy %s at epoch %s)", model_path,
             progress.best_val_accuracy, progress.best_epoch)
    return {k: v for k, v in card.items() if k != "history"}
