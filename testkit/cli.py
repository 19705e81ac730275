"""The ``ml`` command line run as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit.paths import ROOT


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run ``python -m ml ...`` in a process of its own."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ml", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
