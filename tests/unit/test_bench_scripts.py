"""bench/ensemble.py, run as a person would: per-model and averaged held-out accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from testkit.paths import ROOT


def ensemble(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/ensemble.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def leaning_model(folder: Path, size: int, bias: float) -> Path:
    """Cat probability from the photo's mean red (synthetic cats are warm, dogs cool).

    bias 0 says 0.9 for cats and 0.6 for dogs (every photo a cat); bias -2.6 says 0.4 and
    0.1 (every photo a dog). Each is right half the time; their mean is right every time.
    """
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.array([[2.75], [0.0], [0.0]]), np.array([bias])])
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    return folder


def test_ensemble_averages_probabilities_and_counts_shared_errors(tiny_dataset, tmp_path):
    says_cat = leaning_model(tmp_path / "cat", 32, 0.0)
    says_dog = leaning_model(tmp_path / "dog", 40, -2.6)  # each model gets its own size
    out = tmp_path / "ens.json"
    done = ensemble(str(says_cat), str(says_dog), "--holdout", str(tiny_dataset),
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["models"] == [{"model": str(m), "accuracy": 0.5, "errors": 24}
                                for m in (says_cat, says_dog)]
    assert result["errors_shared_by_all"] == 0
    # A sum, a vote or the first model alone would say 0.5 here.
    assert result["ensemble_accuracy"] == 1.0 and result["holdout_photos"] == 48
    assert result["ensemble_confusion"] == [[24, 0], [0, 24]]

    done = ensemble(str(says_cat), str(says_cat), "--holdout", str(tiny_dataset),
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    twice = json.loads(out.read_text())
    assert twice["ensemble_accuracy"] == 0.5 and twice["errors_shared_by_all"] == 24
    assert [m["errors"] for m in twice["models"]] == [24, 24]


def test_ensemble_without_its_holdout_folder_says_so(tiny_dataset, tmp_path):
    model = leaning_model(tmp_path / "m", 32, 0.0)
    done = ensemble(str(model), "--holdout", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "ens.json"))
    assert done.returncode == 2
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "ens.json").exists()


def sided_model(folder: Path, size: int) -> Path:
    """Says cat when the left half is redder than the right (logit 4 * (left - right) + 0.5).

    On its mirror image every answer turns over, so with --flip each photo's two answers
    average to the same value above 0.5: every photo is then called a cat.
    """
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    # One filter the size of the image: + on the left half's red, - on the right half's.
    conv = keras.layers.Conv2D(1, size, use_bias=False)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(conv(x))))
    kernel = np.zeros((size, size, 3, 1))
    kernel[:, : size // 2, 0, 0] = 2.0 / (size * size)
    kernel[:, size // 2:, 0, 0] = -2.0 / (size * size)
    conv.set_weights([kernel])
    dense.set_weights([np.array([[4.0]]), np.array([0.5])])
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    return folder


def sided_photos(folder: Path, per_class: int, size: int) -> Path:
    """Cats red on the left half, dogs red on the right (PNG: no blur across the middle)."""
    from PIL import Image

    folder.mkdir(parents=True)
    for kind, red_cols in (("cat", slice(0, size // 2)), ("dog", slice(size // 2, size))):
        for i in range(per_class):
            pixels = np.zeros((size, size, 3), dtype=np.uint8)
            pixels[:, red_cols, 0] = 255
            pixels[:, :, 1] = 10 * i  # photos differ, the halves do not
            Image.fromarray(pixels).save(folder / f"{kind}.{i}.png")
    return folder


def test_flip_averages_each_photo_with_its_mirror_image(tmp_path):
    photos = sided_photos(tmp_path / "holdout", per_class=6, size=16)
    model = sided_model(tmp_path / "m", 16)
    out = tmp_path / "flip.json"

    plain = ensemble(str(model), "--holdout", str(photos), "--out", str(out))
    assert plain.returncode == 0, plain.stderr
    result = json.loads(out.read_text())
    assert result["flip"] is False
    assert result["ensemble_accuracy"] == 1.0 and result["ensemble_confusion"] == [[6, 0], [0, 6]]

    # A vertical flip, or none, would leave every answer right; a left-right one does not.
    flipped = ensemble("--flip", str(model), "--holdout", str(photos), "--out", str(out))
    assert flipped.returncode == 0, flipped.stderr
    result = json.loads(out.read_text())
    assert result["flip"] is True
    assert result["models"] == [{"model": str(model), "accuracy": 0.5, "errors": 6}]
    assert result["ensemble_confusion"] == [[0, 6], [0, 6]]
