"""train(): events in order, files written, cooperative cancel, LR reduction, early stop."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from ml.errors import ConfigError, DatasetError
from ml.event_callback import LOSS_TIE_MIN_DELTA, is_better_epoch
from ml.events import EVENT_TYPES
from ml.train import train

FAST = {"image_size": 32, "batch_size": 8, "augment": False}


def collect(config, data, out, **kw):
    events: list[dict] = []
    summary = train(config, data, out, on_event=events.append, run_id="r1", **kw)
    return summary, events


def test_events_schema_order_and_files(tiny_dataset, tmp_path):
    summary, events = collect({**FAST, "epochs": 2, "early_stopping_patience": 10},
                              tiny_dataset, tmp_path)
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert e["type"] in EVENT_TYPES and e["run_id"] == "r1" and e["ts"] > 0
        json.dumps(e, allow_nan=False)  # plain JSON, no NaN
    started = events[0]
    assert started["epochs"] == 2 and started["train_count"] + started["val_count"] == 48
    assert started["steps_per_epoch"] == -(-started["train_count"] // 8)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert 0 <= e["val_accuracy"] <= 1 and e["loss"] > 0 and e["lr"] == pytest.approx(2e-3)
        assert e["images_per_s"] > 0 and e["partial"] is False
    batches = [e for e in events if e["type"] == "batch"]
    for epoch in (1, 2):
        steps = [b["step"] for b in batches if b["epoch"] == epoch]
        assert steps[0] == 1 and steps[-1] == started["steps_per_epoch"]  # first and last
    assert all(b["aggregation"] == "running_mean" and b["images_per_s"] > 0 for b in batches)
    # every batch event of epoch 1 comes before the epoch-1 summary
    first_epoch_seq = epochs[0]["seq"]
    assert all(b["seq"] < first_epoch_seq for b in batches if b["epoch"] == 1)
    assert any(e["type"] == "checkpoint" and e["epoch"] == 1 for e in events)
    finished = events[-1]
    assert finished["status"] == "succeeded" and finished["error"] is None
    assert finished["model_id"] == "r1"
    assert finished["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs)

    assert (tmp_path / "model.keras").stat().st_size > 10_000
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["image_size"] == 32 and card["class_names"] == ["dog", "cat"]
    assert card["recipe"] == "fast_cnn" and len(card["history"]) == 2
    assert card["metrics"]["best_epoch"] == finished["best_epoch"]
    assert summary["status"] == "succeeded" and "history" not in summary
    # The saved model's report on its validation photos, for the Runs tab.
    validation = card["validation"]
    assert sum(map(sum, validation["confusion"])) == validation["n"] == card["counts"]["val"]
    assert validation["errors"] == len(validation["misclassified"]) <= 48
    assert validation["accuracy"] == pytest.approx(finished["best_val_accuracy"], abs=1e-6)


def kept_epoch(epochs: list[dict]) -> int:
    """The epoch the checkpoint rule should keep, replayed over a run's epoch events."""
    best = None
    for e in epochs:
        if best is None or is_better_epoch(e["val_accuracy"], e["val_loss"],
                                           best["val_accuracy"], best["val_loss"]):
            best = e
    return best["epoch"]


def test_a_tie_in_accuracy_goes_to_the_clearly_lower_loss():
    assert is_better_epoch(0.5, 9.0, None, None)  # the first epoch always counts
    assert is_better_epoch(0.9, 0.8, 0.8, 0.1)  # accuracy first, whatever the loss
    assert not is_better_epoch(0.8, 0.01, 0.9, 0.5)
    assert is_better_epoch(1.0, 0.05, 1.0, 0.4)  # 8/8 again, far more confident
    assert not is_better_epoch(1.0, 0.4 - LOSS_TIE_MIN_DELTA / 2, 1.0, 0.4)  # noise
    assert not is_better_epoch(1.0, 0.5, 1.0, 0.4)
    assert not is_better_epoch(1.0, None, 1.0, 0.4)
    assert is_better_epoch(1.0, 0.3, 1.0, None)  # a checkpoint saved before losses were kept


