"""Does the input pipeline keep the model busy? Training photos/s, real pipeline vs in memory.

Trains the same model (same recipe, size, batch, augmentation, seed) for a few epochs twice:
- **pipeline**: ``ml.pipeline.make_dataset`` over the files, as every run does (read, decode
  and resize in parallel on the first epoch, then the cached uint8 tensors);
- **in memory**: the same photos decoded beforehand into one uint8 array and fed with
  ``tf.data.Dataset.from_tensor_slices``: no input cost at all, the upper bound.

Each epoch is timed by a callback (training only, no validation). The figure of merit is the
pipeline's photos/s over the in-memory photos/s, for the first (cold, decoding) epoch and for
the later (cached) ones. Photos come from ../shared/data when present, else are generated.

    python bench/pipeline_speed.py --photos 3000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import scan, stratified_sample  # noqa: E402
from ml.tf_env import import_tensorflow_quietly  # noqa: E402
from testkit.synthetic import make_flat_dataset  # noqa: E402

log = logging.getLogger("bench.pipeline_speed")
OUT = Path(__file__).resolve().parent / "out" / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train"


def epoch_rates(model, dataset, epochs: int, photos: int) -> list[float]:
    """Photos/s of each training epoch."""
    import keras

    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[Clock()])
    return [photos / t for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--recipe", default="fast_cnn")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_tensorflow_quietly()
    import keras
    import numpy as np
    import tensorflow as tf

    from ml.pipeline import decode_and_resize, make_dataset
    from ml.recipes import build_model

    with tempfile.TemporaryDirectory(prefix="lab-pipeline-") as tmp:
        data = Path(args.data)
        source = "shared Kaggle JPEGs"
        if not data.is_dir():
            data, source = make_flat_dataset(Path(tmp) / "data", args.photos // 2, size=200), \
                "generated 200 px JPEGs"
        df = stratified_sample(scan(data).images, args.photos, seed=1)
        n = len(df)
        augment = not args.no_augment

        def fresh_model():
            keras.utils.set_random_seed(7)
            return build_model(args.recipe, args.image_size, augment=augment,
                               learning_rate=1e-3)

        pipeline = make_dataset(df, args.image_size, args.batch_size, shuffle=True, seed=1)
        piped = epoch_rates(fresh_model(), pipeline, args.epochs, n)
        log.info("pipeline photos/s by epoch: %s", [round(r) for r in piped])

        start = time.perf_counter()
        images = np.stack([decode_and_resize(tf.io.read_file(p), args.image_size).numpy()
                           for p in df["image_path"].astype(str)])
        preload_s = time.perf_counter() - start
        labels = df["label"].astype("float32").to_numpy()
        memory = (tf.data.Dataset.from_tensor_slices((images, labels))
                  .shuffle(n, seed=1, reshuffle_each_iteration=True)
                  .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
        in_memory = epoch_rates(fresh_model(), memory, args.epochs, n)
        log.info("in-memory photos/s by epoch: %s (decoding beforehand took %.1f s, one "
                 "thread)", [round(r) for r in in_memory], preload_s)

    warm_pipe = statistics.median(piped[1:]) if len(piped) > 1 else piped[0]
    warm_mem = statistics.median(in_memory[1:]) if len(in_memory) > 1 else in_memory[0]
    result = {
        "bench": "pipeline_speed", "recipe": args.recipe, "image_size": args.image_size,
        "batch_size": args.batch_size, "augment": augment, "photos": n, "source": source,
        "epochs": args.epochs, "pipeline_per_epoch": piped, "in_memory_per_epoch": in_memory,
        "first_epoch_ratio": piped[0] / statistics.median(in_memory),
        "cached_epochs_ratio": warm_pipe / warm_mem,
        # The shared VM alternates fast and slow epochs; the best epochs compare the two
        # feeds when both had the machine to themselves.
        "best_epoch_ratio": max(piped[1:] or piped) / max(in_memory[1:] or in_memory),
        "preload_seconds": preload_s,
        "machine": f"{os.uname().nodename} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline_speed.json").write_text(json.dumps(result, indent=2))
    log.info("| %s %d px, batch %d%s | %d photos | pipeline %.0f photos/s (first epoch %.0f) "
             "| in memory %.0f photos/s | cached epochs %.0f %% (best epochs %.0f %%) | "
             "first epoch %.0f %% |", args.recipe, args.image_size, args.batch_size,
             ", augmented" if augment else "", n, warm_pipe, piped[0], warm_mem,
             100 * result["cached_epochs_ratio"], 100 * result["best_epoch_ratio"],
             100 * result["first_epoch_ratio"])


if __name__ == "__main__":
    main()
