"""What a run trains on, said the way a person reads it: the GPU (name, memory, how busy),
or the CPU (model, cores). Without TensorFlow: NVIDIA's management library when a GPU is
there (``nvidia-ml-py``, installed with the GPU build), ``/proc/cpuinfo`` otherwise."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

log = logging.getLogger(__name__)


def _cpu() -> dict[str, Any]:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = " ".join(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use, not the host's
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"kind": "cpu", "name": name or "unknown CPU", "cores": cores}


def _gpus() -> list[dict[str, Any]]:
    """Each NVIDIA GPU this process can see, or [] (no library, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver: a CPU machine with the GPU build installed
        log.debug("no NVIDIA driver: %s", exc)
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            busy = pynvml.nvmlDeviceGetUtilizationRates(handle)
            found.append({
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_mb": round(memory.total / 2**20),
                "memory_used_mb": round(memory.used / 2**20),
                "utilisation_pct": busy.gpu,
            })
        return found
    finally:
        pynvml.nvmlShutdown()


def describe_device() -> dict[str, Any]:
    """``{"kind": "gpu", "name", "gpus": [...]}`` (the first GPU's name; memory and load of
    each) or ``{"kind": "cpu", "name", "cores"}``."""
    gpus = _gpus()
    if gpus:
        return {"kind": "gpu", "name": gpus[0]["name"], "gpus": gpus}
    return _cpu()


def gpu_load() -> dict[str, Any] | None:
    """How busy the first GPU is now (``utilisation_pct``, ``memory_used_mb``); None on a
    CPU machine."""
    gpus = _gpus()
    if not gpus:
        return None
    return {"utilisation_pct": gpus[0]["utilisation_pct"],
            "memory_used_mb": gpus[0]["memory_used_mb"]}


def device_text(device: dict[str, Any] | None) -> str:
    """One line for a page or a log: "NVIDIA H200 (1 of 1, 2.1 of 139.8 GB used, 87 % busy)",
    "AMD EPYC 9B14 (2 cores)"."""
    if not device:
        return "an unknown device"
    if device.get("kind") == "gpu" and device.get("gpus"):
        first = device["gpus"][0]
        count = len(device["gpus"])
        return (f"{first['name']} ({'1 of ' + str(count) + ', ' if count > 1 else ''}"
                f"{first['memory_used_mb'] / 1024:.1f} of {first['memory_total_mb'] / 1024:.1f}"
                f" GB used, {first['utilisation_pct']} % busy)")
    cores = device.get("cores")
    return f"{device.get('name', 'CPU')} ({cores} core{'s' * (cores != 1)})" if cores else \
        str(device.get("name", "CPU"))
