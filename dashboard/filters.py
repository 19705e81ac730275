"""Template filters every page uses: durations, percentages, times, a run's settings."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from ml.config import effective


def duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``42 s``."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage, ``–`` when unknown."""
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def when(ts: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``."""
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def image_px(config: dict[str, Any]) -> int | None:
    """The image size a run's config trains at: its own, else its recipe's (None if unknown)."""
    return effective(config, "image_size")


def learning_rate_value(config: dict[str, Any]) -> float | None:
    """The learning rate a run's config starts from: its own, else its recipe's."""
    return effective(config, "learning_rate")


def learning_rate(config: dict[str, Any]) -> str:
    """The learning rate a run's config starts from, as a number (``0.001``, ``3e-04``)."""
    rate = learning_rate_value(config)
    return "–" if rate is None else f"{rate:g}"


def register(app: Flask) -> None:
    for fn in (duration, pct, when, image_px, learning_rate):
        app.add_template_filter(fn)
