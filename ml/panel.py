"""The panel: a fixed set of validation photos a run scores after every epoch, so a viewer
sees the network change its mind about real photos; and, at the end, where the kept model
looked in each of them (Grad-CAM).

The photos are chosen once per run with the run's seed (half cats, half dogs), so a resumed
run shows the same panel, and a replayed run draws what a live viewer saw.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.photo_cache import PhotoCache

log = logging.getLogger(__name__)

PANEL_SIZE = 16
PANEL_FOLDER = "panel"  # in the run's folder: the heat-maps of the kept model
HEATMAP_SIDE = 256


def choose_panel(val_df: pd.DataFrame, size: int = PANEL_SIZE, seed: int = 42) -> pd.DataFrame:
    """Up to ``size`` validation photos, half cats then half dogs, picked with ``seed``."""
    parts = []
    for label in (1, 0):  # cats, then dogs
        of_class = val_df[val_df["label"] == label]
        parts.append(of_class.sample(n=min(size // 2, len(of_class)), random_state=seed))
    return pd.concat(parts)


class Panel:
    """The panel's photos decoded at the run's image size, ready to score every epoch."""

    def __init__(self, df: pd.DataFrame, root: Path, image_size: int,
                 photos: PhotoCache | None = None):
        self.root = Path(root)
        paths = df["image_path"].astype(str).tolist()
        labels = df["label"].astype(int).tolist()
        images: list[np.ndarray] = []
        kept: list[int] = []
        if photos is not None:
            for i, path in enumerate(paths):
                row = photos.rows[Path(path).relative_to(photos.root).as_posix()]
                if photos.decoded[row]:  # photos that did not decode are left out
                    images.append(np.asarray(photos.images[row]))
                    kept.append(i)
        else:
            import tensorflow as tf

            from ml.pipeline import decode_and_resize

            for i, path in enumerate(paths):
                try:
                    images.append(decode_and_resize(tf.io.read_file(path), image_size).numpy())
                except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
                    log.warning("panel photo %s left out: %s", path, exc.message)
                    continue
                kept.append(i)
        self.paths = [paths[i] for i in kept]
        self.labels = [labels[i] for i in kept]
        self.images = (np.stack(images) if images
                       else np.zeros((0, image_size, image_size, 3), dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self, path: str) -> str:
        """A photo's path relative to the dataset folder, as events carry it."""
        return Path(path).relative_to(self.root).as_posix()

    def score(self, model: Any) -> list[dict[str, Any]]:
        """``[{image, label, cat_probability}]`` of the model as it is now (inference mode)."""
        if not len(self):
            return []
        p = np.asarray(model(self.images, training=False), dtype=np.float32).reshape(-1)
        return [{"image": self.relative(path), "label": label, "cat_probability": float(q)}
                for path, label, q in zip(self.paths, self.labels, p, strict=True)]

    def explain(self, model: Any, image_size: int, out: Path) -> list[dict[str, Any]]:
        """Grad-CAM of the model for each photo, saved as PNGs in ``out/panel``;
        ``[{image, label, cat_probability, heatmap}]`` with ``heatmap`` relative to ``out``."""
        from ml.errors import ImageError
        from ml.model_io import LoadedModel
        from ml.predict import gradcam, overlay_png, read_photo

        loaded = LoadedModel(model=model, card={"image_size": image_size}, path=out)
        folder = out / PANEL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        explained = []
        for n, (path, label) in enumerate(zip(self.paths, self.labels, strict=True)):
            name = f"{PANEL_FOLDER}/{n:02d}.png"
            try:
                photo = read_photo(Path(path).read_bytes()).image
                heatmap, p = gradcam(loaded, photo)
                (out / name).write_bytes(overlay_png(photo, heatmap, max_side=HEATMAP_SIDE))
            except (OSError, ImageError) as exc:
                # Heat-maps are a view, not the run's result: a photo gone or a full disk
                # leaves that one out, never the model.
                log.warning("no heat-map for panel photo %s: %s", path, exc)
                continue
            explained.append({"image": self.relative(path), "label": label,
                              "cat_probability": p, "heatmap": name})
        return explained
