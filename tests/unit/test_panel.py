"""Watching the model learn: the panel of photos scored each epoch, the confusion matrix of
each epoch's validation pass, the overfitting sentence, and the kept model's heat-maps."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from ml.insights import overfitting
from ml.panel import PANEL_SIZE, choose_panel
from ml.train import train
from testkit.synthetic import make_flat_dataset

FAST = {"image_size": 32, "batch_size": 8, "augment": False}


def _run(data, out, **config):
    events: list[dict] = []
    summary = train({**FAST, **config}, data, out, on_event=events.append, run_id="p1")
    return summary, events


def test_each_epoch_scores_the_same_panel_and_carries_its_confusion(tiny_dataset, tmp_path):
    summary, events = _run(tiny_dataset, tmp_path / "a", epochs=3, early_stopping_patience=9)
    epochs = [e for e in events if e["type"] == "epoch"]
    panels = [e for e in events if e["type"] == "panel"]
    started = events[0]
    assert [p["epoch"] for p in panels] == [1, 2, 3]
    for ep, panel in zip(epochs, panels, strict=True):
        assert panel["seq"] == ep["seq"] + 1  # right after its epoch
    photos = [[(i["image"], i["label"]) for i in p["items"]] for p in panels]
    assert photos[0] == photos[1] == photos[2]  # the same photos every epoch
    labels = [label for _, label in photos[0]]
    val_count = started["val_count"]
    half = min(PANEL_SIZE // 2, val_count // 2)
    assert labels.count(1) == labels.count(0) == half  # half cats, half dogs
    for name, label in photos[0]:
        assert "/" not in name and name.startswith(("cat.", "dog."))  # relative to the folder
        assert (tiny_dataset / name).is_file() and (label == 1) == name.startswith("cat.")
    probabilities = [[i["cat_probability"] for i in p["items"]] for p in panels]
    assert all(0 <= q <= 1 for row in probabilities for q in row)
    assert probabilities[0] != probabilities[2]  # the network changed its mind

    for ep in epochs:
        confusion = ep["confusion"]
        assert sum(map(sum, confusion)) == val_count
        right = confusion[0][0] + confusion[1][1]
        assert right / val_count == pytest.approx(ep["val_accuracy"], abs=1e-6)

    # The same seed chooses the same panel: a resumed or replayed run shows these photos.
    _, again = _run(tiny_dataset, tmp_path / "b", epochs=1)
    first = next(e for e in again if e["type"] == "panel")
    assert [(i["image"], i["label"]) for i in first["items"]] == photos[0]
    _, other = _run(tiny_dataset, tmp_path / "c", epochs=1, seed=7)
    assert [i["image"] for i in next(e for e in other if e["type"] == "panel")["items"]] \
        != [name for name, _ in photos[0]]

    # At the end, where the kept model looked in each panel photo.
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert [(p["image"], p["label"]) for p in card["panel"]] == photos[0]
    assert summary["panel"] == card["panel"]
    for item in card["panel"]:
        with Image.open(tmp_path / "a" / item["heatmap"]) as heatmap:
            assert heatmap.format == "PNG" and min(heatmap.size) > 0


def test_the_panel_leaves_out_a_photo_that_does_not_decode(tmp_path):
    data = make_flat_dataset(tmp_path / "d", per_class=6)
    df = pd.DataFrame({"image_path": [str(p) for p in sorted(data.iterdir())]})
    df["label"] = [1 if p.startswith(str(data / "cat")) else 0 for p in df.image_path]
    broken = df.image_path.iloc[0]
    with open(broken, "wb") as fh:  # starts and ends like a JPEG, nothing decodable inside
        fh.write(b"\xff\xd8\xff" + b"\x00" * 400 + b"\xff\xd9")
    from ml.panel import Panel

    panel = Panel(df, data, 32)
    assert broken not in panel.paths and len(panel) == len(df) - 1
    assert len(panel.images) == len(panel.labels) == len(df) - 1
    assert len(panel.score(_Constant())) == len(df) - 1


class _Constant:
    """A stand-in model that says 0.5 for every photo (only the panel's shape is tested)."""

    def __call__(self, images, training=False):
        import numpy as np

        return np.full((len(images), 1), 0.5, dtype=np.float32)


def test_choose_panel_is_balanced_and_small_sets_give_what_they_have():
    df = pd.DataFrame({"image_path": [f"/d/cat.{i}.jpg" for i in range(30)]
                       + [f"/d/dog.{i}.jpg" for i in range(3)],
                       "label": [1] * 30 + [0] * 3})
    chosen = choose_panel(df, seed=1)
    assert list(chosen.label) == [1] * 8 + [0] * 3
    assert list(choose_panel(df, seed=1).image_path) == list(chosen.image_path)
    assert list(choose_panel(df, seed=2).image_path) != list(chosen.image_path)


def _rows(*values):
    return [{"epoch": n, "accuracy": a, "val_accuracy": va, "loss": lo, "val_loss": vl}
            for n, (a, va, lo, vl) in enumerate(values, start=1)]


def test_overfitting_begins_at_the_epoch_it_starts():
    history = _rows((0.60, 0.58, 0.70, 0.69), (0.75, 0.70, 0.55, 0.60),
                    (0.90, 0.78, 0.30, 0.55), (0.95, 0.79, 0.20, 0.60))
    said = [overfitting(history[:n]) for n in range(1, 5)]
    assert said[0] is None and said[1] is None
    assert said[2].since == said[2].epoch == 3
    assert said[2].text.startswith("Overfitting from epoch 3") and "90 %" in said[2].text \
        and "78 %" in said[2].text
    assert (said[3].since, said[3].epoch) == (3, 4)  # the same finding, updated
    assert said[3].text.startswith("Overfitting since epoch 3") and "95 %" in said[3].text

    rising = _rows((0.70, 0.68, 0.60, 0.62), (0.74, 0.70, 0.50, 0.58),
                   (0.78, 0.71, 0.45, 0.60), (0.80, 0.72, 0.40, 0.64), (0.81, 0.72, 0.38, 0.70))
    said = [overfitting(rising[:n]) for n in range(1, 6)]
    assert said[:3] == [None, None, None]
    assert said[3].text.startswith("Overfitting from epoch 4") \
        and "validation loss has risen" in said[3].text
    assert (said[4].since, said[4].epoch) == (4, 5)
    assert overfitting([]) is None


def test_overfitting_that_persists_is_one_finding_since_the_epoch_it_began():
    # Issue 33: the gap opens at 7, dips under the threshold at 8 (while validation loss
    # rises) and opens wider at 9. One finding since 7, updated; not three new ones.
    history = _rows((0.55, 0.54, 0.69, 0.69), (0.62, 0.60, 0.65, 0.66),
                    (0.68, 0.65, 0.60, 0.62), (0.72, 0.68, 0.55, 0.58),
                    (0.75, 0.70, 0.50, 0.56), (0.78, 0.72, 0.46, 0.55),
                    (0.84, 0.73, 0.40, 0.57), (0.83, 0.75, 0.38, 0.59),
                    (0.88, 0.76, 0.33, 0.58))
    said = [overfitting(history[:n]) for n in range(1, 10)]
    assert said[:6] == [None] * 6
    assert [(f.since, f.epoch) for f in said[6:]] == [(7, 7), (7, 8), (7, 9)]
    first, dip, wider = (f.text for f in said[6:])
    assert first.startswith("Overfitting from epoch 7:") and "84 %" in first
    assert dip.startswith("Overfitting since epoch 7:") and "validation loss has risen" in dip
    assert wider.startswith("Overfitting since epoch 7:") and "has grown since epoch 7" in wider
    assert "88 %" in wider and "76 %" in wider
    # After epoch 9 nothing shows it: the finding stays as epoch 9 left it.
    calm = [*history, {"epoch": 10, "accuracy": 0.80, "val_accuracy": 0.78, "loss": 0.36,
                       "val_loss": 0.50}]
    assert overfitting(calm) == said[8]


def test_a_run_made_to_overfit_says_so_in_its_epoch_events(tmp_path):
    data = make_flat_dataset(tmp_path / "few", per_class=10)
    _, events = _run(data, tmp_path / "o", epochs=12, learning_rate=0.01,
                     early_stopping_patience=20, val_split=0.5)
    insights = [(e["epoch"], e["insight_since"], e["insight"]) for e in events
                if e["type"] == "epoch" and e["insight"]]
    assert insights, [(e["epoch"], e["accuracy"], e["val_accuracy"], e["loss"], e["val_loss"])
                      for e in events if e["type"] == "epoch"]
    since = insights[0][0]  # one finding, from the first epoch that shows it
    assert {s for _, s, _ in insights} == {since}
    assert insights[0][2].startswith(f"Overfitting from epoch {since}")
    assert all(text.startswith(f"Overfitting since epoch {since}") for *_, text in insights[1:])
    assert all(e["insight_since"] is None for e in events
               if e["type"] == "epoch" and not e["insight"])


def test_the_saved_model_loads_in_plain_keras_compiled(tiny_dataset, tmp_path):
    # The lab's confusion counts are for training only: a downloaded model.keras must load
    # in a Keras that has never seen this code, compiled as saved.
    import subprocess
    import sys

    _run(tiny_dataset, tmp_path, epochs=1)
    code = ("import sys, keras; m = keras.models.load_model(sys.argv[1]);"
            "print(type(m.optimizer).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.keras")],
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] in ("Adam", "AdamW")
