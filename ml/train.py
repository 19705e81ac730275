"""``train()``: one training run from a config to a saved model, reporting events as it goes."""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml import event_callback, events
from ml.config import TrainConfig, effective, parse_config
from ml.data import CLASS_NAMES, ScanResult, require_photos, scan, split_frame, stratified_sample
from ml.device import describe_device
from ml.disk import (
    check_free_space,
    discard,
    disk_needed,
    free_bytes,
    full_message,
    human_size,
    is_disk_full,
    tmp_path,
    write_making_room,
)
from ml.errors import ConfigError, DatasetError, DiskFullError, LabError
from ml.event_callback import BEST_FILE, dump_json
from ml.events import EventHandler, EventSink, LocalLog
from ml.model_io import CARD_FILE, MODEL_FILE
from ml.options import MlOptions
from ml.panel import Panel, choose_panel
from ml.recipes import build_model, get_recipe

if TYPE_CHECKING:
    import pandas as pd

    from ml.photo_cache import PhotoCache

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "best.weights.h5"
BACKUP_FILE = "latest.weights.h5"  # what Keras's BackupAndRestore writes in resume_dir
MAX_MISCLASSIFIED = 48


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
           pretrained: bool, any_size: bool = False, options: MlOptions | None = None):
    """The compiled model, its layers built under the run's precision policy."""
    from ml.tf_env import precision_policy

    with precision_policy(precision):
        return build_model(cfg.recipe, image_size, augment=cfg.augment,
                           learning_rate=learning_rate, label_smoothing=cfg.label_smoothing,
                           weight_decay=cfg.weight_decay, pretrained=pretrained,
                           any_size=any_size, options=options)


def train(config: TrainConfig | dict[str, Any] | None, data_dir: str | os.PathLike[str],
          out_dir: str | os.PathLike[str], *, on_event: EventHandler | None = None,
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None,
          sink: EventSink | None = None, pretrained: bool = True,
          resume_dir: str | os.PathLike[str] | None = None,
          photo_cache_dir: str | os.PathLike[str] | None = None,
          options: MlOptions | None = None) -> dict[str, Any]:
    """Train a model on a dataset folder and save ``model.keras`` plus ``card.json`` in out_dir.

    Events go to ``on_event`` as they happen, numbered here (see ``ml.events``), or with
    ``sink`` to a recorder that numbers and stores them itself; ``should_stop`` is polled
    after every batch and ends the run early as ``cancelled``, keeping the best weights so far.
    Always emits ``run_finished``; re-raises the error of a failed run after emitting it.
    With ``resume_dir``, the model and optimizer are backed up there after every epoch and a
    run started again with the same config and folders carries on from the last finished
    epoch (for hours-long benchmark runs; exact for the fixed schedules, whose rate follows
    the optimizer's step count). With ``photo_cache_dir`` the photos come from the shared
    cache of decoded photos there (``ml.photo_cache``), built first if need be. ``options``:
    where pretrained weights come from and the input pipeline's memory (``ml.options``; the
    defaults when None). Returns the run summary (the card without its history).
    """
    cfg = config if isinstance(config, TrainConfig) else parse_config(config)
    run_id = run_id or uuid.uuid4().hex[:12]
    record = sink or LocalLog(run_id, on_event)
    out = Path(out_dir)
    try:
        with _CollectorPause() as collector_pause:
            summary = _train(cfg, Path(data_dir), out, record, should_stop, run_id, pretrained,
                             resume_dir, photo_cache_dir, first_step_done=collector_pause.end,
                             options=options)
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


@dataclass(frozen=True)
class _Run:
    """A run's fixed settings as every stage reads them: its config with the recipe's blanks
    filled, where it reports and where it writes."""

    cfg: TrainConfig
    out: Path
    record: EventSink
    run_id: str
    pretrained: bool
    image_size: int
    learning_rate: float
    small_size: int | None  # progressive resizing's first size; None: one size throughout
    resume_dir: str | os.PathLike[str] | None
    options: MlOptions


@dataclass(frozen=True)
class _Data:
    """The photos a run learns from and is scored on."""

    scanned: ScanResult  # the dataset folder's scan: its root and the files it skipped
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    photos: PhotoCache | None  # decoded at the run's size; None: decoded as it goes
    small_photos: PhotoCache | None  # the same at progressive resizing's first size


@dataclass(frozen=True)
class _Phases:
    """What the fits train and validate on."""

    # (the photos to train on, their size, the epoch to train until): validation is always
    # at the full size, so every epoch's score is the kept model's as it will be used
    fits: list[tuple[Any, int, int]]
    val_ds: Any
    steps: int  # per epoch


