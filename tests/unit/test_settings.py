"""Settings from the environment: defaults, the lab passcode and the per-address cap."""

from __future__ import annotations

import pytest

from core.settings import load_settings


def test_defaults_are_an_open_lab_with_caps_per_student_not_per_address():
    settings = load_settings({})
    assert settings.passcode is None and settings.max_active_per_client == 0
    assert (settings.max_runs_per_student, settings.max_queued) == (2, 60)
    assert settings.lock_launch is False
    assert settings.trusted_proxies == 0 and settings.secret_key is None
    assert settings.allowed_origins == () and settings.session_cookie == "lab_session_5000"


def test_passcode_cap_and_proxy_are_read():
    settings = load_settings({"LAB_PASSCODE": "tabby", "LAB_MAX_QUEUED_PER_CLIENT": "0",
                              "LAB_TRUSTED_PROXIES": "2", "LAB_SECRET_KEY": "k",
                              "LAB_ALLOWED_ORIGINS": "https://lab.school.example/, http://x:1",
                              "LAB_PORT": "5301"})
    assert (settings.passcode, settings.max_active_per_client) == ("tabby", 0)
    assert settings.trusted_proxies == 2 and settings.secret_key == "k"
    assert settings.allowed_origins == ("https://lab.school.example", "http://x:1")
    assert settings.session_cookie == "lab_session_5301"  # side-by-side labs differ
    # The older on/off switch still means one proxy; a cookie name can be given.
    older = load_settings({"LAB_TRUST_PROXY": "yes", "LAB_SESSION_COOKIE": "room_b"})
    assert older.trusted_proxies == 1 and older.session_cookie == "room_b"
    # A passcode set by hand locks launching unless LAB_LOCK_LAUNCH says otherwise.
    assert settings.lock_launch is True
    assert load_settings({"LAB_PASSCODE": "t", "LAB_LOCK_LAUNCH": "0"}).lock_launch is False
    assert load_settings({"LAB_MAX_QUEUED_PER_ADDRESS": "4"}).max_active_per_client == 4


@pytest.mark.parametrize("env,message", [
    ({"LAB_MAX_QUEUED_PER_CLIENT": "-1"}, "0 \\(no limit\\) or more"),
    ({"LAB_MAX_QUEUED_PER_CLIENT": "2.5"}, "a whole number"),
    ({"LAB_HEARTBEAT_S": "0"}, "positive"),
    ({"LAB_RUN_LOST_AFTER_S": "soon"}, "a number of seconds"),
    ({"LAB_TRUSTED_PROXIES": "one"}, "a whole number"),
    ({"LAB_LOCK_LAUNCH": "maybe"}, "1 or 0"),
    ({"LAB_MAX_RUNS_PER_STUDENT": "-2"}, "0 \\(no limit\\) or more"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=f"{next(iter(env))} must be {message}"):
        load_settings(env)


def test_the_workers_make_run_starts_by_machine():
    from launcher.workers import plan_workers

    # A 2-core laptop: one worker, free to use both cores.
    (only,) = plan_workers(port=5000, gpus=0, cores=2)
    assert (only.name, only.label, only.log_name, only.env) == (
        "lab-5000", "the training worker", "worker.log", {})
    # Asked for three on 8 cores: they split the cores, each its own name and log.
    three = plan_workers(port=5000, gpus=0, cores=8, workers=3)
    assert [w.name for w in three] == ["lab-5000", "lab-5000-2", "lab-5000-3"]
    assert [w.log_name for w in three] == ["worker.log", "worker-2.log", "worker-3.log"]
    assert {w.env["LAB_TRAIN_THREADS"] for w in three} == {"2"}
    assert len(plan_workers(port=5000, gpus=0, cores=32)) == 4  # a big CPU server
    # Two GPUs, two runs on each: four workers, each shown its own GPU.
    gpu = plan_workers(port=5000, gpus=2, cores=16, runs_per_gpu=2)
    assert [w.env for w in gpu] == [{"CUDA_VISIBLE_DEVICES": d} for d in "0011"]


def test_worker_settings_are_checked():
    s = load_settings({"LAB_WORKERS": "3", "LAB_RUNS_PER_GPU": "2", "LAB_TRAIN_THREADS": "1",
                       "LAB_PHOTO_CACHE": "0"})
    assert (s.workers, s.runs_per_gpu, s.train_threads, s.photo_cache_dir) == (3, 2, 1, None)
    assert load_settings({}).photo_cache_dir.name == "photo-cache"
    with pytest.raises(ValueError, match="LAB_WORKERS must be a whole number"):
        load_settings({"LAB_WORKERS": "two"})
