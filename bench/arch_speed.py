"""Training speed of res_cnn's shape: width, depth, stem and batch size, in photos per second.

Issue 21 asks which net this 2-core CPU trains fastest per photo before any of them is
trained for accuracy. Each variant is res_cnn's builder with one thing changed; all train
with bfloat16 and augmentation on (as res_cnn does) on random uint8 images held in memory,
one warm-up epoch and then ``--rounds`` timed epochs, the variants taking turns round by
round so a slow spell of this shared machine hits them all alike. Reported: the median
photos/s, the cores kept busy, and the median ratio to the first case in the same round
(the steadiest figure here, where the CPU's speed swings from minute to minute).

    python bench/arch_speed.py --size 160 --rounds 8
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ml.tf_env import import_tensorflow_quietly, native_bfloat16, precision_policy  # noqa: E402

log = logging.getLogger("bench.arch_speed")

RES_CNN = {
    "stem": 32,
    "stem_b": 48,
    "stem_pool": True,
    "widths": (64, 128, 256, 384),
    "blocks": (1, 1, 1, 1),
}
# One change each from res_cnn (name: overrides), so each row says what that change costs.
VARIANTS: dict[str, dict[str, Any]] = {
    "res_cnn": {},
    "no_stem_b": {"stem_b": 0},
    "stem_b_after_pool": {"stem_b": -48},
    "narrow": {"widths": (48, 96, 192, 320)},
    "wide": {"widths": (96, 192, 384, 512)},
    "deep_late": {"blocks": (1, 1, 2, 2)},
    "deep_all": {"blocks": (2, 2, 2, 2)},
}


def build_variant(
    size: int,
    augment: bool,
    stem: int,
    stem_b: int,
    stem_pool: bool,
    widths: tuple[int, ...],
    blocks: tuple[int, ...],
) -> Any:
    """res_cnn's builder with its shape as arguments; stem_b < 0 puts that convolution
    after the pooling (a quarter of the pixels), 0 leaves it out."""
    import keras
    from keras import layers

    from ml.recipes import _conv_bn, _inputs, _res_block

    inputs, x = _inputs(size, augment)
    x = _conv_bn(x, stem, strides=2, name="stem")
    if stem_b > 0:
        x = _conv_bn(x, stem_b, name="stem_b")
    if stem_pool:
        x = layers.MaxPooling2D(name="stem_pool")(x)
    if stem_b < 0:
        x = _conv_bn(x, -stem_b, name="stem_b")
    for i, (filters, count) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(count):
            strides = 2 if i > 0 and j == 0 else 1
            x = _res_block(x, filters, strides, name=f"stage{i + 1}_{j}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="cat_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="variant")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-sizes", default="64", help="comma-separated")
    parser.add_argument("--augment", choices=("on", "off"), default="on")
    parser.add_argument("--photos", type=int, default=256, help="photos per timed epoch")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default="bench/out/results/arch_speed.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_tensorflow_quietly()
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.photos, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, args.photos).astype("float32")
    cases = []
    for name in args.variants.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            with precision_policy("bfloat16"):
                model = build_variant(
                    args.size, args.augment == "on", **{**RES_CNN, **VARIANTS[name]}
                )
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
            model.fit(
                x[: batch_size * 3], y[: batch_size * 3], batch_size=batch_size, epochs=1, verbose=0
            )  # trace and warm up
            cases.append(
                {
                    "variant": name,
                    "batch_size": batch_size,
                    "model": model,
                    "parameters": model.count_params(),
                    "photos_per_s": [],
                    "busy_cores": [],
                }
            )
            log.info("built %s, batch %d: %d parameters", name, batch_size, cases[-1]["parameters"])
    for round_no in range(args.rounds):
        for case in cases:
            started, cpu_started = time.perf_counter(), time.process_time()
            case["model"].fit(x, y, batch_size=case["batch_size"], epochs=1, verbose=0)
            wall = time.perf_counter() - started
            case["photos_per_s"].append(args.photos / wall)
            # Cores kept busy: low when the machine (not the net) is the limit that round.
            case["busy_cores"].append((time.process_time() - cpu_started) / wall)
        log.info("round %d of %d done", round_no + 1, args.rounds)
    rows = [{k: v for k, v in case.items() if k != "model"} for case in cases]
    for row in rows:
        row["median"] = statistics.median(row["photos_per_s"])
        row["median_busy_cores"] = statistics.median(row["busy_cores"])
        # Against the first case in the same round: the machine's speed swings (up to 2x
        # here from one minute to the next) cancel out of a ratio taken seconds apart.
        row["median_ratio"] = statistics.median(
            v / b for v, b in zip(row["photos_per_s"], rows[0]["photos_per_s"], strict=True)
        )
    result = {
        "cpu_native_bfloat16": native_bfloat16(),
        "cores": os.cpu_count(),
        "size": args.size,
        "augment": args.augment,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    lines = [
        "| variant | batch | parameters | photos/s by round | median | busy cores "
        "| against the first |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        rounds = ", ".join(f"{v:.0f}" for v in row["photos_per_s"])
        lines.append(
            f"| {row['variant']} | {row['batch_size']} | "
            f"{row['parameters'] / 1e6:.2f} M | {rounds} | **{row['median']:.0f}** | "
            f"{row['median_busy_cores']:.2f} | {row['median_ratio']:.2f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
