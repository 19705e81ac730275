"""Evaluate a saved model on any dataset folder."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from ml.data import CLASS_NAMES, require_photos, scan
from ml.model_io import LoadedModel, load_model
from ml.photo_cache import PhotoCache

log = logging.getLogger(__name__)


def evaluate(model: str | os.PathLike[str] | LoadedModel, data_dir: str | os.PathLike[str],
             batch_size: int = 64, max_misclassified: int = 200) -> dict[str, Any]:
    """Accuracy, confusion matrix (rows: true dog/cat, cols: predicted dog/cat) and the
    misclassified files with their cat probability, worst first."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    result = scan(data_dir)
    require_photos(result)
    report = evaluate_frame(loaded.model, loaded.image_size, result.images, batch_size,
                            max_misclassified)
    return {"model": str(loaded.path), "data_dir": str(result.root), **report,
            "skipped": int(len(result.skipped))}


def evaluate_frame(model: Any, image_size: int, df: pd.DataFrame, batch_size: int = 64,
                   max_misclassified: int = 200, *, photos: PhotoCache | None = None
                   ) -> dict[str, Any]:
    """The same report for a Keras model and a DataFrame of photos (``image_path``, ``label``)
    (read from the shared photo cache when given)."""
    p, y_true = predict_frame(model, image_size, df, batch_size, photos=photos)
    return report(p, y_true, df, max_misclassified)


def predict_frame(model: Any, image_size: int, df: pd.DataFrame,
                  batch_size: int = 64, flip: bool = False, *,
                  photos: PhotoCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cat probabilities and true labels of the photos that decode, in the frame's order.

    ``flip`` averages each photo's probability with its mirror image's (test-time
    augmentation, for benchmarks: the Predict tab does not do it).
    """
    from ml.pipeline import make_dataset

    ds = make_dataset(df, image_size, batch_size, shuffle=False, cache=False, photos=photos)
    # Predict batch by batch so labels stay aligned even if a file fails to decode.
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for images, y in ds:
        p = np.asarray(model(images, training=False)).reshape(-1)
        if flip:
            mirrored = images[:, :, ::-1, :]  # (batch, rows, columns, channels): left-right
            p = (p + np.asarray(model(mirrored, training=False)).reshape(-1)) / 2
        probs.append(p)
        labels.append(y.numpy().astype(int))
    p = np.concatenate(probs) if probs else np.zeros(0)
    y_true = np.concatenate(labels) if labels else np.zeros(0, dtype=int)
    return p, y_true


def report(p: np.ndarray, y_true: np.ndarray, df: pd.DataFrame,
           max_misclassified: int = 200) -> dict[str, Any]:
    """Accuracy, confusion and misclassified photos from cat probabilities ``p``."""
    y_pred = (p >= 0.5).astype(int)
    confusion = [[int(np.sum((y_true == t) & (y_pred == q))) for q in (0, 1)] for t in (0, 1)]
    n = int(len(y_true))
    dropped = len(df) - n
    wrong = np.flatnonzero(y_true != y_pred)
    if dropped == 0:
        # Misclassified photos by name only when rows still line up with the frame.
        order = wrong[np.argsort(-np.abs(p[wrong] - 0.5))][:max_misclassified]
        misclassified = [
            {"image_path": str(df["image_path"].iloc[i]), "label": int(y_true[i]),
             "class_name": CLASS_NAMES[y_true[i]], "cat_probability": float(p[i])}
            for i in order
        ]
    else:
        log.warning("%d photos could not be decoded; misclassified list left out", dropped)
        misclassified = []
    return {
        "n": n,
        "accuracy": float(np.mean(y_true == y_pred)) if n else None,
        "confusion": confusion,
        "confusion_labels": list(CLASS_NAMES),
        "errors": int(len(wrong)),
        "undecodable": int(dropped),
        "misclassified": misclassified,
    }
