"""What this machine is, read independently of the lab's own device code."""

from __future__ import annotations


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo says it."""
    with open("/proc/cpuinfo") as f:
        return next(" ".join(line.split(":", 1)[1].split()) for line in f
                    if line.startswith("model name"))
