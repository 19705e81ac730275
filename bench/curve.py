"""Print a training curve from bench/accuracy.py as a Markdown table for docs/BENCHMARKS.md.

    .venv/bin/python bench/curve.py bench/out/results/res_cnn.epochs.jsonl --every 5

Reads the per-epoch JSON lines accuracy.py appends while it trains, so it works on a run
that is still going. Prints every Nth epoch, the best validation epoch and the last one.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

log = logging.getLogger("bench.curve")


def load(path: Path) -> list[dict]:
    """The epochs of one run; a resumed run may repeat an epoch, and the later line wins."""
    by_epoch: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def table(rows: list[dict], every: int) -> str:
    best = max(rows, key=lambda r: r["val_accuracy"])
    keep = [r for r in rows
            if r["epoch"] % every == 0 or r["epoch"] in (1, best["epoch"], rows[-1]["epoch"])]
    hours = sum(r["seconds"] for r in rows) / 3600
    lines = ["| epoch | train acc | val acc | val loss | learning rate | |",
             "|---:|---:|---:|---:|---:|---|"]
    for r in keep:
        mark = "best val" if r is best else ""
        lines.append(f"| {r['epoch']} | {r['accuracy']:.3f} | {r['val_accuracy']:.3f} | "
                     f"{r['val_loss']:.3f} | {r['lr']:.2e} | {mark} |")
    median = statistics.median(r["seconds"] for r in rows)
    lines.append("")
    lines.append(f"{len(rows)} epochs, {hours:.1f} h of training, median epoch {median:.0f} s "
                 "(train accuracy is on augmented photos, with label smoothing).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a <name>.epochs.jsonl file")
    parser.add_argument("--every", type=int, default=5, help="print every Nth epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.path.is_file():
        log.error("no curve at %s: run bench/accuracy.py first", args.path)
        return 2
    rows = load(args.path)
    if not rows:
        log.error("%s has no epochs yet", args.path)
        return 2
    sys.stdout.write(table(rows, max(1, args.every)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
