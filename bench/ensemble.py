"""Held-out accuracy of several trained models, alone and with their cat probabilities averaged.

An ensemble is not a single-model recipe: this measures how much of the gap to a target the
errors the models do not share could close. Uses the held-out folder ``bench/accuracy.py`` made.

    python bench/ensemble.py bench/out/models/res_cnn bench/out/models/res_cnn-wd05
    python bench/ensemble.py --flip bench/out/models/res_cnn   # one model and its mirror images
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.accuracy import cpu_name  # noqa: E402
from ml.data import require_photos, scan  # noqa: E402
from ml.errors import LabError  # noqa: E402
from ml.evaluate import predict_frame, report  # noqa: E402
from ml.model_io import load_model  # noqa: E402
from ml.tf_env import import_tensorflow_quietly  # noqa: E402

log = logging.getLogger("bench.ensemble")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model.keras files or their folders")
    parser.add_argument("--holdout", default="bench/out/split-h0.1-s2026/holdout")
    parser.add_argument("--out", default="bench/out/results/ensemble.json")
    parser.add_argument("--flip", action="store_true",
                        help="average each model's answer for a photo with its answer for the "
                             "mirror image (test-time augmentation)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_tensorflow_quietly()
    try:
        result = measure(args.models, args.holdout, flip=args.flip)
    except LabError as exc:  # a missing folder or model: one sentence, not a traceback
        log.error("%s", exc)
        return 2
    result["command"] = "python " + " ".join(sys.argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    log.info("averaged: %.4f on %d photos (%d errors shared by all %d models)",
             result["ensemble_accuracy"], result["holdout_photos"],
             result["errors_shared_by_all"], len(args.models))
    return 0


def measure(models: list[str], holdout: str, flip: bool = False) -> dict[str, Any]:
    """Each model's held-out accuracy and that of their averaged cat probabilities.

    With ``flip`` every model's probability is first averaged with its mirror image's.
    """
    photos = scan(holdout)
    require_photos(photos)
    df = photos.images
    probs, y_true, single = [], None, []
    for path in models:
        loaded = load_model(path)
        p, y = predict_frame(loaded.model, loaded.image_size, df, flip=flip)
        if y_true is not None and not np.array_equal(y, y_true):
            raise LabError("the models did not see the same photos (one failed to decode?)")
        y_true = y
        probs.append(p)
        alone = report(p, y, df, max_misclassified=0)
        single.append({"model": str(path), "accuracy": alone["accuracy"],
                       "errors": alone["errors"]})
        log.info("%s: %.4f on %d photos", path, alone["accuracy"], len(y))
    mean = report(np.mean(probs, axis=0), y_true, df, max_misclassified=0)
    wrong = [set(np.flatnonzero((p >= 0.5) != y_true)) for p in probs]
    return {
        "models": single,  # a list: the same model may be given twice
        "flip": flip,
        "ensemble_accuracy": mean["accuracy"],
        "ensemble_confusion": mean["confusion"],
        "holdout_photos": mean["n"],
        # errors every model makes: what averaging cannot fix
        "errors_shared_by_all": len(set.intersection(*wrong)),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    sys.exit(main())
