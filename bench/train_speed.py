"""Training speed by recipe, precision and augmentation: photos per second of ``model.fit``.

Each case trains on random uint8 images held in memory (the input pipeline is measured
separately by bench/pipeline_speed.py), one warm-up epoch and then ``--rounds`` timed
epochs. The cases take turns round by round, so a slow spell of a shared machine hits
them all alike; the median of the rounds is reported.

    python bench/train_speed.py --cases fast_cnn:96,sprint_cnn,res_cnn --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ml.tf_env import import_tensorflow_quietly, native_bfloat16, precision_policy  # noqa: E402

log = logging.getLogger("bench.train_speed")


def build(recipe: str, size: int, precision: str, augment: bool):
    from ml.recipes import build_model

    with precision_policy(precision):
        return build_model(recipe, size, augment=augment, learning_rate=1e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="fast_cnn:96,fast_cnn:128,res_cnn:128",
                        help="comma-separated recipe[:size]")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--augment", default="on,off")
    parser.add_argument("--photos", type=int, default=1280, help="photos per timed epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/out/results/train_speed.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_tensorflow_quietly()
    import numpy as np

    from ml.recipes import get_recipe

    rng = np.random.default_rng(0)
    cases = []
    for spec in args.cases.split(","):
        name, _, size = spec.partition(":")
        size = int(size) if size else get_recipe(name).image_size
        for precision in args.precisions.split(","):
            for augment in args.augment.split(","):
                model = build(name, size, precision, augment == "on")
                x = rng.integers(0, 256, (args.photos, size, size, 3), dtype=np.uint8)
                y = rng.integers(0, 2, args.photos).astype("float32")
                model.fit(x[:args.batch_size * 4], y[:args.batch_size * 4],
                          batch_size=args.batch_size, epochs=1, verbose=0)  # trace, warm up
                cases.append({"recipe": name, "size": size, "precision": precision,
                              "augment": augment == "on", "model": model, "x": x, "y": y,
                              "photos_per_s": []})
    for round_no in range(args.rounds):
        for case in cases:
            started = time.perf_counter()
            case["model"].fit(case["x"], case["y"], batch_size=args.batch_size, epochs=1,
                              verbose=0)
            case["photos_per_s"].append(args.photos / (time.perf_counter() - started))
        log.info("round %d of %d done", round_no + 1, args.rounds)
    rows = [{k: v for k, v in case.items() if k not in ("model", "x", "y")} for case in cases]
    for row in rows:
        row["median"] = statistics.median(row["photos_per_s"])
    result = {"cpu_native_bfloat16": native_bfloat16(), "cores": os.cpu_count(),
              "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| recipe | size | precision | augmentation | photos/s by round | median |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        rounds = ", ".join(f"{v:.0f}" for v in row["photos_per_s"])
        print(f"| {row['recipe']} | {row['size']} | {row['precision']} | "
              f"{'on' if row['augment'] else 'off'} | {rounds} | **{row['median']:.0f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