def test_the_checkpoint_keeps_the_clearly_more_confident_of_equal_epochs(tmp_path):
    """The real callback, fed chosen epoch results: the weights kept are epoch 2's."""
    import numpy as np

    from ml.event_callback import make_event_callback
    from ml.events import LocalLog
    from ml.recipes import build_model

    model = build_model("fast_cnn", 32, augment=False)
    events: list[dict] = []
    checkpoint = tmp_path / "best.weights.h5"
    callback = make_event_callback(
        LocalLog("r1", events.append), steps=1, batch_size=8, train_count=8,
        should_stop=None, checkpoint_path=checkpoint, early_stopping=None,
        report_lr_cuts=False)
    callback.set_model(model)
    results = [(1.0, 0.40), (1.0, 0.10), (1.0, 0.10 - LOSS_TIE_MIN_DELTA / 2), (0.9, 0.01)]
    weights = []
    for epoch, (acc, loss) in enumerate(results):
        # Different weights every epoch, so the file shows which epoch it holds.
        model.set_weights([w + epoch for w in model.get_weights()])
        weights.append(model.get_weights())
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5,
                                      "val_accuracy": acc, "val_loss": loss})
    assert [e["epoch"] for e in events if e["type"] == "checkpoint"] == [1, 2]
    assert callback.best_epoch == 2 and callback.best_val_loss == pytest.approx(0.10)
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "epoch": 2, "val_accuracy": 1.0, "val_loss": pytest.approx(0.10)}
    model.load_weights(checkpoint)
    for kept, epoch_2 in zip(model.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(kept, epoch_2)


def test_lr_reduction_and_early_stop_are_reported(tiny_dataset, tmp_path):
    # A learning rate so small that nothing improves: the plateau logic must act on epoch 2.
    _, events = collect({**FAST, "recipe": "seed_cnn", "image_size": 48, "epochs": 6,
                         "learning_rate": 1e-7, "lr_patience": 0, "lr_factor": 0.5,
                         "early_stopping_patience": 1},
                        tiny_dataset, tmp_path)
    reduced = [e for e in events if e["type"] == "lr_reduced"]
    assert reduced and reduced[0]["epoch"] == 2
    assert reduced[0]["new_lr"] == pytest.approx(reduced[0]["old_lr"] * 0.5, rel=1e-3)
    stopped = [e for e in events if e["type"] == "early_stopped"]
    assert len(stopped) == 1 and stopped[0] == {**stopped[0], "epoch": 2, "best_epoch": 1}
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
    assert events[-1]["status"] == "succeeded"


def test_should_stop_cancels_at_next_batch_and_keeps_model(tiny_dataset, tmp_path):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2  # stop after the second batch

    summary, events = collect({**FAST, "epochs": 5}, tiny_dataset, tmp_path,
                              should_stop=should_stop)
    assert len(calls) == 2
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["partial"] is True
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    assert summary["status"] == "cancelled"
    assert (tmp_path / "model.keras").exists()  # best weights so far are kept


def test_failed_run_reports_run_finished_failed(tmp_path):
    events: list[dict] = []
    with pytest.raises(DatasetError, match="does not exist"):
        train({"epochs": 1}, tmp_path / "missing", tmp_path / "out", on_event=events.append)
    assert [e["type"] for e in events] == ["run_finished"]
    assert events[0]["status"] == "failed" and "does not exist" in events[0]["error"]


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("no photos here")
    with pytest.raises(DatasetError, match="no usable cat or dog photos"):
        train({"epochs": 1}, tmp_path / "data", tmp_path / "out")


def test_one_cycle_warms_up_then_anneals_and_runs_every_epoch(tiny_dataset, tmp_path):
    # Patience 0 would stop a plateau run at the first epoch without progress; a fixed
    # schedule is planned for all its epochs and must neither stop nor report LR "cuts".
    summary, events = collect({**FAST, "epochs": 4, "schedule": "one_cycle",
                               "learning_rate": 1e-2, "early_stopping_patience": 0,
                               "lr_patience": 0, "precision": "float32"},
                              tiny_dataset, tmp_path)
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2, 3, 4]
    assert not [e for e in events if e["type"] in ("lr_reduced", "early_stopped")]
    assert events[0]["schedule"] == "one_cycle" and events[0]["precision"] == "float32"
    lrs = [e["lr"] for e in events if e["type"] == "batch"]
    peak = lrs.index(max(lrs))
    first_epoch = next(e for e in events if e["type"] == "epoch")
    assert first_epoch["lr"] == pytest.approx(1e-3, rel=0.01)  # starts at a tenth of the rate
    assert max(lrs) == pytest.approx(1e-2, rel=0.15)
    assert 0 < peak < len(lrs) - 1  # rises, then falls
    assert all(a <= b for a, b in pairwise(lrs[:peak + 1]))
    assert all(a >= b for a, b in pairwise(lrs[peak:]))
    assert lrs[-1] < 1e-2 * 0.1
    assert summary["metrics"]["epochs_run"] == 4


