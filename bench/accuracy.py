"""Held-out accuracy benchmark: train a recipe on part of a dataset, test on photos it never saw.

The dataset is split once (stratified, fixed seed) into a training folder and a held-out
folder of symbolic links; ``ml.train`` sees only the training folder (and splits its own
validation part from it); ``ml.evaluate`` then measures the held-out folder. Results go to
``bench/out/results/<recipe>.json`` and a Markdown row is printed for docs/BENCHMARKS.md.

    python bench/accuracy.py --data ../shared/data/dogs-vs-cats/train --recipe fast_cnn
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.curve import load as load_curve  # noqa: E402
from core.settings import load_ml_options  # noqa: E402
from ml.data import scan, split_frame  # noqa: E402
from ml.evaluate import evaluate  # noqa: E402
from ml.model_io import MODEL_FILE  # noqa: E402
from ml.tf_env import import_tensorflow_quietly  # noqa: E402
from ml.train import train  # noqa: E402

log = logging.getLogger("bench.accuracy")


def make_split(data: Path, work: Path, holdout: float, seed: int) -> tuple[Path, Path]:
    """Symlink folders ``train/`` and ``holdout/``; names carry the class so labels survive."""
    folder = work / f"split-h{holdout:g}-s{seed}"
    train_dir, test_dir = folder / "train", folder / "holdout"
    if (folder / "done").exists():
        return train_dir, test_dir
    df = scan(data).images
    train_df, test_df = split_frame(df, holdout, seed=seed)
    for target, part in ((train_dir, train_df), (test_dir, test_df)):
        target.mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(part.itertuples()):
            src = Path(row.image_path)
            link = target / f"{row.class_name}.{i}{src.suffix.lower()}"
            if not link.exists():
                link.symlink_to(src)
    (folder / "done").write_text(json.dumps({"train": len(train_df), "holdout": len(test_df)}))
    return train_dir, test_dir


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", default="fast_cnn")
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=2026)
    parser.add_argument("--work", default="bench/out")
    parser.add_argument("--epochs", type=int, help="default: the recipe's own")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--early-stopping-patience", type=int)
    parser.add_argument("--lr-patience", type=int)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--schedule", choices=("plateau", "cosine", "one_cycle"))
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--val-split", type=float)
    parser.add_argument("--small-image-size", type=int,
                        help="progressive resizing: the first epochs at this size")
    parser.add_argument("--small-epochs", type=int, help="how many epochs at the small size")
    parser.add_argument("--seed", type=int, help="the run's seed (weights, shuffling, "
                        "augmentation, its validation split); the held-out split stays")
    parser.add_argument("--augment", choices=("on", "off"))
    parser.add_argument("--photo-cache", metavar="DIR",
                        help="read the photos from the lab's decoded-photo cache in DIR (built "
                             "first if need be, outside the training time), as a lab's runs do")
    parser.add_argument("--tag", default="", help="suffix for the result file name")
    parser.add_argument("--resume", action="store_true",
                        help="back up after every epoch and carry on from there when started "
                             "again (for runs of hours; use the same arguments)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_tensorflow_quietly()

    work = Path(args.work)
    train_dir, test_dir = make_split(Path(args.data), work, args.holdout, args.split_seed)
    config = {"recipe": args.recipe}
    for key in ("epochs", "image_size", "batch_size", "learning_rate", "early_stopping_patience",
                "lr_patience", "limit", "schedule", "label_smoothing", "weight_decay", "precision",
                "val_split", "seed", "small_image_size", "small_epochs"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.augment:
        config["augment"] = args.augment == "on"
    name = args.recipe + (f"-{args.tag}" if args.tag else "")
    out = work / "models" / name
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    # Every epoch is appended as it ends, so the curve of a run that is stopped and resumed
    # (or still going) can be read at any time.
    curve_path = results / f"{name}.epochs.jsonl"
    resume_dir = work / "backup" / name if args.resume else None
    if not (resume_dir and resume_dir.is_dir()):
        curve_path.unlink(missing_ok=True)

    started_event: dict = {}

    def on_event(event: dict) -> None:
        if event["type"] == "run_started":
            started_event.update(event)
        if event["type"] == "epoch":
            with curve_path.open("a") as f:
                f.write(json.dumps({k: event[k] for k in (
                    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                    "images_per_s")}) + "\n")
            log.info("epoch %d  loss %.4f acc %.4f  val_loss %.4f val_acc %.4f  lr %.2g  %.0f s",
                     event["epoch"], event["loss"], event["accuracy"], event["val_loss"],
                     event["val_accuracy"], event["lr"], event["seconds"])
        elif event["type"] in ("lr_reduced", "early_stopped"):
            log.info("%s", event)

    started = time.monotonic()
    summary = train(config, train_dir, out, on_event=on_event, resume_dir=resume_dir,
                    photo_cache_dir=args.photo_cache,
                    options=load_ml_options())  # LAB_CACHE_MB and the like, as a worker's
    wall = time.monotonic() - started
    report = evaluate(out / MODEL_FILE, test_dir)
    metrics = summary["metrics"]
    history = load_curve(curve_path)  # a resumed epoch replaces its interrupted self
    first_90 = [row["epoch"] for row in history if row["val_accuracy"] >= 0.9]
    elapsed, to_90 = 0.0, None
    for row in history:
        elapsed += row["seconds"]
        if to_90 is None and row["val_accuracy"] >= 0.9:
            to_90 = elapsed
    result = {
        "recipe": args.recipe,
        "config": summary["config"],
        "image_size": summary["image_size"],
        "train_photos": summary["counts"]["train"],
        "val_photos": summary["counts"]["val"],
        "holdout_photos": report["n"],
        "holdout_accuracy": report["accuracy"],
        "holdout_confusion": report["confusion"],
        "best_val_accuracy": metrics["best_val_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": len(history),
        "first_epoch_val_at_least_90": first_90[0] if first_90 else None,
        "seconds_to_first_val_at_least_90": to_90,
        # the sum of epoch times (validation included): right across resumes too
        "train_seconds": sum(row["seconds"] for row in history),
        "fit_seconds_last_session": metrics["train_seconds"],
        "wall_seconds_incl_scan_and_save": wall,
        "train_images_per_s": sum(row["images_per_s"] for row in history) / len(history),
        "precision": summary["precision"],
        "photo_cache": started_event.get("photo_cache"),
        "history": history,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    (results / f"{name}.json").write_text(json.dumps(result, indent=2))
    log.info("held-out accuracy %.4f on %d photos", report["accuracy"], report["n"])
    print(f"| {args.recipe} | {result['image_size']} | {result['epochs_run']} "
          f"(best {result['best_epoch']}) | {result['train_seconds'] / 60:.1f} min | "
          f"{result['train_images_per_s']:.0f} | {result['best_val_accuracy']:.4f} | "
          f"**{result['holdout_accuracy']:.4f}** ({report['n']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
