"""tf.data input pipeline: read, decode, resize, cache, shuffle, batch, prefetch.

Images are cached as resized uint8 tensors (4x smaller than float) when they fit in the
memory budget, so each JPEG is decoded once per run, not once per epoch; with a shared
photo cache (``ml.photo_cache``) batches are gathered from it and nothing is decoded at all.
Scaling to [0, 1] and augmentation happen inside the model, so a saved model carries its
own preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from ml.options import MlOptions
from ml.photo_cache import PhotoCache

log = logging.getLogger(__name__)


def cache_budget_bytes(options: MlOptions | None = None) -> int:
    """Memory the pipeline may use to cache decoded images: ``options.cache_mb``
    (the defaults when None, ``ml.options``)."""
    return (options or MlOptions()).cache_mb * 1024 * 1024


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


def decode_many(paths: list[str], image_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(position, image) for each of the photos that decode, in any order, decoded in
    parallel (building the shared photo cache)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.array(paths)))
    ds = ds.map(lambda i, p: (i, decode_and_resize(tf.io.read_file(p), image_size)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(256).prefetch(2)
    for positions, batch in ds.as_numpy_iterator():
        yield from zip(positions.tolist(), batch, strict=True)


def make_dataset(df: pd.DataFrame, image_size: int, batch_size: int, *, shuffle: bool,
                 seed: int = 42, cache: bool | None = None,
                 photos: PhotoCache | None = None, options: MlOptions | None = None):
    """A batched ``tf.data.Dataset`` of (uint8 image, float label) from a scan DataFrame.

    Files that fail to decode despite passing the scan (the scan reads only a file's head
    and tail, so a JPEG with garbage inside gets through) are dropped with a warning
    instead of stopping the run. With ``photos`` (the shared cache of the dataset at this
    size) the images come from it. Without ``cache``, images are cached in RAM when they fit
    the budget of ``options`` (see :func:`cache_budget_bytes`).
    """
    import tensorflow as tf

    if photos is not None:
        return _from_photo_cache(photos, df, batch_size, shuffle=shuffle, seed=seed)

    if cache is None:
        budget = cache_budget_bytes(options)
        cache = len(df) * image_size * image_size * 3 <= budget
        if not cache:
            log.info("not caching %d photos at %d px: over the %d MB budget (LAB_CACHE_MB)",
                     len(df), image_size, budget // 2**20)
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


def _from_photo_cache(photos: PhotoCache, df: pd.DataFrame, batch_size: int, *,
                      shuffle: bool, seed: int):
    """Batches gathered from the memory-mapped cache: indices are shuffled and batched, and
    each batch of rows is copied out in one go (a per-photo Python call would be slower)."""
    import tensorflow as tf

    rows, labels = photos.select(df)
    size = photos.image_size
    ds = tf.data.Dataset.from_tensor_slices((rows, labels.astype("float32")))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)

    def gather(batch_rows: np.ndarray) -> np.ndarray:
        return photos.images[batch_rows]

    def load(batch_rows, batch_labels):
        images = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
        images.set_shape([None, size, size, 3])
        return images, batch_labels

    return ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True).prefetch(tf.data.AUTOTUNE)
