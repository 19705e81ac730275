"""Several runs on one machine: photos/s of one run alone vs two at once, with and without
the TensorFlow thread limit, and what the shared photo cache saves (first-epoch time and the
memory of two concurrent runs).

Each run is a process of its own calling ``ml.train.train`` as a worker does (with the
worker's thread limit, ``ml.tf_env.limit_threads``). Reported per case: each run's training
photos/s (the card's mean over epochs, validation left out), its first epoch's seconds (with
validation), its wall time from process start to saved model, and the peak of the
processes' summed PSS (proportional set size: shared pages counted once in all, so two runs
mapping one cache are not charged twice) and of their anonymous memory (what no file backs:
the kernel cannot drop it, whereas the cache's pages are clean file pages it can), sampled
every 0.2 s from /proc.

    python bench/concurrent_runs.py --data ../shared/data/dogs-vs-cats/train \\
        --limit 2000 --image-size 64 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reports import write_report  # noqa: E402 - bench/, the script's own folder

log = logging.getLogger("bench.concurrent_runs")


def _child(args: argparse.Namespace) -> int:
    """One run, as a worker trains it; prints its figures as one JSON line."""
    from core.settings import load_ml_options
    from ml.tf_env import import_tensorflow_quietly, limit_threads
    from ml.train import train

    started = time.monotonic()
    import_tensorflow_quietly()
    limit_threads(args.threads)
    config = {"recipe": args.recipe, "image_size": args.image_size, "epochs": args.epochs,
              "limit": args.limit, "seed": args.seed}
    summary = train(config, args.data, args.out,
                    photo_cache_dir=args.photo_cache or None,
                    options=load_ml_options())  # LAB_CACHE_MB and the like, as a worker gets
    card = json.loads((Path(args.out) / "card.json").read_text())
    print(json.dumps({
        "images_per_s": summary["metrics"]["images_per_s"],
        "first_epoch_s": card["history"][0]["seconds"],
        "wall_s": time.monotonic() - started,
        "val_accuracy": summary["metrics"]["best_val_accuracy"],
    }), flush=True)
    return 0


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, anonymous) of a process: its share of every page it maps, and the part of it
    that no file backs (what the kernel cannot drop under pressure)."""
    found = {"Pss:": 0, "Anonymous:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key = line.split(None, 1)[0]
                if key in found:
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return found["Pss:"], found["Anonymous:"]


def _runs(args: argparse.Namespace, work: Path, count: int, *, threads: int,
          photo_cache: Path | None, seed0: int = 1) -> dict:
    """``count`` runs started together; their figures and the peak summed PSS."""
    procs = []
    for i in range(count):
        cmd = [sys.executable, __file__, "--child", "--data", args.data,
               "--out", str(work / f"run-{time.monotonic_ns()}-{i}"), "--recipe", args.recipe,
               "--image-size", str(args.image_size), "--epochs", str(args.epochs),
               "--limit", str(args.limit), "--seed", str(seed0 + i),
               "--threads", str(threads), "--photo-cache", str(photo_cache or "")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT))
    peak = peak_anon = 0
    while any(p.poll() is None for p in procs):
        sampled = [_memory_kib(p.pid) for p in procs]
        peak = max(peak, sum(m[0] for m in sampled))
        peak_anon = max(peak_anon, sum(m[1] for m in sampled))
        time.sleep(0.2)
    results = []
    for p in procs:
        out = p.stdout.read().strip().splitlines()
        if p.returncode != 0 or not out:
            raise SystemExit(f"a run failed (exit {p.returncode}); see its output above")
        results.append(json.loads(out[-1]))
    return {"runs": results, "total_images_per_s": sum(r["images_per_s"] for r in results),
            "peak_pss_mb": round(peak / 1024), "peak_anon_mb": round(peak_anon / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/dogs-vs-cats/train"))
    parser.add_argument("--recipe", default="fast_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--cases", default="alone,two,two-split,cache",
                        help="alone: one run; two: two at once, each free to use every core; "
                             "two-split: two at once, each held to half the cores; cache: "
                             "cold build, reuse, and two at once with vs without it")
    parser.add_argument("--out", default="bench/out/results/concurrent_runs.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--photo-cache", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.child:
        return _child(args)
    if not Path(args.data).is_dir():
        log.error("no dataset at %s (--data)", args.data)
        return 2
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="concurrent-runs-"))
    report: dict = {"cores": cores, "config": {k: getattr(args, k) for k in
                                               ("recipe", "image_size", "epochs", "limit")}}
    cases = args.cases.split(",")
    try:
        if "alone" in cases:
            report["alone"] = _runs(args, work, 1, threads=0, photo_cache=None)
            log.info("one run alone: %s", report["alone"])
        if "two" in cases:
            report["two"] = _runs(args, work, 2, threads=0, photo_cache=None)
            log.info("two at once: %s", report["two"])
        if "two-split" in cases:
            report["two_split"] = _runs(args, work, 2, threads=max(1, cores // 2),
                                        photo_cache=None)
            log.info("two at once, %d threads each: %s", max(1, cores // 2),
                     report["two_split"])
        if "cache" in cases:
            cache = work / "photo-cache"
            report["cache_cold"] = _runs(args, work, 1, threads=0, photo_cache=cache)
            log.info("first run, building the cache: %s", report["cache_cold"])
            report["cache_warm"] = _runs(args, work, 1, threads=0, photo_cache=cache, seed0=5)
            log.info("second run, cache reused: %s", report["cache_warm"])
            report["two_cached"] = _runs(args, work, 2, threads=max(1, cores // 2),
                                         photo_cache=cache, seed0=7)
            log.info("two at once from the cache: %s", report["two_cached"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
