"""What the benchmark scripts share: writing a report where docs/BENCHMARKS.md says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], out: Path) -> None:
    """The report as JSON in ``out`` (its folder made if need be) and on stdout, where a
    person running the bench reads it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))  # noqa: T201 - the bench's output