@dataclass(frozen=True)
class _Fitted:
    """What the fits leave for the saved model and its card."""

    progress: Any  # the event callback: best epoch, history, cancelled, ...
    checkpoint_path: Path
    seconds: float
    notes: list[str]


def _train(cfg: TrainConfig, data_dir: Path, out: Path, record: EventSink,
           should_stop: Callable[[], bool] | None, run_id: str, pretrained: bool,
           resume_dir: str | os.PathLike[str] | None = None,
           photo_cache_dir: str | os.PathLike[str] | None = None,
           first_step_done: Callable[[], None] | None = None,
           options: MlOptions | None = None) -> dict[str, Any]:
    """The run's stages in order: photos, phases, model and run_started, fit, saved model."""
    get_recipe(cfg.recipe)  # an unknown recipe fails before anything is read
    small_size = cfg.small_image_size if cfg.small_epochs else None
    if small_size is not None and resume_dir is not None:
        # Keras's backup knows one fit, and progressive resizing fits twice.
        raise ConfigError({"small_image_size": "a run that can be resumed trains at one size"})
    run = _Run(cfg, out, record, run_id, pretrained, image_size=effective(cfg, "image_size"),
               learning_rate=effective(cfg, "learning_rate"), small_size=small_size,
               resume_dir=resume_dir, options=options or MlOptions())
    data = _load_data(run, data_dir, photo_cache_dir)
    phases = _make_phases(run, data)
    model, precision, panel = _start(run, data, phases)
    fitted = _fit(run, model, phases, panel, len(data.train_df), should_stop, first_step_done)
    return _save(run, model, precision, data, panel, fitted)


def _load_data(run: _Run, data_dir: Path,
               photo_cache_dir: str | os.PathLike[str] | None) -> _Data:
    """The dataset scanned, sampled and split, and its photo caches opened (built if need be)."""
    cfg = run.cfg
    result = scan(data_dir)
    require_photos(result, minimum_per_class=2)
    df = result.images
    if cfg.limit:
        df = stratified_sample(df, cfg.limit, seed=cfg.seed)
    train_df, val_df = split_frame(df, cfg.val_split, seed=cfg.seed)
    if len(val_df) == 0 or len(train_df) == 0:
        raise DatasetError("too few photos to hold some out for validation; add more photos")

    # TensorFlow (through Keras) loads only now, once there are photos to train on.
    import keras  # noqa: F401

    from ml.tf_env import share_gpus

    share_gpus()  # memory as needed, not all of it: other runs may share the GPU

    photos = small_photos = None
    if photo_cache_dir is not None:
        from ml.photo_cache import open_photo_cache
        from ml.pipeline import decode_many

        photos = open_photo_cache(result.images, result.root, run.image_size,
                                  Path(photo_cache_dir), decode=decode_many)
        if run.small_size is not None:
            small_photos = open_photo_cache(result.images, result.root, run.small_size,
                                            Path(photo_cache_dir), decode=decode_many)
    return _Data(result, train_df, val_df, photos, small_photos)


def _make_phases(run: _Run, data: _Data) -> _Phases:
    """The datasets per image size: one fit at the full size, after one at the small size
    for progressive resizing."""
    import keras

    from ml.pipeline import make_dataset

    cfg = run.cfg
    keras.backend.clear_session()  # a worker process trains many runs: start each afresh
    keras.utils.set_random_seed(cfg.seed)
    train_ds = make_dataset(data.train_df, run.image_size, cfg.batch_size, shuffle=True,
                            seed=cfg.seed, photos=data.photos, options=run.options)
    val_ds = make_dataset(data.val_df, run.image_size, cfg.batch_size, shuffle=False,
                          photos=data.photos, options=run.options)
    fits = [(train_ds, run.image_size, cfg.epochs)]
    if run.small_size is not None:
        small_ds = make_dataset(data.train_df, run.small_size, cfg.batch_size, shuffle=True,
                                seed=cfg.seed, photos=data.small_photos, options=run.options)
        fits.insert(0, (small_ds, run.small_size, cfg.small_epochs))
    return _Phases(fits, val_ds, steps=math.ceil(len(data.train_df) / cfg.batch_size))


