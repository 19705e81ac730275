"""Settings from the environment: defaults, the lab passcode and the per-address cap; and
that nothing but core/settings.py reads the environment."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from core.settings import given_database_url, given_passcode, load_ml_options, load_settings
from ml.options import MlOptions
from testkit.paths import ROOT


def test_defaults_are_an_open_lab_with_caps_per_owner_not_per_address():
    settings = load_settings({})
    assert settings.passcode is None and settings.max_active_per_address == 0
    assert (settings.max_runs_per_owner, settings.max_queued) == (2, 60)
    assert settings.lock_launch is False
    assert settings.trusted_proxies == 0 and settings.secret_key is None
    assert settings.allowed_origins == () and settings.session_cookie == "lab_session_5000"


def test_passcode_cap_and_proxy_are_read():
    settings = load_settings({"LAB_PASSCODE": "tabby", "LAB_MAX_QUEUED_PER_CLIENT": "0",
                              "LAB_TRUSTED_PROXIES": "2", "LAB_SECRET_KEY": "k",
                              "LAB_ALLOWED_ORIGINS": "https://lab.school.example/, http://x:1",
                              "LAB_PORT": "5301"})
    assert (settings.passcode, settings.max_active_per_address) == ("tabby", 0)
    assert settings.trusted_proxies == 2 and settings.secret_key == "k"
    assert settings.allowed_origins == ("https://lab.school.example", "http://x:1")
    assert settings.session_cookie == "lab_session_5301"  # side-by-side labs differ
    # The older on/off switch still means one proxy; a cookie name can be given.
    older = load_settings({"LAB_TRUST_PROXY": "yes", "LAB_SESSION_COOKIE": "room_b"})
    assert older.trusted_proxies == 1 and older.session_cookie == "room_b"
    # A passcode set by hand locks launching unless LAB_LOCK_LAUNCH says otherwise.
    assert settings.lock_launch is True
    assert load_settings({"LAB_PASSCODE": "t", "LAB_LOCK_LAUNCH": "0"}).lock_launch is False
    assert load_settings({"LAB_MAX_QUEUED_PER_ADDRESS": "4"}).max_active_per_address == 4


@pytest.mark.parametrize("env,message", [
    ({"LAB_MAX_QUEUED_PER_CLIENT": "-1"}, "0 \\(no limit\\) or more"),
    ({"LAB_MAX_QUEUED_PER_CLIENT": "2.5"}, "a whole number"),
    ({"LAB_HEARTBEAT_S": "0"}, "positive"),
    ({"LAB_RUN_LOST_AFTER_S": "soon"}, "a number of seconds"),
    ({"LAB_TRUSTED_PROXIES": "one"}, "a whole number"),
    ({"LAB_LOCK_LAUNCH": "maybe"}, "1 or 0"),
    ({"LAB_MAX_RUNS_PER_STUDENT": "-2"}, "0 \\(no limit\\) or more"),
    ({"LAB_RESTART_BACKOFF_S": "0"}, "positive"),
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


def test_the_other_settings_are_read_here_too():
    s = load_settings({"LAB_HOST": "0.0.0.0", "LAB_PORT": "5301", "LAB_LOG_LEVEL": "debug",
                       "LAB_DATASET_URL": "http://mirror/pets.zip", "LAB_CACHE_MB": "512",
                       "LAB_WEIGHTS_BASE_URL": "http://mirror/w/", "LAB_WEIGHTS_DIR": "/w",
                       "KAGGLE_USERNAME": "ada", "KAGGLE_KEY": "s3cret",
                       "KAGGLE_CONFIG_DIR": "/k", "LAB_KAGGLE_API": "http://k/api/v1"})
    assert (s.host, s.port, s.log_level) == ("0.0.0.0", 5301, "debug")
    assert s.dataset_url == "http://mirror/pets.zip"
    assert (s.ml.cache_mb, s.ml.weights_base_url, s.ml.weights_dir) == (512, "http://mirror/w/",
                                                                        "/w")
    assert (s.ml.kaggle_username, s.ml.kaggle_key, s.ml.kaggle_config_dir, s.ml.kaggle_api) \
        == ("ada", "s3cret", "/k", "http://k/api/v1")
    assert "s3cret" not in repr(s)  # settings get logged; secrets do not
    plain = load_settings({})
    assert (plain.host, plain.port, plain.log_level, plain.dataset_url) == (
        "127.0.0.1", 5000, "INFO", None)
    assert plain.restart_backoff_s == 1.0
    assert load_settings({"LAB_RESTART_BACKOFF_S": "0.25"}).restart_backoff_s == 0.25
    assert plain.ml == MlOptions()  # the library's own defaults
    with pytest.raises(ValueError, match="LAB_CACHE_MB must be a whole number"):
        load_ml_options({"LAB_CACHE_MB": "lots"})
    # make run tells an empty LAB_PASSCODE (an open lab, on purpose) from none at all.
    assert (given_passcode({"LAB_PASSCODE": ""}), given_passcode({})) == ("", None)
    assert given_database_url({}) is None
    assert given_database_url({"DATABASE_URL": "sqlite:///x"}) == "sqlite:///x"


# -- nothing else reads the environment ------------------------------------------------------

SETTINGS_FILE = Path(ROOT, "core", "settings.py")
READING_METHODS = {"get", "items", "keys", "values", "copy", "pop", "__getitem__",
                   "__contains__"}


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read the process's environment: ``os.environ[...]`` (not an assignment),
    ``os.environ.get(...)`` and the like, ``... in os.environ``, ``os.getenv(...)``; also
    through ``from os import environ, getenv``. Writing it (``os.environ[k] = v``,
    ``setdefault``) and handing it whole to a child process (``{**os.environ}``) are not
    reads of a setting."""
    os_names, environ_names, getenv_names = {"os"}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            environ_names |= {a.asname or a.name for a in node.names if a.name == "environ"}
            getenv_names |= {a.asname or a.name for a in node.names if a.name == "getenv"}

    def is_environ(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            return (node.attr == "environ" and isinstance(node.value, ast.Name)
                    and node.value.id in os_names)
        return isinstance(node, ast.Name) and node.id in environ_names

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            found = is_environ(node.value)
        elif isinstance(node, ast.Call):
            func = node.func
            found = (isinstance(func, ast.Attribute) and (
                (func.attr in READING_METHODS and is_environ(func.value))
                or (func.attr == "getenv" and isinstance(func.value, ast.Name)
                    and func.value.id in os_names))
            ) or (isinstance(func, ast.Name) and func.id in getenv_names)
        elif isinstance(node, ast.Compare):
            found = any(isinstance(op, (ast.In, ast.NotIn)) and is_environ(right)
                        for op, right in zip(node.ops, node.comparators, strict=True))
        else:
            found = False
        if found:
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_core_settings_reads_the_environment():
    found = [f"{path.relative_to(ROOT)}:{line}"
             for package in ("ml", "core", "dashboard", "worker", "launcher")
             for path in sorted(Path(ROOT, package).rglob("*.py")) if path != SETTINGS_FILE
             for line in environment_reads(ast.parse(path.read_text()))]
    assert found == [], "read the environment in core/settings.py instead: " + ", ".join(found)
    assert "os.environ" in SETTINGS_FILE.read_text()  # ... where it is read


def test_the_environment_check_sees_every_kind_of_read():
    reads = textwrap.dedent("""\
        import os
        import os as system
        from os import environ as env, getenv
        a = os.environ["LAB_HOST"]
        b = os.environ.get("LAB_PORT", "5000")
        c = "LAB_PASSCODE" in os.environ
        d = os.getenv("LAB_LOG_LEVEL")
        e = system.environ.get("X")
        f = env["Y"] if "Y" not in env else getenv("Z")
        """)
    assert environment_reads(ast.parse(reads)) == [4, 5, 6, 7, 8, 9]
    writes = textwrap.dedent("""\
        import os
        os.environ["LAB_PASSCODE"] = "tabby"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        child = {**os.environ, "LC_ALL": "C"}
        def allowed(origin, environ):  # a WSGI environ, not the process's
            return environ.get("HTTP_HOST")
        """)
    assert environment_reads(ast.parse(writes)) == []
