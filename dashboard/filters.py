"""Template filters every page uses: durations, percentages, times."""

from __future__ import annotations

import time

from flask import Flask


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


def register(app: Flask) -> None:
    for fn in (duration, pct, when):
        app.add_template_filter(fn)
