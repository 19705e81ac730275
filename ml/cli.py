"""Command line: ``python -m ml scan|train|evaluate|predict|download`` (stable forms).

Every error a person can fix exits non-zero with one clear sentence and no traceback
(``--debug`` shows the traceback). The one module of ml/ that reads the lab's settings
(``core.settings.load_ml_options``: weights, Kaggle, the cache budget): the library itself
is told them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.settings import load_ml_options
from ml.config import TrainConfig
from ml.errors import LabError
from ml.model_io import MODEL_FILE
from ml.tf_env import import_tensorflow_quietly

log = logging.getLogger("ml")

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one sentence, like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"error: {message} (see '{self.prog} --help')\n")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def cmd_scan(args: argparse.Namespace) -> int:
    from ml.data import scan

    result = scan(args.dir)
    summary = result.summary()
    if args.json:
        if args.list_skipped:
            summary["skipped_files"] = result.skipped.to_dict(orient="records")
        _print_json(summary)
        return 0
    print(f"{summary['root']}: {summary['total']} photos "
          f"({summary['cats']} cats, {summary['dogs']} dogs), {summary['skipped']} skipped")
    for reason, count in summary["skipped_reasons"].items():
        print(f"  skipped {count}: {reason}")
    if args.list_skipped:
        for row in result.skipped.itertuples():
            print(f"  {row.image_path}: {row.reason}")
    return 0


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    # Every config key is a long option of `train` (tests/test_cli.py checks it).
    keys = [f.name for f in fields(TrainConfig)]
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


class _ProgressBar:
    """A tqdm bar per epoch driven by the training events, plus one log line per epoch."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        kind = event["type"]
        if kind == "run_started":
            log.info("training %s at %d px: %d train / %d validation photos, %d epochs, "
                     "%s schedule, %s", event["recipe"], event["image_size"],
                     event["train_count"], event["val_count"], event["epochs"],
                     event.get("schedule", "plateau"), event.get("precision", "float32"))
            self.epochs = event["epochs"]
        elif kind == "batch" and self.enabled:
            if self.bar is None:
                self.bar = tqdm(total=event["steps"], unit="batch", leave=False,
                                desc=f"epoch {event['epoch']}/{self.epochs}", file=sys.stderr)
            self.bar.n = event["step"]
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['accuracy']:.3f}",
                                 img_s=f"{event['images_per_s']:.0f}", refresh=False)
            self.bar.refresh()
        elif kind == "epoch":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            log.info("epoch %d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f | lr %.2g | %.0f s",
                     event["epoch"], event["loss"] or 0, event["accuracy"] or 0,
                     event["val_loss"] or 0, event["val_accuracy"] or 0, event["lr"],
                     event["seconds"])
        elif kind == "lr_reduced":
            log.info("learning rate reduced %.2g -> %.2g", event["old_lr"], event["new_lr"])
        elif kind == "early_stopped":
            log.info("early stop at epoch %d (best epoch %s)", event["epoch"], event["best_epoch"])


