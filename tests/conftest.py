"""Fixtures shared by the three kinds of test, and the marker each kind gets.

- ``tests/unit``: no service started (an app of its own per test, the flaskr way; models
  trained in-process on tiny photos). ``make test-fast`` runs these.
- ``tests/stack``: the real parts as processes: redis-server, Celery workers, the web
  server, PostgreSQL, the launcher.
- ``tests/browser``: headless Chromium on the real stack (fixtures in its conftest.py).

Tests make their own small photos; none are committed. What benches share with the tests
lives in the ``testkit`` package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml.tf_env import import_tensorflow_quietly
from testkit.hostile import HOSTILE_NAME
from testkit.lab_stack import PASSCODE
from testkit.synthetic import make_flat_dataset

import_tensorflow_quietly()  # keeps TensorFlow's C++ banners out of the test log

KINDS = ("unit", "stack", "browser")



@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets its folder's kind as a marker (``-m unit`` etc. selects it), unless it
    says its own kind (a PostgreSQL case of a store test: ``testkit.postgres.STORES``)."""
    for item in items:
        folder = Path(item.path).parent.name
        if folder not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/stack "
                                    "or tests/browser")
        if not any(item.get_closest_marker(kind) for kind in KINDS):
            item.add_marker(folder)



# -- fast fixtures, the flaskr way: an app of its own for each test, nothing started --------


@pytest.fixture
def lab_settings(tmp_path):
    """Settings over a fresh SQLite store; nothing listens at the Redis URL."""
    from core.settings import load_settings

    return load_settings({
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'lab.sqlite3'}",
        "LAB_DATA_DIR": str(tmp_path / "data"),
        "LAB_MODELS_DIR": str(tmp_path / "models"),
        "LAB_STATE_DIR": str(tmp_path / "state"),
    })


@pytest.fixture
def app(lab_settings):
    """The web app without its background poller."""
    from dashboard.app import create_app

    return create_app(lab_settings, start_background=False)


@pytest.fixture
def client(app):
    return app.test_client()


class RecordingBus:
    """Collects what the runs service announces (a unit test's stand-in for Redis)."""

    def __init__(self):
        self.events: list[dict] = []
        self.queues: list[dict] = []

    def publish(self, ev: dict) -> None:
        self.events.append(ev)

    def publish_queue(self, positions: dict) -> None:
        self.queues.append(dict(positions))


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def service(lab_settings, bus):
    """A runs service over a fresh store; its queue only counts the tasks sent."""
    from core.run_service import RunService
    from core.store import RunStore

    sent: list[int] = []
    svc = RunService(RunStore(lab_settings.database_url), models_dir=lab_settings.models_dir,
                     bus=bus, enqueue=lambda: sent.append(1), lost_after_s=60)
    svc.tasks_sent = sent
    return svc


# -- PostgreSQL: a server of the tests' own (testkit/postgres.py) ---------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session, on 127.0.0.1 only; ``.url`` is its database "lab".

    Skips (saying how to install it) when PostgreSQL or psycopg is missing; ``make test``
    installs both.
    """
    from testkit.postgres import PostgresServer, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty PostgreSQL database of this test's own (dropped after it)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


# -- the real stack and its data ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """24 cats and 24 dogs at 40 px in the Kaggle layout."""
    return make_flat_dataset(tmp_path_factory.mktemp("tiny") / "train", per_class=24)


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> Path:
    """A fast_cnn trained for 3 epochs on the tiny dataset: its folder holds model + card."""
    from ml.train import train

    out = tmp_path_factory.mktemp("tiny_model")
    train({"epochs": 3, "image_size": 32, "batch_size": 8, "learning_rate": 0.01,
           "augment": False}, tiny_dataset, out)
    return out


@pytest.fixture(scope="session")
def lab(tiny_dataset, tmp_path_factory):
    """The real stack (redis-server, Celery worker, web server) over the tiny dataset."""
    from testkit.lab_stack import LabStack

    stack = LabStack(tmp_path_factory.mktemp("lab"), tiny_dataset).start()
    yield stack
    stack.stop()




@pytest.fixture(scope="session")
def hostile_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """The tiny dataset plus a photo and a non-photo whose names are markup."""
    from testkit.synthetic import photo_bytes

    folder = tmp_path_factory.mktemp("hostile") / "train"
    shutil.copytree(tiny_dataset, folder)
    (folder / f"cat.{HOSTILE_NAME}.jpg").write_bytes(photo_bytes("cat", seed=99))
    (folder / f"dog.{HOSTILE_NAME}.2.jpg").write_bytes(b"<script>window.__xss=2</script>")
    return folder


@pytest.fixture(scope="session")
def locked_lab(hostile_dataset, tmp_path_factory):
    """A second real stack with LAB_PASSCODE set and at most 2 active runs per address."""
    from testkit.lab_stack import LabStack

    stack = LabStack(tmp_path_factory.mktemp("locked"), hostile_dataset,
                     {"LAB_PASSCODE": PASSCODE, "LAB_MAX_QUEUED_PER_CLIENT": "2"}).start()
    yield stack
    stack.stop()


def _idle(stack):
    """Every part up, nothing queued or running, before and after the test."""
    for part, start in ((stack.redis, stack.start_redis), (stack.worker, stack.start_worker),
                        (stack.web, stack.start_web)):
        if part is None or not part.alive():
            start()
    stack.cancel_active()
    yield stack
    stack.cancel_active()


@pytest.fixture
def idle_locked_lab(locked_lab):
    yield from _idle(locked_lab)


@pytest.fixture
def idle_lab(lab):
    """The stack with nothing queued or running before and after the test."""
    yield from _idle(lab)


# -- one class for the class tests (tests/stack and tests/browser share it) ---------------


@pytest.fixture(scope="session")
def class_lab(tiny_dataset, tmp_path_factory):
    """What make run starts for a class: a passcode for the instructor, open launching, at
    most 2 runs a student, no cap per address; two workers, so two runs train at once."""
    from testkit.lab_stack import LabStack

    lab = LabStack(tmp_path_factory.mktemp("class"), tiny_dataset, {
        "LAB_PASSCODE": PASSCODE, "LAB_LOCK_LAUNCH": "0", "LAB_MAX_RUNS_PER_STUDENT": "2",
        "LAB_MAX_QUEUED": "60", "LAB_MAX_QUEUED_PER_ADDRESS": "0"}, workers=2).start()
    yield lab
    lab.stop()


def _new_lesson(lab) -> None:
    """The class lab as a new lesson finds it: the queue running, launching open, nothing
    queued or running, and every earlier run archived (off the board and the Runs tab)."""
    lab.post("/api/queue/resume")
    lab.post("/api/launching/unlock")
    lab.cancel_active()
    for run in lab.get("/api/runs").json()["runs"]:
        lab.post(f"/api/runs/{run['id']}/archive")


@pytest.fixture
def room(class_lab):
    """The class lab, a new lesson before and after the test (see ``_new_lesson``)."""
    _new_lesson(class_lab)
    yield class_lab
    _new_lesson(class_lab)

