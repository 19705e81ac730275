"""tf.data input pipeline: read, decode, resize, cache, shuffle, batch, prefetch.

Images are cached as resized uint8 tensors (4x smaller than float) when they fit in the
memory budget, so each JPEG is decoded once per run, not once per epoch. Scaling to [0, 1]
and augmentation happen inside the model, so a saved model carries its own preprocessing.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

log = logging.getLogger(__name__)

# Cache decoded images in RAM up to this many bytes (LAB_CACHE_MB overrides).
DEFAULT_CACHE_MB = 4096


def cache_budget_bytes() -> int:
    """Memory the pipeline may use to cache decoded images."""
    return int(os.environ.get("LAB_CACHE_MB", DEFAULT_CACHE_MB)) * 1024 * 1024


def resize_to_uint8(image, image_size: int):
    """Resize an (h, w, 3) image to (size, size, 3) uint8, squashed, not cropped.

    Training and prediction both go through here, so a photo scores the same either way.
    """
    import tensorflow as tf

    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode_and_resize(data, image_size: int):
    """Decode JPEG/PNG/GIF/BMP bytes to a (size, size, 3) uint8 tensor."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return resize_to_uint8(image, image_size)


def make_dataset(df: pd.DataFrame, image_size: int, batch_size: int, *, shuffle: bool,
                 seed: int = 42, cache: bool | None = None):
    """A batched ``tf.data.Dataset`` of (uint8 image, float label) from a scan DataFrame.

    Files that fail to decode despite passing the scan (the scan reads only a file's head
    and tail, so a JPEG with garbage inside gets through) are dropped with a warning
    instead of stopping the run.
    """
    import tensorflow as tf

    if cache is None:
        cache = len(df) * image_size * image_size * 3 <= cache_budget_bytes()
        if not cache:
            log.info("not caching %d photos at %d px: over the %d MB budget (LAB_CACHE_MB)",
                     len(df), image_size, cache_budget_bytes() // 2**20)
    paths = df["image_path"].astype(str).to_numpy()
    labels = df["label"].astype("float32").to_numpy()
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))

    def load(path, label):
        return decode_and_resize(tf.io.read_file(path), image_size), label

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(len(df), 20_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
