"""Scan speed: time ``ml.data.scan`` over a folder (default: 25,000 hard links of real photos).

    python bench/scan_speed.py [--data DIR] [--files 25000]

Without --data it builds a temporary 25,000-file folder from the shared photos (hard links
or, across file systems, copies) so the figure matches the size of the full Kaggle set.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import scan  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train"
log = logging.getLogger("bench.scan")


def build(folder: Path, source: Path, n: int) -> None:
    photos = sorted(source.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {source}")
    for i in range(n):
        src = photos[i % len(photos)]
        dst = folder / f"{src.name.split('.')[0]}.{i}.jpg"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--files", type=int, default=25_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            build(data, SHARED, args.files)
        started = time.monotonic()
        summary = scan(data).summary()
        seconds = time.monotonic() - started
    log.info("scanned %d files (%d photos, %d skipped) in %.2f s", summary["total"]
             + summary["skipped"], summary["total"], summary["skipped"], seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
