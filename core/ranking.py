"""How finished runs rank: by validation accuracy, weighed by how many photos it rests on.

Pure functions over run dicts (as ``core.store`` and ``core.class_view`` return them), shared
by the leaderboard and Predict's choice of default model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def val_photos(run: dict[str, Any]) -> int | None:
    """How many validation photos the run's best accuracy was measured on, if known."""
    n = ((run.get("summary") or {}).get("counts") or {}).get("val")
    return int(n) if n else None


def accuracy_floor(accuracy: float | None, n: int | None, z: float = 1.96) -> float:
    """The Wilson lower bound of an accuracy measured on ``n`` photos (0 when unknown).

    What a validation score is worth: 8 of 8 right is only sure to be above 68 %, while
    520 of 540 is sure to be above 94 %, so a long run outranks a lucky tiny one.
    """
    if accuracy is None or not n:
        return 0.0
    centre = accuracy + z * z / (2 * n)
    spread = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def rank_key(run: dict[str, Any]) -> tuple[float, float, float]:
    """Sorts the better of two finished runs first."""
    # Best accuracy first; at equal accuracy the one measured on more photos (what Predict's
    # default weighs), then whoever got there first.
    accuracy = run["best_val_accuracy"]
    return (-accuracy, -accuracy_floor(accuracy, val_photos(run)), run["finished"] or 0.0)


@dataclass(frozen=True)
class Standing:
    """One owner's place on the leaderboard: their best run and what else is known of them."""

    rank: int  # equal for an equal accuracy on as many photos
    owner: str  # the owner's id, or ``run:<id>`` for a run from before owners
    run: dict[str, Any]  # their best finished run
    name: str | None  # the name they gave last, if any
    finished_runs: int


def standings(finished: list[dict[str, Any]]) -> list[Standing]:
    """Each owner's best run of ``finished`` (first finished first), best first."""
    best: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for run in finished:
        who = run["owner"] or f"run:{run['id']}"  # runs from before owners: each its own
        counts[who] = counts.get(who, 0) + 1
        if run["owner_name"]:
            names[who] = run["owner_name"]  # the name they gave last (runs come in order)
        if who not in best or rank_key(run) < rank_key(best[who]):
            best[who] = run
    found: list[Standing] = []
    previous: tuple[float, float] | None = None
    for n, (who, run) in enumerate(sorted(best.items(), key=lambda item: rank_key(item[1])),
                                   start=1):
        key = rank_key(run)[:2]
        rank = found[-1].rank if key == previous else n
        previous = key
        found.append(Standing(rank, who, run, names.get(who), counts[who]))
    return found
