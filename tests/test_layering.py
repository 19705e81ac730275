"""ml/ is a pure library: no Flask, Celery or Redis, and no TensorFlow at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN = {"flask", "flask_socketio", "celery", "redis", "kombu", "socketio"}


def test_ml_never_imports_web_or_queue_packages():
    for path in Path(ROOT, "ml").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path}: imports {name}"


def test_importing_ml_does_not_load_tensorflow():
    modules = ["ml", "ml.cli", "ml.config", "ml.data", "ml.evaluate", "ml.events",
               "ml.model_io", "ml.pipeline", "ml.predict", "ml.recipes", "ml.tf_env", "ml.train",
               "ml.fetch", "ml.synthetic"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'flask', 'celery') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"


def test_web_process_and_worker_start_without_tensorflow(tmp_path):
    # The web app is built (nothing listens on that Redis port: building must not need it).
    code = (
        "import sys\n"
        "from dashboard import create_app\n"
        "from worker.settings import load_settings\n"
        "import worker.tasks, dashboard.api, dashboard.live\n"
        f"s = load_settings({{'REDIS_URL': 'redis://127.0.0.1:9/0',"
        f" 'DATABASE_URL': 'sqlite:///{tmp_path}/t.db'}})\n"
        "app = create_app(s, start_background=False)\n"
        "assert app.test_client().get('/api/runs').json == {'runs': []}\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