def _start(run: _Run, data: _Data, phases: _Phases) -> tuple[Any, str, Panel]:
    """The model built and the disk checked for it, what a killed run left cleared away, and
    ``run_started``; returns the model, its precision and the panel of photos it is shown."""
    from ml.tf_env import resolve_precision

    cfg, out = run.cfg, run.out
    panel = Panel(choose_panel(data.val_df, seed=cfg.seed), data.scanned.root, run.image_size,
                  data.photos)
    precision = resolve_precision(cfg.precision)
    model = _build(cfg, run.image_size,
                   learning_rate_schedule(cfg.schedule, run.learning_rate,
                                          phases.steps * cfg.epochs),
                   precision, run.pretrained, any_size=run.small_size is not None,
                   options=run.options)
    # Before anything is written: a run the disk cannot hold fails now, not hours later.
    resume_dir = None if run.resume_dir is None else Path(run.resume_dir)
    check_free_space(disk_needed(model, out, resume_dir, checkpoint_file=CHECKPOINT_FILE,
                                 backup_file=BACKUP_FILE), out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT_FILE, BEST_FILE, MODEL_FILE, CARD_FILE):
        # what a killed run was writing (and the JSON files' temporary names of old)
        for stale in (tmp_path(out / name), out / f"{name}.tmp"):
            if stale.is_file():
                discard(stale)
    photos = data.photos
    run.record(events.run_started(
        config=cfg.to_dict(), recipe=cfg.recipe, image_size=run.image_size,
        learning_rate=run.learning_rate, epochs=cfg.epochs, steps_per_epoch=phases.steps,
        train_count=len(data.train_df), val_count=len(data.val_df),
        skipped_count=len(data.scanned.skipped), schedule=cfg.schedule,
        label_smoothing=cfg.label_smoothing, weight_decay=cfg.weight_decay,
        precision=precision, device=describe_device(),
        photo_cache=None if photos is None else {"state": photos.state,
                                                 "seconds": round(photos.seconds, 2)}))
    return model, precision, panel


def _fit(run: _Run, model: Any, phases: _Phases, panel: Panel, train_count: int,
         should_stop: Callable[[], bool] | None,
         first_step_done: Callable[[], None] | None) -> _Fitted:
    """The callbacks made (a resumed run's best epoch read back) and the phases fitted."""
    import keras

    cfg = run.cfg
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
    checkpoint_path = run.out / CHECKPOINT_FILE
    # Looked up on its module at each run, so bench/ema_accuracy.py can wrap it.
    progress = event_callback.make_event_callback(
        run.record, steps=phases.steps, batch_size=cfg.batch_size,
        train_count=train_count, should_stop=should_stop, checkpoint_path=checkpoint_path,
        early_stopping=early_stopping, report_lr_cuts=plateau, panel=panel,
        first_step_done=first_step_done)
    if run.resume_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(run.resume_dir)))
        best_file = checkpoint_path.with_name(BEST_FILE)
        if Path(run.resume_dir).is_dir() and best_file.is_file() and checkpoint_path.is_file():
            progress.restore_best()
    started = time.monotonic()
    full = _fit_phases(run, model, phases, callbacks, progress)
    seconds = time.monotonic() - started
    return _Fitted(progress, checkpoint_path, seconds, _unsaved_notes(run, progress, full))


def _fit_phases(run: _Run, model: Any, phases: _Phases, callbacks: list[Any],
                progress: Any) -> tuple[Path, str]:
    """One fit per image size, until cancelled or the disk is full; returns the folder that
    would have filled up and its name, for the messages."""
    # Order matters: the event callback runs last so it sees this epoch's LR reduction and
    # early-stopping decision.
    with warnings.catch_warnings():
        # The dataset's length is unknown to Keras (undecodable files are dropped), so it
        # warns at the end of every first epoch that the input "ran out of data".
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        backup_failed = False
        try:
            first_epoch = 0
            for photos_ds, photo_size, until_epoch in phases.fits:
                # One fit per image size; the optimizer (its step, so the schedule) carries on.
                progress.image_size = photo_size
                model.fit(photos_ds, validation_data=phases.val_ds, epochs=until_epoch,
                          initial_epoch=first_epoch, callbacks=[*callbacks, progress],
                          verbose=0, shuffle=False)  # the dataset shuffles itself
                first_epoch = until_epoch
                if progress.cancelled or progress.unsaved is not None:
                    break
        except Exception as exc:
            # Keras's BackupAndRestore writes its backup in place: a full disk breaks it
            # half-way, and that backup could not resume anything.
            if run.resume_dir is None or not is_disk_full(exc):
                raise
            backup_failed = True
        full = (run.out, "models folder")
        if backup_failed:
            progress.unsaved = "the run's backup"
            full = (Path(run.resume_dir), "backup folder")
            gc.collect()
            discard(Path(run.resume_dir) / BACKUP_FILE)
            shutil.rmtree(run.resume_dir, ignore_errors=True)  # as a finished run leaves it
    return full