def cmd_train(args: argparse.Namespace) -> int:
    from ml.config import parse_config
    from ml.train import train

    config = parse_config(_config_from_args(args))  # bad options fail before any scan
    import_tensorflow_quietly()  # only now: a bad option is answered in a second, not ten
    summary = train(config, args.data, args.out,
                    on_event=_ProgressBar(sys.stderr.isatty() or args.progress),
                    photo_cache_dir=args.photo_cache, options=args.ml_options)
    metrics = summary["metrics"]
    if args.json:
        _print_json(summary)
    else:
        print(f"saved {Path(args.out) / MODEL_FILE}: best validation accuracy "
              f"{metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']} "
              f"({metrics['train_seconds']:.0f} s, {summary['status']})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ml.evaluate import evaluate

    report = evaluate(args.model, args.data, batch_size=args.batch_size)
    if args.json:
        _print_json(report)
    else:
        (dd, dc), (cd, cc) = report["confusion"]
        print(f"accuracy {report['accuracy']:.4f} on {report['n']} photos")
        print(f"             predicted dog  predicted cat\n  true dog   {dd:13d}  {dc:13d}"
              f"\n  true cat   {cd:13d}  {cc:13d}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ml.errors import ImageError
    from ml.model_io import load_model
    from ml.predict import predict_bytes

    loaded = load_model(args.model)
    failures = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
            result = predict_bytes(loaded, data)
        except (OSError, ImageError) as exc:
            failures += 1
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{name}\terror: {message}")
            continue
        if args.json:
            print(json.dumps({"file": name, **result}))
        else:
            print(f"{name}\t{result['label']}\t{result['confidence']:.1%} "
                  f"(cat probability {result['cat_probability']:.4f})")
    return EXIT_ERROR if failures else 0


def cmd_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ml.fetch import download_dataset

    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="download",
               disable=not (args.progress or sys.stderr.isatty()))

    def on_progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        summary = download_dataset(args.dest, source=args.source, url=args.url,
                                   sha256=args.sha256, force=args.force, options=args.ml_options,
                                   on_progress=on_progress)
    finally:
        bar.close()
    print(f"unpacked {summary['total']} photos ({summary['cats']} cats, {summary['dogs']} dogs, "
          f"{summary['skipped']} skipped) into {summary['root']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ml", description="Kitten-and-Puppy Lab: cat/dog CNNs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("scan", help="count the photos in a dataset folder")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--list-skipped", action="store_true", help="name every skipped file")
    p.set_defaults(func=cmd_scan)

    from ml.config import PRECISIONS, SCHEDULES
    from ml.recipes import RECIPES

    p = sub.add_parser("train", help="train a model and save it with its card")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder for model.keras and card.json")
    p.add_argument("--recipe", choices=list(RECIPES))
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--val-split", type=float)
    p.add_argument("--early-stopping-patience", type=int)
    p.add_argument("--lr-factor", type=float)
    p.add_argument("--lr-patience", type=int)
    p.add_argument("--limit", type=int, help="use at most N photos (stratified)")
    p.add_argument("--seed", type=int)
    p.add_argument("--schedule", choices=list(SCHEDULES), help="learning-rate schedule")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--weight-decay", type=float, help="above 0: AdamW with this decay")
    p.add_argument("--precision", choices=list(PRECISIONS))
    p.add_argument("--small-image-size", type=int,
                   help="progressive resizing: train the first epochs on photos this size")
    p.add_argument("--small-epochs", type=int, help="how many epochs use the small photos")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    p.add_argument("--photo-cache", metavar="DIR",
                   help="decode the photos once into this folder and reuse them (as the lab "
                        "does in its state folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a saved model on a dataset folder")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="cat or dog for each photo")
    p.add_argument("--model", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("download", help="download the dataset and unpack it into a folder")
    p.add_argument("--dest", required=True, help="dataset folder to create (LAB_DATA_DIR)")
    p.add_argument("--source", choices=["auto", "kaggle", "petimages"], default="auto",
                   help="auto: Kaggle when credentials are set, else Microsoft's PetImages")
    p.add_argument("--url", help="take the archive from this URL instead (a mirror)")
    p.add_argument("--sha256", help="expected sha256 of the archive")
    p.add_argument("--force", action="store_true", help="replace an existing dataset")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.ml_options = load_ml_options()  # what the library is told: it reads no settings
    except ValueError as exc:  # a bad LAB_CACHE_MB: one sentence, like every other error
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    if args.command in ("evaluate", "predict"):  # train imports it once its options are read
        import_tensorflow_quietly()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except LabError as exc:  # ConfigError included: it names every bad field
        sys.stderr.write(f"error: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # one sentence for people; --debug for developers
        if args.debug:
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc} "
                         "(run with --debug for the traceback)\n")
    return EXIT_ERROR
