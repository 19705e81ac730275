"""Importing TensorFlow without its C++ start-up banners."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ start-up banners (oneDNN, absl) ignore TF_CPP_MIN_LOG_LEVEL and would
    bury the one-sentence messages people need; a failed import still raises normally.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 maths in hardware (AVX512-BF16 or AMX).

    Elsewhere TensorFlow emulates bfloat16, which is slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(setting: str) -> str:
    """``"float32"`` or ``"bfloat16"`` for a config's precision (``"auto"`` decides here).

    Auto picks bfloat16 only on a CPU-only machine whose CPU has it natively: on this
    project's AMD EPYC it doubled fast_cnn's training speed at 96 px and cost res_cnn
    nothing at 128 px (docs/BENCHMARKS.md).
    """
    if setting != "auto":
        return setting
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "bfloat16" if native_bfloat16() else "float32"


@contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build layers under ``"float32"`` or ``"bfloat16"`` (Keras's mixed_bfloat16) policy.

    The policy is process-wide and a worker trains many runs, so it is set only for the
    ``with`` block: layers keep the policy they were built with.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
