"""The Celery app, built the way Flask's Celery example builds one: from the settings, its
whole configuration in one dict, shared tasks, and no device probed when it is imported."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import load_settings
from testkit.paths import ROOT
from worker import celery_app
from worker.runtime import DOWNLOAD_TASK, TRAIN_TASK


def test_importing_the_app_probes_no_device(tmp_path):
    # The web process imports it to send tasks: no NVIDIA library, no TensorFlow for that.
    code = ("import sys\n"
            "import ml.device\n"
            "def probe():\n"
            "    sys.exit('the device was probed when worker.celery_app was imported')\n"
            "ml.device.describe_device = ml.device.gpu_load = probe\n"
            "import worker.celery_app as c\n"
            "print(c.app.conf.broker_url)\n"
            "print(sorted(m for m in ('tensorflow', 'pynvml') if m in sys.modules))\n")
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:9/3", "LAB_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["redis://127.0.0.1:9/3", "[]"]


def test_the_app_is_made_from_the_settings_with_one_config_dict():
    import worker.tasks  # noqa: F401 - what ``include`` makes a worker import

    settings = load_settings({"REDIS_URL": "redis://127.0.0.1:9/4"})
    config = celery_app.celery_config(settings)
    try:
        app = celery_app.create_celery_app(settings)
        assert app.conf.broker_url == app.conf.result_backend == "redis://127.0.0.1:9/4"
        assert {key: app.conf[key] for key in config} == config
        assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
        # Shared tasks: the app has them though the task module never imports it.
        assert {TRAIN_TASK, DOWNLOAD_TASK} <= set(app.tasks)
    finally:
        celery_app.app.set_default()  # the module's app again, for the other tests


def test_a_worker_fits_its_pool_processes_to_its_device_when_it_starts(monkeypatch):
    conf: dict = {}
    monkeypatch.setattr(celery_app, "describe_device", lambda: {"kind": "gpu"})
    celery_app._on_worker_init(conf=conf)  # celeryd_init: before the pool's limits are read
    assert conf == {"worker_max_tasks_per_child": 1, "worker_max_memory_per_child": None}
    monkeypatch.setattr(celery_app, "describe_device", lambda: {"kind": "cpu", "cores": 2})
    celery_app._on_worker_init(conf=conf)
    assert conf == {"worker_max_tasks_per_child": None,
                    "worker_max_memory_per_child": celery_app.MAX_MEMORY_PER_PROCESS_KIB}
