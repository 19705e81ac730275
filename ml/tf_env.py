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


TENSOR_CORES = (7, 0)  # compute capability of the first NVIDIA GPUs with them (Volta)


def choose_precision(setting: str, gpu_capabilities: list[tuple[int, int] | None],
                     cpu_bfloat16: bool) -> str:
    """What ``"auto"`` means on a machine: mixed float16 on GPUs that all have tensor cores
    (float32 on older ones), bfloat16 on a CPU-only machine whose CPU does it natively (on
    this project's AMD EPYC it doubled fast_cnn's speed at 96 px, docs/BENCHMARKS.md),
    float32 elsewhere. Any other setting is kept."""
    if setting != "auto":
        return setting
    if gpu_capabilities:
        return "float16" if all(c is not None and c >= TENSOR_CORES
                                for c in gpu_capabilities) else "float32"
    return "bfloat16" if cpu_bfloat16 else "float32"


def resolve_precision(setting: str) -> str:
    """``"float32"``, ``"bfloat16"`` or ``"float16"`` for a config's precision, deciding
    ``"auto"`` from this machine's devices (see ``choose_precision``)."""
    if setting != "auto":
        return setting
    import tensorflow as tf

    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                    for gpu in tf.config.list_physical_devices("GPU")]
    return choose_precision(setting, capabilities, native_bfloat16())


def share_gpus(memory_limit_mb: int | None = None) -> int:
    """Let several runs share each GPU: TensorFlow otherwise takes all of a GPU's memory
    for the first process. Memory grows as a run needs it, or with ``memory_limit_mb`` each
    process gets at most that much. Call before TensorFlow first touches a GPU; a second
    call keeps what the first one set (the worker sets its limit, then ``ml.train`` asks for
    growth). Returns how many GPUs there are (0 on a CPU machine)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if tf.config.get_logical_device_configuration(gpu):
            continue  # given a memory limit already: growth cannot be set on top of it
        try:
            if memory_limit_mb:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised here: it keeps what it has
            pass
    return len(gpus)


def limit_threads(threads: int) -> None:
    """Let TensorFlow use at most ``threads`` CPU threads inside each op (0: all cores), so
    that several training processes on one machine share the cores instead of each
    starting one thread per core. The pool that runs ops side by side is left alone: held
    to one thread too, two runs on 2 cores trained at 40 % of the speed (BENCHMARKS.md).
    Call before TensorFlow runs anything; later calls (the next run in the same process)
    keep what the first one set."""
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process: it keeps its pools
        pass


@contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build layers under the ``"float32"``, ``"bfloat16"`` or ``"float16"`` policy (Keras's
    mixed_bfloat16, mixed_float16: compiling then scales the loss for float16).

    The policy is process-wide and a worker trains many runs, so it is set only for the
    ``with`` block: layers keep the policy they were built with.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}.get(precision, "float32"))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