def test_bfloat16_run_trains_and_saves_a_float32_model(tiny_dataset, tmp_path):
    import keras
    import numpy as np

    from ml.model_io import load_model

    summary, events = collect({**FAST, "epochs": 1, "precision": "bfloat16",
                               "label_smoothing": 0.1}, tiny_dataset, tmp_path)
    assert events[0]["precision"] == "bfloat16" and events[0]["label_smoothing"] == 0.1
    assert summary["precision"] == "bfloat16" and summary["status"] == "succeeded"
    # The policy is process-wide: the run must leave it as it found it.
    assert keras.mixed_precision.global_policy().name == "float32"
    loaded = load_model(tmp_path / "model.keras")
    policies = {layer.dtype_policy.name for layer in loaded.model.layers}
    assert policies == {"float32"}, policies
    out = loaded.model(np.zeros((2, 32, 32, 3), "uint8"))
    assert out.dtype == "float32" and out.shape == (2, 1)
    # The float32 copy carries the best epoch's trained weights, exactly.
    from ml.recipes import build_model

    fresh = build_model("fast_cnn", 32, augment=False)
    fresh.load_weights(tmp_path / "best.weights.h5")
    saved = loaded.model.get_weights()
    assert len(saved) == len(fresh.get_weights())
    for a, b in zip(saved, fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(
        saved, build_model("fast_cnn", 32, augment=False).get_weights(), strict=True))


def test_resume_dir_carries_a_crashed_run_on_from_its_last_epoch(tiny_dataset, tmp_path):
    config = {**FAST, "epochs": 3, "schedule": "cosine", "precision": "float32"}
    backup, out = tmp_path / "backup", tmp_path / "out"
    seen: list[dict] = []

    def crash_in_epoch_2(event: dict) -> None:
        seen.append(event)
        if event["type"] == "batch" and event["epoch"] == 2:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        train(config, tiny_dataset, out, on_event=crash_in_epoch_2, resume_dir=backup)
    first = [e for e in seen if e["type"] == "epoch"]
    assert [e["epoch"] for e in first] == [1] and backup.is_dir()
    lr_at_crash = [e["lr"] for e in seen if e["type"] == "batch"][-1]

    summary, events = collect(config, tiny_dataset, out, resume_dir=backup)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [2, 3]  # epoch 1 is not trained again
    # The optimizer's step count came back with it: the cosine rate goes on falling.
    batch_lrs = [e["lr"] for e in events if e["type"] == "batch"]
    assert batch_lrs[0] == pytest.approx(lr_at_crash, rel=0.02)
    assert batch_lrs[0] < first[0]["lr"]
    best = max([first[0], *epochs], key=lambda e: e["val_accuracy"])
    assert summary["metrics"]["best_val_accuracy"] == pytest.approx(best["val_accuracy"])
    # The kept epoch's loss came back too, so epoch 1 is only replaced as the rule says.
    assert summary["metrics"]["best_epoch"] == kept_epoch([first[0], *epochs])
    assert not backup.exists()  # a finished run leaves no backup behind


def test_res_cnn_trains_saves_and_explains_a_prediction(tiny_dataset, tmp_path):
    from ml.model_io import load_model
    from ml.predict import explain_bytes
    from testkit.synthetic import photo_bytes

    summary, events = collect({**FAST, "recipe": "res_cnn", "epochs": 1}, tiny_dataset,
                              tmp_path)
    assert summary["recipe"] == "res_cnn" and summary["status"] == "succeeded"
    assert events[0]["schedule"] == "one_cycle" and events[0]["label_smoothing"] == 0.1
    loaded = load_model(tmp_path)
    assert loaded.model.get_layer("stage4_add") is not None  # the residual net, saved whole
    result = explain_bytes(loaded, photo_bytes("cat", size=64))
    assert result["label"] in ("cat", "dog") and 0 <= result["cat_probability"] <= 1
    assert result["heatmap"].ndim == 2 and 0 <= result["heatmap"].min() <= 1
    assert result["overlay_png"].startswith(b"\x89PNG")


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_kernels_only_and_only_when_asked(weight_decay):
    """On black photos the stem kernel gets no gradient (its input is 0), so Adam leaves it
    as it is, and AdamW shrinks it by exactly (1 - lr * decay) a step; BatchNorm's scale
    gets no gradient either and is left out of the decay."""
    import keras
    import numpy as np

    from ml.recipes import build_model

    model = build_model("res_cnn", 32, augment=False, learning_rate=0.1,
                        weight_decay=weight_decay)
    kernel = model.get_layer("stem_conv").kernel
    gamma = model.get_layer("stem_bn").gamma
    before = keras.ops.convert_to_numpy(kernel).copy()
    model.fit(np.zeros((8, 32, 32, 3), "uint8"), np.ones((8, 1)), batch_size=8, epochs=1,
              verbose=0)
    after = keras.ops.convert_to_numpy(kernel)
    np.testing.assert_allclose(after, before * (1 - 0.1 * weight_decay), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gamma), 1.0)


