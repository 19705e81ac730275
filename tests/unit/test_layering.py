"""The layers: ml/ is a pure library (no Flask, Celery or Redis, no TensorFlow at import
time), no import cycles anywhere, and no event built by hand outside its builder."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from testkit.paths import ROOT

FORBIDDEN = {"flask", "flask_socketio", "celery", "redis", "kombu", "socketio"}
PACKAGES = ("ml", "core", "worker", "dashboard", "launcher")


def _modules() -> dict[str, Path]:
    """Every module of the product, by dotted name."""
    found = {}
    for pkg in PACKAGES:
        for path in Path(ROOT, pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the product modules it imports, at the top or inside a function alike (a
    lazy import still ties the two together)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:  # "from pkg import module" names the module
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph(_modules())
    assert graph["worker.tasks"] and graph["dashboard.app"]  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # The old worker: the app imported its tasks and the tasks imported the app.
    assert find_cycle({"worker.celery_app": {"worker.tasks"},
                       "worker.tasks": {"worker.celery_app"}})


def hand_built_events(tree: ast.AST) -> list[int]:
    """Lines that build an event without its builder: a dict with ``"type": "<event type>"``,
    or an emitting call given an event type's name (``emit("batch", ...)``, the old way)."""
    from ml.events import EVENT_TYPES

    emitting = {"emit", "append_event", "add_event", "_body", "stamp"}

    def is_type(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and node.value in EVENT_TYPES

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and is_type(value):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in emitting and (any(is_type(a) for a in node.args)
                                     or any(is_type(k.value) for k in node.keywords)):
                lines.append(node.lineno)
    return lines


def test_no_event_is_built_by_hand_outside_ml_events():
    builders = Path(ROOT, "ml", "events.py")
    sources = [*_modules().values(), *Path(ROOT, "bench").rglob("*.py")]
    found = {str(p.relative_to(ROOT)): lines for p in sources if p != builders
             and (lines := hand_built_events(ast.parse(p.read_text())))}
    assert found == {}
    # ... and the check does see one: the old store made run_finished itself.
    old = ('store.append_event(run_id, "run_finished", status="failed")\n'
           'ev = {"run_id": run_id, "seq": 1, "type": "run_queued", "ts": now}')
    assert hand_built_events(ast.parse(old)) == [1, 2]


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
               "ml.fetch", "ml.disk", "ml.formats", "ml.device", "ml.event_callback"]
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
        "from dashboard.app import create_app\n"
        "from core.settings import load_settings\n"
        "import worker.tasks, worker.celery_app, dashboard.api, dashboard.live\n"
        f"s = load_settings({{'REDIS_URL': 'redis://127.0.0.1:9/0',"
        f" 'DATABASE_URL': 'sqlite:///{tmp_path}/t.db'}})\n"
        "app = create_app(s, start_background=False)\n"
        "assert app.test_client().get('/api/runs').json['runs'] == []\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