def _unsaved_notes(run: _Run, progress: Any, full: tuple[Path, str]) -> list[str]:
    """The card's note on what a full disk kept from being saved; with not one epoch saved
    there is no model to end with, and the run fails."""
    notes = []
    if progress.unsaved is not None:
        if progress.best_epoch is None:  # not one epoch saved: no model to end with
            raise DiskFullError(full_message(*full))
        folder = full[0]
        notes.append(f"{progress.unsaved} could not be saved because the disk is full "
                     f"({human_size(free_bytes(folder))} free on {folder}), so the run stopped "
                     f"there and kept epoch {progress.best_epoch}, the best epoch saved; free "
                     f"some space before the next run")
        log.warning("run %s: %s", run.run_id, notes[-1])
    return notes


def _save(run: _Run, model: Any, precision: str, data: _Data, panel: Panel,
          fitted: _Fitted) -> dict[str, Any]:
    """The kept model scored, explained and saved with its card; returns the run summary."""
    model = _kept_model(run, model, precision, fitted)
    from ml.evaluate import evaluate_frame

    # The saved model on its validation photos: the confusion matrix and the photos it gets
    # wrong, for the Runs tab.
    validation = evaluate_frame(model, run.image_size, data.val_df, run.cfg.batch_size,
                                max_misclassified=MAX_MISCLASSIFIED, photos=data.photos)
    explained = panel.explain(model, run.image_size, run.out)  # where the kept model looked
    card = _card(run, precision, data, fitted, validation, explained)
    model_path = _write_model_and_card(run, model, card, fitted.checkpoint_path)
    log.debug("saved %s (best val accuracy %s at epoch %s)", model_path,
             fitted.progress.best_val_accuracy, fitted.progress.best_epoch)
    return {k: v for k, v in card.items() if k != "history"}


def _kept_model(run: _Run, model: Any, precision: str, fitted: _Fitted) -> Any:
    """The model with the best epoch's weights, as float32 at the full size."""
    if fitted.progress.best_epoch is not None:
        model.load_weights(fitted.checkpoint_path)  # keep the best epoch, not the last
    if precision != "float32" or run.small_size is not None:
        # Save a float32 copy: the weights already are float32, and a bfloat16 model would
        # run emulated (slowly) on a web server whose CPU lacks it. The copy takes the
        # full size only, as Predict and the saved card expect.
        trained = model
        model = _build(run.cfg, run.image_size, run.learning_rate, "float32", pretrained=False)
        model.set_weights(trained.get_weights())
    return model


def _card(run: _Run, precision: str, data: _Data, fitted: _Fitted,
          validation: dict[str, Any], explained: list[dict[str, Any]]) -> dict[str, Any]:
    """The model card saved beside the model (``card.json``)."""
    import keras
    import tensorflow as tf

    cfg, progress = run.cfg, fitted.progress
    return {
        "model_id": run.run_id,
        "status": "cancelled" if progress.cancelled else "succeeded",
        "recipe": cfg.recipe,
        "image_size": run.image_size,
        "class_names": list(CLASS_NAMES),
        "label_meaning": "sigmoid output = probability of cat (label 1); dog is label 0",
        "config": cfg.to_dict(),
        "learning_rate": run.learning_rate,
        "precision": precision,
        "data_dir": str(data.scanned.root),
        "counts": {"train": len(data.train_df), "val": len(data.val_df),
                   "skipped": len(data.scanned.skipped)},
        "metrics": {
            "best_val_accuracy": progress.best_val_accuracy,
            "best_epoch": progress.best_epoch,
            "epochs_run": len(progress.history),
            "early_stopped_epoch": progress.early_stopped_at,
            "train_seconds": fitted.seconds,
            # mean training throughput over the epochs (validation time left out)
            "images_per_s": (sum(h["images_per_s"] for h in progress.history)
                             / len(progress.history)) if progress.history else None,
        },
        "history": progress.history,
        "validation": validation,
        "panel": explained,
        "notes": fitted.notes,
        "model_file": MODEL_FILE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _write_model_and_card(run: _Run, model: Any, card: dict[str, Any],
                          checkpoint_path: Path) -> Path:
    """``model.keras`` and ``card.json`` written, or neither; returns the model's path."""
    out = run.out
    model_path = out / MODEL_FILE
    # The best epoch's weights are in the model now, so its checkpoint is needed only to
    # resume: when the disk is too full for model.keras or the card, it makes room.
    spare = [checkpoint_path, checkpoint_path.with_name(BEST_FILE)]
    # model.keras must load in any Keras, compiled or not: its config names only Keras's
    # own metrics, not the lab's confusion counts (which only the training needed).
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    write_making_room(model_path, model.save, spare, out)
    try:
        write_making_room(out / CARD_FILE, lambda path: dump_json(path, card), spare, out)
    except DiskFullError:
        discard(model_path)  # no run's model without its card: give the space back
        raise
    return model_path
