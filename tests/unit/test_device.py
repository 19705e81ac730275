"""Ready for a GPU, checked through the CPU path here: what a run trains on is reported
(health, events, the run page), auto precision picks per device, GPUs are shared. The
GPU-only checks skip on a machine without one."""

from __future__ import annotations

import os

import pytest

from ml.device import describe_device, device_text, gpu_load
from ml.tf_env import choose_precision, share_gpus
from testkit.machine import cpu_model


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def test_a_cpu_machine_reports_its_cpu_model_and_cores():
    device = describe_device()
    assert device == {"kind": "cpu", "name": cpu_model(),
                      "cores": len(os.sched_getaffinity(0))}
    assert device_text(device) == f"{cpu_model()} ({device['cores']} cores)"
    assert gpu_load() is None


def test_the_gpu_line_says_name_memory_and_load():
    gpu = {"kind": "gpu", "name": "NVIDIA H200",
           "gpus": [{"name": "NVIDIA H200", "memory_total_mb": 143_771,
                     "memory_used_mb": 2_150, "utilisation_pct": 87}] * 2}
    assert device_text(gpu) == "NVIDIA H200 (1 of 2, 2.1 of 140.4 GB used, 87 % busy)"


@pytest.mark.parametrize("setting,gpus,cpu_bf16,chosen", [
    ("auto", [(8, 0)], False, "float16"),          # tensor cores: mixed float16
    ("auto", [(9, 0), (7, 0)], True, "float16"),
    ("auto", [(8, 0), (6, 1)], True, "float32"),   # one without tensor cores: all float32
    ("auto", [None], True, "float32"),             # capability unknown
    ("auto", [], True, "bfloat16"),                # a CPU that does bfloat16 natively
    ("auto", [], False, "float32"),
    ("float32", [(8, 0)], True, "float32"),        # what is asked for is kept
    ("bfloat16", [], False, "bfloat16"),
])
def test_auto_precision_fits_the_device(setting, gpus, cpu_bf16, chosen):
    assert choose_precision(setting, gpus, cpu_bf16) == chosen


def test_a_float16_run_saves_a_float32_model(tiny_dataset, tmp_path):
    from ml.model_io import load_model
    from ml.train import train

    events: list[dict] = []
    summary = train({"epochs": 1, "image_size": 32, "batch_size": 8, "augment": False,
                     "precision": "float16"}, tiny_dataset, tmp_path, on_event=events.append)
    started = next(e for e in events if e["type"] == "run_started")
    assert started["precision"] == "float16" and summary["precision"] == "float16"
    assert started["device"]["kind"] == "cpu"
    assert all(e["gpu"] is None for e in events if e["type"] == "epoch")
    loaded = load_model(tmp_path)
    assert {layer.dtype_policy.name for layer in loaded.model.layers} == {"float32"}


def test_gpus_are_shared_not_taken_whole():
    if not _has_gpu():
        assert share_gpus() == 0  # nothing to set on a CPU machine, and no error
        pytest.skip("no GPU here: memory growth is checked where there is one")
    import tensorflow as tf

    assert share_gpus() >= 1
    assert all(tf.config.experimental.get_memory_growth(g)
               for g in tf.config.list_physical_devices("GPU"))