def test_weight_decay_reaches_the_run(tiny_dataset, tmp_path):
    import keras

    summary, events = collect({**FAST, "epochs": 1, "weight_decay": 0.05}, tiny_dataset,
                              tmp_path)
    assert summary["status"] == "succeeded"
    assert events[0]["weight_decay"] == 0.05 and events[0]["config"]["weight_decay"] == 0.05
    # The saved model keeps the optimizer it was compiled with: the run really used AdamW.
    optimizer = keras.models.load_model(tmp_path / "model.keras").optimizer
    assert type(optimizer).__name__ == "AdamW"
    assert float(keras.ops.convert_to_numpy(optimizer.weight_decay)) == pytest.approx(0.05)


def test_the_training_step_is_traced_once(tiny_dataset, tmp_path, monkeypatch):
    """Optimizer and metric variables exist before fit, so TensorFlow traces the step once.

    Created during the first trace, they make TensorFlow trace it again, which doubled the
    wait for a run's first batch.
    """
    import keras

    traces = []
    train_step = keras.Model.train_step

    def counting_train_step(self, data):
        traces.append(len(self.optimizer.variables))
        return train_step(self, data)

    monkeypatch.setattr(keras.Model, "train_step", counting_train_step)
    summary, _ = collect({**FAST, "epochs": 1}, tiny_dataset, tmp_path)
    assert summary["status"] == "succeeded"
    assert len(traces) == 1 and traces[0] > 1  # the optimizer's slots were already there


def test_the_collector_is_held_off_only_until_the_first_step(tiny_dataset, tmp_path):
    """Off while the model is built and traced (quicker first batch), on while it trains."""
    import gc

    at_start, while_training = [], []

    def on_event(event):
        if event["type"] == "run_started":
            at_start.append(gc.isenabled())

    def should_stop():  # polled after every batch
        while_training.append(gc.isenabled())
        return False

    assert gc.isenabled()
    summary = train({**FAST, "epochs": 1}, tiny_dataset, tmp_path, on_event=on_event,
                    should_stop=should_stop, run_id="r1")
    assert summary["status"] == "succeeded"
    assert at_start == [False] and while_training and all(while_training)
    assert gc.isenabled()
    with pytest.raises(DatasetError):  # a run that fails before its first step
        train(FAST, tmp_path / "missing", tmp_path / "out2", run_id="r2")
    assert gc.isenabled()


def test_progressive_resizing_trains_small_first_and_saves_a_full_size_model(
        tiny_dataset, tmp_path, monkeypatch):
    """The first epochs see small photos, the rest full-size ones; the schedule runs on
    across both; validation and the saved model are at the full size."""
    import keras
    import tensorflow as tf

    from ml.model_io import load_model

    sizes = []  # the width of every batch trained on
    train_step = keras.Model.train_step

    def note(width):
        sizes.append(int(width))
        return width

    def recording_train_step(self, data):
        tf.numpy_function(note, [tf.shape(data[0])[1]], tf.int32)  # runs at every step
        return train_step(self, data)

    monkeypatch.setattr(keras.Model, "train_step", recording_train_step)
    config = {**FAST, "image_size": 48, "small_image_size": 32, "small_epochs": 2, "epochs": 3,
              "schedule": "one_cycle", "learning_rate": 0.004}
    summary, events = collect(config, tiny_dataset, tmp_path, photo_cache_dir=tmp_path / "c")
    assert summary["status"] == "succeeded"
    epochs = [e for e in events if e["type"] == "epoch"]
    steps = events[0]["steps_per_epoch"]
    assert sizes == [32] * (2 * steps) + [48] * steps
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    # each epoch says what it trained on, for the run page and the card's history
    assert [e["image_size"] for e in epochs] == [32, 32, 48]
    assert [row["image_size"] for row in load_model(tmp_path).card["history"]] == [32, 32, 48]
    # one schedule over all 3 epochs: the warm-up peaks in epoch 1 and the rate falls after
    assert epochs[0]["lr"] < epochs[1]["lr"] and epochs[2]["lr"] < epochs[1]["lr"]
    assert [b["epoch"] for b in events if b["type"] == "batch" and b["step"] == steps] == [1, 2, 3]
    loaded = load_model(tmp_path)
    assert loaded.model.input_shape == (None, 48, 48, 3) and loaded.card["image_size"] == 48
    assert summary["config"]["small_image_size"] == 32
    # both sizes were cached for the next run
    assert sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "c").iterdir()
                  if p.is_dir()) == ["32px", "48px"]


def test_progressive_resizing_cannot_be_resumed(tiny_dataset, tmp_path):
    config = {**FAST, "image_size": 48, "small_image_size": 32, "small_epochs": 1, "epochs": 2,
              "schedule": "cosine"}
    with pytest.raises(ConfigError) as caught:
        train(config, tiny_dataset, tmp_path, run_id="r", resume_dir=tmp_path / "backup")
    assert "one size" in caught.value.fields["small_image_size"]
