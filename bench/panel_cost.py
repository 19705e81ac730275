"""What watching the model learn costs a run: the per-epoch panel (16 validation photos
scored after each epoch) and the confusion counts riding on each validation pass.

It trains the default recipe (``fast_cnn`` at its 128 px) on real photos, one epoch at a
time, alternating a model compiled with accuracy alone and one with the four confusion
metrics too (the lab's), and times the panel's scoring after each epoch. The report gives
the epoch time of each, and the panel's time and both costs as a share of an epoch.

    python bench/panel_cost.py --data ../shared/data/dogs-vs-cats/train --photos 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reports import write_report  # noqa: E402 - bench/, the script's own folder

log = logging.getLogger("bench.panel_cost")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats/train"))
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/out/results/panel_cost.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not Path(args.data).is_dir():
        log.error("no dataset at %s (--data)", args.data)
        return 2
    import keras

    from ml.data import scan, split_frame, stratified_sample
    from ml.panel import Panel, choose_panel
    from ml.pipeline import make_dataset
    from ml.recipes import RECIPES, confusion_metrics, get_recipe

    recipe = RECIPES["fast_cnn"]
    size, batch = recipe.image_size, 32
    result = scan(args.data)
    df = stratified_sample(result.images, args.photos, seed=1)
    train_df, val_df = split_frame(df, 0.15, seed=1)
    train_ds = make_dataset(train_df, size, batch, shuffle=True, seed=1)
    val_ds = make_dataset(val_df, size, batch, shuffle=False)
    panel = Panel(choose_panel(val_df, seed=1), result.root, size)

    def model(with_confusion: bool):
        m = get_recipe("fast_cnn").build(size, True)
        m.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  loss="binary_crossentropy",
                  metrics=["accuracy", *(confusion_metrics() if with_confusion else [])])
        return m

    models = {"accuracy only": model(False), "with confusion": model(True)}
    for m in models.values():  # first epoch: decoding into the pipeline's cache, tracing
        m.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
        panel.score(m)
    epoch_s: dict[str, list[float]] = {name: [] for name in models}
    panel_s: list[float] = []
    for n in range(args.rounds):
        # Each round in the other order, so neither is always the second of the pair.
        for name, m in (list(models.items()) if n % 2 == 0 else list(models.items())[::-1]):
            t = time.perf_counter()
            m.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
            epoch_s[name].append(time.perf_counter() - t)
            if name == "with confusion":
                t = time.perf_counter()
                panel.score(m)
                panel_s.append(time.perf_counter() - t)
            log.info("round %d %s: epoch %.1f s", n + 1, name, epoch_s[name][-1])
    plain = statistics.median(epoch_s["accuracy only"])
    with_confusion = statistics.median(epoch_s["with confusion"])
    panel_median = statistics.median(panel_s)
    write_report({
        "recipe": "fast_cnn", "image_size": size, "batch_size": batch,
        "train_photos": len(train_df), "val_photos": len(val_df), "panel_photos": len(panel),
        "epoch_s": epoch_s, "panel_s": panel_s,
        "median_epoch_s": {"accuracy only": plain, "with confusion": with_confusion},
        "panel_share_of_epoch": panel_median / plain,
        "confusion_share_of_epoch": (with_confusion - plain) / plain,
        "both_share_of_epoch": (with_confusion + panel_median - plain) / plain,
    }, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
